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
//!
//! A connection waits at most `pool_idle_seconds` (default 4 s, below the 5 s of Node's
//! `keepAliveTimeout` and common load balancers), and less when its last response said
//! how long the server keeps it (`Keep-Alive: timeout=N`): N − 1 s, so that the host
//! drops it first ([`idle_limit`]). A server that drops one sooner anyway makes the next
//! request on it fail before any response byte; see [`retry`](super::retry).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// A connection of the pool: its request half, and the bytes read on it so far (to tell
/// a failure before any response byte from one after).
pub(super) struct Connection {
    pub sender: SendRequest<WasiBody>,
    pub received: Arc<AtomicU64>,
}

impl Connection {
    /// The bytes read on the connection so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

struct Idle {
    since: Instant,
    /// How long this one may wait: the pool's `idle_for`, or less (`Keep-Alive`).
    idle_for: Duration,
    connection: Connection,
}

impl Idle {
    fn expired(&self) -> bool {
        self.since.elapsed() >= self.idle_for
    }
}

/// The most a connection whose response carried `Keep-Alive: timeout=N` waits, when the
/// pool keeps connections `configured`: one second less than the server keeps it, so
/// that the host closes it first. `None`: not kept (N ≤ 1 s, or reuse off).
pub(super) fn idle_limit(configured: Duration, headers: &http::HeaderMap) -> Option<Duration> {
    let limit = match keep_alive_timeout(headers) {
        Some(seconds) if seconds <= 1 => return None,
        Some(seconds) => configured.min(Duration::from_secs(seconds - 1)),
        None => configured,
    };
    (!limit.is_zero()).then_some(limit)
}

/// The `timeout` parameter of a response's `Keep-Alive` header (RFC 2068 §19.7.1, as
/// Node, Apache and nginx send it: `timeout=5, max=1000`), in seconds; the smallest when
/// several are given. `None` when absent or not a number.
pub(super) fn keep_alive_timeout(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get_all("keep-alive")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split([',', ';']))
        .filter_map(|parameter| {
            let (name, value) = parameter.split_once('=')?;
            if !name.trim().eq_ignore_ascii_case("timeout") {
                return None;
            }
            value.trim().trim_matches('"').parse::<u64>().ok()
        })
        .min()
}

#[derive(Default)]
struct Kept {
    idle: HashMap<PoolKey, Vec<Idle>>,
    /// Connections in `idle`, over every key.
    total: usize,
    /// A sweeper task is running (it stops when nothing is kept).
    sweeping: bool,
    /// How often the running sweeper looks: a quarter of the shortest `idle_for` kept.
    every: Duration,
}

/// One activity's idle connections.
pub(super) struct Pool {
    idle_for: Duration,
    max_per_host: usize,
    max_idle: usize,
    kept: Mutex<Kept>,
    /// Wakes the sweeper when a connection that may wait less than it sleeps is kept.
    wake: Arc<tokio::sync::Notify>,
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
            wake: Arc::default(),
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

    /// How long connections are kept, at most.
    pub fn idle_for(&self) -> Duration {
        self.idle_for
    }

    /// An idle connection for `key` that is ready for a request, if one is kept. The
    /// ones the server closed, or idle too long, are dropped on the way.
    pub async fn take(&self, key: &PoolKey) -> Option<Connection> {
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
            if idle.connection.sender.is_closed() || idle.expired() {
                continue;
            }
            let mut connection = idle.connection;
            // Usually ready already; otherwise hyper is still reading the last
            // response's end, which takes a moment.
            if connection.sender.is_ready() {
                return Some(connection);
            }
            if let Ok(Ok(())) = tokio::time::timeout(READY_WITHIN, connection.sender.ready()).await
            {
                return Some(connection);
            }
        }
    }

    /// Keeps `connection`, whose last response was read to its end, for `idle_for` (at
    /// most the pool's); closes it when reuse is off, the key has `max_per_host`
    /// already, the pool `max_idle`, or it is not reusable.
    pub fn put(self: &Arc<Self>, key: PoolKey, connection: Connection, idle_for: Duration) {
        let idle_for = idle_for.min(self.idle_for);
        if idle_for.is_zero() || connection.sender.is_closed() {
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
                idle_for,
                connection,
            });
            kept.total += 1;
            let every = sweep_every(idle_for);
            if !std::mem::replace(&mut kept.sweeping, true) {
                kept.every = every;
                true
            } else {
                if every < kept.every {
                    kept.every = every;
                    self.wake.notify_one();
                }
                false
            }
        };
        if start_sweeper {
            tokio::spawn(sweep(Arc::downgrade(self), self.wake.clone()));
        }
    }
}

/// Closes the connections idle for their `idle_for` (dropping the last sender ends
/// one), looking every quarter of the shortest kept; stops when nothing is kept, and
/// `put` starts it again. One task per pool, not one per connection.
async fn sweep(pool: Weak<Pool>, wake: Arc<tokio::sync::Notify>) {
    loop {
        let every = match pool.upgrade() {
            Some(pool) => pool.kept().every,
            None => return,
        };
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = wake.notified() => continue,
        }
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let mut kept = pool.kept();
        kept.idle.retain(|_, list| {
            list.retain(|entry| !entry.expired());
            !list.is_empty()
        });
        kept.total = kept.idle.values().map(Vec::len).sum();
        let Some(shortest) = kept.idle.values().flatten().map(|e| e.idle_for).min() else {
            kept.sweeping = false;
            return;
        };
        kept.every = sweep_every(shortest);
    }
}

/// How often the sweeper looks for connections that wait `idle_for`.
fn sweep_every(idle_for: Duration) -> Duration {
    (idle_for / 4).max(Duration::from_millis(50))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection to `address`, as the pool keeps them.
    async fn connection(address: std::net::SocketAddr) -> Connection {
        let stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let (sender, connection) =
            hyper::client::conn::http1::handshake(wasmtime_wasi_http::io::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        Connection {
            sender,
            received: Arc::default(),
        }
    }

    fn keep_alive(value: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert("keep-alive", value.parse().unwrap());
        headers
    }

    #[test]
    fn the_keep_alive_timeout_is_read_from_the_header() {
        assert_eq!(keep_alive_timeout(&keep_alive("timeout=5")), Some(5));
        assert_eq!(
            keep_alive_timeout(&keep_alive("timeout=5, max=1000")),
            Some(5)
        );
        assert_eq!(
            keep_alive_timeout(&keep_alive("max=100,Timeout = 15")),
            Some(15)
        );
        assert_eq!(keep_alive_timeout(&keep_alive("timeout=\"7\"")), Some(7));
        assert_eq!(keep_alive_timeout(&keep_alive("max=100")), None);
        assert_eq!(keep_alive_timeout(&keep_alive("timeout=soon")), None);
        assert_eq!(keep_alive_timeout(&keep_alive("timeout=-1")), None);
        assert_eq!(keep_alive_timeout(&http::HeaderMap::new()), None);
        let mut two = keep_alive("timeout=10");
        two.append("keep-alive", "timeout=3".parse().unwrap());
        assert_eq!(keep_alive_timeout(&two), Some(3));
    }

    #[test]
    fn a_connection_waits_less_than_the_server_keeps_it() {
        let configured = Duration::from_secs(4);
        let none = http::HeaderMap::new();
        assert_eq!(idle_limit(configured, &none), Some(configured));
        // Node's default (5 s): 4 s, the configured anyway.
        assert_eq!(
            idle_limit(configured, &keep_alive("timeout=5")),
            Some(Duration::from_secs(4))
        );
        assert_eq!(
            idle_limit(configured, &keep_alive("timeout=3")),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            idle_limit(Duration::from_secs(30), &keep_alive("timeout=60")),
            Some(Duration::from_secs(30))
        );
        // A second or less: not kept at all.
        assert_eq!(idle_limit(configured, &keep_alive("timeout=1")), None);
        assert_eq!(idle_limit(configured, &keep_alive("timeout=0")), None);
        // Reuse off stays off.
        assert_eq!(idle_limit(Duration::ZERO, &none), None);
    }

    /// A server that accepts connections and holds them, never answering: its address.
    async fn holding_server() -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        address
    }

    /// A connection kept less than the pool's `idle_for` (its server's `Keep-Alive`) is
    /// not handed out past its own limit, and the sweeper closes it then.
    #[tokio::test]
    async fn a_shorter_keep_alive_is_kept_per_connection() {
        let address = holding_server().await;
        let pool = Arc::new(Pool::new(Duration::from_secs(30), 8, 8));
        let key = PoolKey {
            scheme: Scheme::Http,
            host: "127.0.0.1".into(),
            port: address.port(),
            reach: Reach::Literal,
        };
        pool.put(
            key.clone(),
            connection(address).await,
            Duration::from_millis(200),
        );
        pool.put(
            key.clone(),
            connection(address).await,
            Duration::from_secs(60),
        );
        assert_eq!(pool.idle(), 2);
        tokio::time::sleep(Duration::from_millis(400)).await;
        // The short one is gone (swept); the other waits the pool's 30 s, not 60.
        assert_eq!(pool.idle(), 1);
        let kept = pool.kept();
        let left = &kept.idle[&key][0];
        assert_eq!(left.idle_for, Duration::from_secs(30));
    }

    /// A guest can name as many hosts as it likes (S3's virtual-hosted names, `*.`
    /// entries): the activity's idle connections are bounded in all, not only per name.
    #[tokio::test]
    async fn idle_connections_are_bounded_over_all_host_names() {
        let address = holding_server().await;
        let pool = Arc::new(Pool::new(Duration::from_secs(30), 8, 4));
        for n in 0..10 {
            let key = PoolKey {
                scheme: Scheme::Http,
                host: format!("bucket{n}.s3.us-east-1.amazonaws.com"),
                port: address.port(),
                reach: Reach::Public,
            };
            pool.put(key, connection(address).await, Duration::from_secs(30));
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
