//! The host's descriptors for guests' connections, shared by every activity.
//!
//! Each connection a guest's request opens is a file descriptor of the host's, the same
//! kind its polls, answers, outbox and admin server need. Per-task and per-activity
//! bounds (`max_concurrent_requests`, `pool_max_idle`) keep one task in check; this keeps
//! all of them together below the process's limit, with a reserve the guests never
//! reach: when it is spent, a guest's new connection fails with
//! `connection-limit-reached`, never the host's own calls with EMFILE.
//!
//! Name lookups are bounded the same way. `getaddrinfo` blocks a thread of the runtime's
//! blocking pool (which the outbox and the folder stores use too) and a timeout does not
//! cancel it: a guest naming hosts whose DNS never answers would tie up one thread per
//! request. Guests' lookups run at most [`MAX_LOOKUPS`] at a time over the host; a
//! lookup's place is held by its thread until `getaddrinfo` returns, timed out or not.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The least the host keeps for itself, whatever the limit.
const MIN_RESERVE: usize = 256;
/// Guests' name lookups in progress at once, over the host.
pub const MAX_LOOKUPS: usize = 16;

/// Connections guests may hold open at once, over the whole host; clones share them.
#[derive(Debug, Clone)]
pub struct GuestSockets {
    permits: Arc<Semaphore>,
    limit: usize,
    lookups: Arc<Semaphore>,
}

impl GuestSockets {
    /// At most `limit` guest connections at once.
    pub fn new(limit: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            lookups: Arc::new(Semaphore::new(MAX_LOOKUPS)),
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

    /// A place for one more connection, held until the connection closes; `None` when
    /// guests hold all of theirs.
    pub(super) fn take(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    /// Resolves `host` on a blocking thread once one of the guests' lookup places is
    /// free; the place stays taken until `getaddrinfo` returns, even when the caller
    /// stops waiting.
    pub(super) async fn lookup(
        &self,
        host: &str,
        port: u16,
    ) -> std::io::Result<Vec<std::net::SocketAddr>> {
        let place = self
            .lookups
            .clone()
            .acquire_owned()
            .await
            .map_err(std::io::Error::other)?;
        let host = host.to_owned();
        tokio::task::spawn_blocking(move || {
            let _place = place;
            std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port)).map(Iterator::collect)
        })
        .await
        .map_err(std::io::Error::other)?
    }
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

    /// A lookup the caller gave up on keeps its place until `getaddrinfo` returns, so
    /// guests never hold more than [`MAX_LOOKUPS`] blocking threads.
    #[tokio::test]
    async fn lookups_are_bounded_and_resolve() {
        let sockets = GuestSockets::new(1);
        let found = sockets.lookup("localhost", 80).await.unwrap();
        assert!(found.iter().all(|a| a.port() == 80) && !found.is_empty());
        let held: Vec<_> = (0..MAX_LOOKUPS)
            .map(|_| sockets.lookups.clone().try_acquire_owned().unwrap())
            .collect();
        let waiting = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            sockets.lookup("localhost", 80),
        )
        .await;
        assert!(waiting.is_err(), "no place: the lookup waits");
        drop(held);
        assert!(sockets.lookup("localhost", 80).await.is_ok());
    }
}
