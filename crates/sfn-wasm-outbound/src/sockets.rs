//! The host's descriptors for guests' connections, shared by every activity.
//!
//! Each connection a guest's request opens is a file descriptor of the host's, the same
//! kind its polls, answers, outbox and admin server need. Per-task and per-activity
//! bounds (`max_concurrent_requests`, `pool_max_idle`) keep one task in check; this keeps
//! all of them together below the process's limit, with a reserve the guests never
//! reach: when it is spent, a guest's new connection fails with
//! `connection-limit-reached`, never the host's own calls with EMFILE.
//!
//! Guests' name lookups go through an async resolver (hickory, with the system's
//! `/etc/resolv.conf` and hosts file), not `getaddrinfo`: that blocks a thread of the
//! runtime's blocking pool (which the outbox and the folder stores use too) and a
//! timeout does not cancel it, so a guest naming hosts whose DNS never answers would tie
//! up one thread per request. Here a lookup that times out is a dropped future.

use std::sync::{Arc, OnceLock};

use hickory_resolver::TokioResolver;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The least the host keeps for itself, whatever the limit.
const MIN_RESERVE: usize = 256;

/// Connections guests may hold open at once, over the whole host, and, for a host that
/// serves several activities, per activity (half the host's share: one activity's
/// guests cannot take the connections of every other's); clones share them.
#[derive(Debug, Clone)]
pub struct GuestSockets {
    permits: Arc<Semaphore>,
    limit: usize,
    /// This activity's own bound, when the host serves more than one.
    activity: Option<(Arc<Semaphore>, usize)>,
    /// Made on the first lookup (it reads the system's DNS configuration).
    resolver: Arc<OnceLock<Result<TokioResolver, String>>>,
}

impl GuestSockets {
    /// At most `limit` guest connections at once.
    pub fn new(limit: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            activity: None,
            resolver: Arc::default(),
        }
    }

    /// The share of one of `activities` activities: the host's connections, and at most
    /// half of them for this activity when there are several.
    pub fn for_activity(&self, activities: usize) -> Self {
        let share = (self.limit / 2).max(1);
        Self {
            activity: (activities > 1).then(|| (Arc::new(Semaphore::new(share)), share)),
            ..self.clone()
        }
    }

    /// Half of the process's descriptor limit (`RLIMIT_NOFILE`'s soft value, which
    /// `serve` raises to the hard one at start), leaving the rest, and at least
    /// 256, to the host's own calls.
    pub fn for_process() -> Self {
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(1024);
        Self::new(guest_share(soft))
    }

    /// The most guest connections open at once.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Guest connections open now.
    pub fn in_use(&self) -> usize {
        self.limit - self.permits.available_permits()
    }

    /// Whether every guest connection is in use: a guest's next one is refused.
    pub fn exhausted(&self) -> bool {
        self.permits.available_permits() == 0
    }

    /// The most connections this activity's guests may hold (the host's share, or half
    /// of it on a host of several activities).
    pub fn activity_limit(&self) -> usize {
        self.activity
            .as_ref()
            .map_or(self.limit, |(_, share)| *share)
    }

    /// A place for one more connection, held until the connection closes (drop it
    /// then); `None` when this activity's guests, or all guests, hold all of theirs.
    pub fn take(&self) -> Option<SocketPermit> {
        let activity = match &self.activity {
            Some((permits, _)) => Some(permits.clone().try_acquire_owned().ok()?),
            None => None,
        };
        let host = self.permits.clone().try_acquire_owned().ok()?;
        Some(SocketPermit {
            _activity: activity,
            _host: host,
        })
    }

    /// The addresses of `host` (a DNS name), with `port`. Dropping the future (a
    /// connect timeout) ends the lookup; no thread waits on.
    ///
    /// # Errors
    /// The resolver's message: no such name, no answer, or no DNS configuration.
    pub(super) async fn lookup(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Vec<std::net::SocketAddr>, String> {
        let resolver = self
            .resolver
            .get_or_init(|| {
                TokioResolver::builder_tokio()
                    .and_then(|mut builder| {
                        // One query at a time per lookup: each is a socket the guest's
                        // connection place (taken before the lookup) stands for.
                        builder.options_mut().num_concurrent_reqs = 1;
                        builder.build()
                    })
                    .map_err(|err| format!("no DNS configuration: {err}"))
            })
            .as_ref()
            .map_err(Clone::clone)?;
        let found = resolver
            .lookup_ip(host)
            .await
            .map_err(|err| err.to_string())?;
        Ok(found
            .iter()
            .map(|ip| std::net::SocketAddr::new(ip, port))
            .collect())
    }
}

/// One guest connection's place, in its activity's share and the host's.
#[derive(Debug)]
pub struct SocketPermit {
    _activity: Option<OwnedSemaphorePermit>,
    _host: OwnedSemaphorePermit,
}

/// Guests' share of `soft` descriptors: half, and never the host's last 256.
fn guest_share(soft: usize) -> usize {
    (soft / 2).min(soft.saturating_sub(MIN_RESERVE)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guests_get_half_and_the_host_keeps_a_reserve() {
        assert_eq!(guest_share(1024), 512);
        assert_eq!(guest_share(65_536), 32_768);
        assert_eq!(guest_share(300), 44);
        assert_eq!(guest_share(100), 1);
        let sockets = GuestSockets::new(2);
        let a = sockets.take().unwrap();
        let _b = sockets.take().unwrap();
        assert!(sockets.exhausted());
        assert!(sockets.take().is_none());
        drop(a);
        assert_eq!(sockets.in_use(), 1);
        assert!(sockets.take().is_some());
    }

    /// On a host of several activities, one activity's guests take at most half the
    /// host's share: the others keep theirs.
    #[test]
    fn an_activity_takes_at_most_half_of_a_shared_host() {
        let host = GuestSockets::new(10);
        let (hostile, polite) = (host.for_activity(2), host.for_activity(2));
        let held: Vec<_> = std::iter::from_fn(|| hostile.take()).take(20).collect();
        assert_eq!((held.len(), hostile.activity_limit()), (5, 5));
        assert!(polite.take().is_some());
        assert!(!host.exhausted());
        let alone = host.for_activity(1);
        assert_eq!(alone.activity_limit(), 10);
    }

    /// Names resolve without a thread of the blocking pool (the hosts file included).
    #[tokio::test]
    async fn lookups_resolve_the_hosts_file() {
        let sockets = GuestSockets::new(1);
        let found = sockets.lookup("localhost", 80).await.unwrap();
        assert!(!found.is_empty(), "{found:?}");
        assert!(
            found.iter().all(|a| a.port() == 80 && a.ip().is_loopback()),
            "{found:?}"
        );
    }
}
