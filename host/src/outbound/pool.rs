//! An activity's idle outbound connections, kept for its next request to the same host.
//!
//! Every request used to open a new TCP connection and, for https, a full TLS
//! handshake. A [`Pool`] belongs to one activity (activities' grants differ, so their
//! connections are never shared) and keeps HTTP/1.1 connections whose last response was
//! read to its end, keyed by what the allow-list matched: scheme, host, port, and whether
//! the entry named the host literally. A connection is checked (DNS, then the address
//! rules) when it is made; reusing it resolves nothing, so a name is looked up no more
//! often than before. One request at a time per connection: a guest never sees another
//! task's bytes. The idle connections of an activity are bounded in all, across host
//! names (`pool_max_idle`), not only per name: S3's virtual-hosted names and `*.`
//! entries give a guest as many names as it likes, and each kept socket is a
//! descriptor of the host's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use hyper::client::conn::http1::SendRequest;
use wasmtime_wasi_http::WasiBody;

use super::address::Reach;
use super::allow::Scheme;

/// How long a pooled connection may take to show it is ready again (hyper marks it so
/// once it has read the previous response's end); longer, and a new one is opened.
const READY_WITHIN: Duration = Duration::from_millis(100);

/// What a pooled connection was opened for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct PoolKey {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    pub reach: Reach,
}

struct Idle {
    since: Instant,
    sender: SendRequest<WasiBody>,
}

#[derive(Default)]
struct Kept {
    idle: HashMap<PoolKey, Vec<Idle>>,
    /// Connections in `idle`, over every key.
    total: usize,
    /// A sweeper task is running (it stops when nothing is kept).
    sweeping: bool,
}

/// One activity's idle connections.
pub(super) struct Pool {
    idle_for: Duration,
    max_per_host: usize,
    max_idle: usize,
    kept: Mutex<Kept>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("idle_for", &self.idle_for)
            .field("max_per_host", &self.max_per_host)
            .field("max_idle", &self.max_idle)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool keeping connections idle up to `idle_for` (zero: none kept), at most
    /// `max_per_host` per key and `max_idle` in all.
    pub fn new(idle_for: Duration, max_per_host: u32, max_idle: u32) -> Self {
        Self {
            idle_for,
            max_per_host: usize::try_from(max_per_host).unwrap_or(usize::MAX),
            max_idle: usize::try_from(max_idle).unwrap_or(usize::MAX),
            kept: Mutex::new(Kept::default()),
        }
    }

    /// The connections kept idle now, over every host.
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.kept().total
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An idle connection for `key` that is ready for a request, if one is kept. The
    /// ones the server closed, or idle too long, are dropped on the way.
    pub async fn take(&self, key: &PoolKey) -> Option<SendRequest<WasiBody>> {
        loop {
            let idle = {
                let mut kept = self.kept();
                let list = kept.idle.get_mut(key)?;
                let taken = list.pop();
                if list.is_empty() {
                    kept.idle.remove(key);
                }
                let taken = taken?;
                kept.total -= 1;
                taken
            };
            let mut sender = idle.sender;
            if sender.is_closed() || idle.since.elapsed() >= self.idle_for {
                continue;
            }
            // Usually ready already; otherwise hyper is still reading the last
            // response's end, which takes a moment.
            if sender.is_ready() {
                return Some(sender);
            }
            if let Ok(Ok(())) = tokio::time::timeout(READY_WITHIN, sender.ready()).await {
                return Some(sender);
            }
        }
    }

    /// Keeps `sender`, whose last response was read to its end, for `idle_for`; closes
    /// it when reuse is off, the key has `max_per_host` already, the pool `max_idle`, or
    /// it is not reusable.
    pub fn put(self: &Arc<Self>, key: PoolKey, sender: SendRequest<WasiBody>) {
        if self.idle_for.is_zero() || sender.is_closed() {
            return;
        }
        let start_sweeper = {
            let mut kept = self.kept();
            if kept.total >= self.max_idle {
                return;
            }
            let list = kept.idle.entry(key).or_default();
            if list.len() >= self.max_per_host {
                return;
            }
            list.push(Idle {
                since: Instant::now(),
                sender,
            });
            kept.total += 1;
            !std::mem::replace(&mut kept.sweeping, true)
        };
        if start_sweeper {
            tokio::spawn(sweep(Arc::downgrade(self), self.idle_for));
        }
    }
}

/// Closes the connections idle for `idle_for` (dropping the last sender ends one),
/// looking every quarter of it; stops when nothing is kept, and `put` starts it again.
/// One task per pool, not one per connection.
async fn sweep(pool: Weak<Pool>, idle_for: Duration) {
    let every = (idle_for / 4).max(Duration::from_millis(50));
    loop {
        tokio::time::sleep(every).await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let mut kept = pool.kept();
        kept.idle.retain(|_, list| {
            list.retain(|entry| entry.since.elapsed() < idle_for);
            !list.is_empty()
        });
        kept.total = kept.idle.values().map(Vec::len).sum();
        if kept.idle.is_empty() {
            kept.sweeping = false;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection to `address`, as the pool keeps them.
    async fn connection(address: std::net::SocketAddr) -> SendRequest<WasiBody> {
        let stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let (sender, connection) =
            hyper::client::conn::http1::handshake(wasmtime_wasi_http::io::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        sender
    }

    /// A guest can name as many hosts as it likes (S3's virtual-hosted names, `*.`
    /// entries): the activity's idle connections are bounded in all, not only per name.
    #[tokio::test]
    async fn idle_connections_are_bounded_over_all_host_names() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let pool = Arc::new(Pool::new(Duration::from_secs(30), 8, 4));
        for n in 0..10 {
            let key = PoolKey {
                scheme: Scheme::Http,
                host: format!("bucket{n}.s3.us-east-1.amazonaws.com"),
                port: address.port(),
                reach: Reach::Public,
            };
            pool.put(key, connection(address).await);
        }
        assert_eq!(pool.idle(), 4);
        // Taken ones leave room for others.
        let first = PoolKey {
            scheme: Scheme::Http,
            host: "bucket0.s3.us-east-1.amazonaws.com".into(),
            port: address.port(),
            reach: Reach::Public,
        };
        assert!(pool.take(&first).await.is_some());
        assert_eq!(pool.idle(), 3);
    }
}
