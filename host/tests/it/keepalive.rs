//! Issue 35, class 6: servers that drop a kept connection before the pool does. A real
//! guest (`tests/guests/pushy`, `paced`) makes requests 1.2 s apart to a server that
//! drops a connection idle for 1 s, with the pool keeping them 30 s: an idempotent
//! request that meets a dropped connection is sent again on a new one (the guest sees no
//! failure), a POST without `Idempotency-Key` never is; a server that says how long it
//! keeps a connection (`Keep-Alive: timeout=N`) has it dropped by the host first.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use sfn_wasm_host::delivery::{Delivery, DeliveryOptions, LocalTransport, Unobserved};
use sfn_wasm_host::engine::{
    Capabilities, EngineConfig, Handler, TaskControl, TaskLimits, TaskRequest, WasmEngine,
};
use sfn_wasm_host::grants::{Grants, GrantsConfig};
use sfn_wasm_host::outbound::{AllowedHost, OutboundLimits};
use sfn_wasm_host::outcome::Answer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::guests::guest;
use crate::support::polyglot;

/// How the server drops a connection idle for [`SERVER_IDLE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dropping {
    /// Closes it (a FIN), as Node's `keepAliveTimeout` does.
    Close,
    /// Forgets it without a word, as a NAT or a load balancer does: the next request's
    /// bytes are answered with a reset and nothing else.
    Silently,
}

/// How long the server keeps an idle connection, unless told otherwise.
const SERVER_IDLE: Duration = Duration::from_secs(1);

/// An HTTP/1.1 keep-alive server on loopback that answers every request `ok` and drops a
/// connection once it has been idle a while ([`SERVER_IDLE`]). Counts the connections it accepted,
/// the requests it answered (by method) and those that arrived on a connection it had
/// dropped (never answered, never acted on).
struct Dropper {
    address: std::net::SocketAddr,
    connections: Arc<AtomicUsize>,
    answered: Arc<Mutex<Vec<String>>>,
    unheard: Arc<AtomicUsize>,
}

impl Dropper {
    /// `keep_alive`: the `Keep-Alive: timeout=N` its responses carry, if any; `idle`: how
    /// long it keeps an idle connection.
    async fn start(dropping: Dropping, idle: Duration, keep_alive: Option<u64>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(Mutex::new(Vec::new()));
        let unheard = Arc::new(AtomicUsize::new(0));
        let (accepted, methods, lost) = (connections.clone(), answered.clone(), unheard.clone());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(
                    socket,
                    dropping,
                    idle,
                    keep_alive,
                    methods.clone(),
                    lost.clone(),
                ));
            }
        });
        Self {
            address,
            connections,
            answered,
            unheard,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.address)
    }

    fn origin(&self) -> String {
        format!("http://{}", self.address)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn answered(&self, method: &str) -> usize {
        self.answered
            .lock()
            .unwrap()
            .iter()
            .filter(|m| *m == method)
            .count()
    }

    fn unheard(&self) -> usize {
        self.unheard.load(Ordering::SeqCst)
    }
}

/// One connection of a [`Dropper`].
async fn serve(
    mut socket: TcpStream,
    dropping: Dropping,
    idle: Duration,
    keep_alive: Option<u64>,
    answered: Arc<Mutex<Vec<String>>>,
    unheard: Arc<AtomicUsize>,
) {
    let mut buffered = Vec::new();
    loop {
        let head = match tokio::time::timeout(idle, read_head(&mut socket, &mut buffered)).await {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(_) if dropping == Dropping::Close => return,
            Err(_) => {
                // Forgotten: the next bytes are left unread, so that closing the socket
                // answers them with a reset.
                let mut peek = [0u8; 16];
                if matches!(socket.peek(&mut peek).await, Ok(n) if n > 0) {
                    unheard.fetch_add(1, Ordering::SeqCst);
                }
                return;
            }
        };
        let lower = head.to_ascii_lowercase();
        let length = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|n| n.trim().parse::<usize>().ok());
        if lower.contains("transfer-encoding: chunked") {
            if !read_chunked(&mut socket, &mut buffered).await {
                return;
            }
        } else if let Some(length) = length {
            if !fill(&mut socket, &mut buffered, length).await {
                return;
            }
            buffered.drain(..length);
        }
        let method = head.split_whitespace().next().unwrap_or("?").to_owned();
        answered.lock().unwrap().push(method);
        let keep_alive =
            keep_alive.map_or_else(String::new, |n| format!("keep-alive: timeout={n}\r\n"));
        let response = format!("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n{keep_alive}\r\nok");
        if socket.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Reads until `buffered` holds `n` bytes; false when the connection ends first.
async fn fill(socket: &mut TcpStream, buffered: &mut Vec<u8>, n: usize) -> bool {
    let mut buf = [0u8; 4096];
    while buffered.len() < n {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(read) => buffered.extend_from_slice(&buf[..read]),
        }
    }
    true
}

/// The next request head (through its empty line), taken from `buffered`; `None` when
/// the connection ends.
async fn read_head(socket: &mut TcpStream, buffered: &mut Vec<u8>) -> Option<String> {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = buffered.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffered[..end + 4]).into_owned();
            buffered.drain(..end + 4);
            return Some(head);
        }
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffered.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads (and discards) a chunked body; false when the connection ends first.
async fn read_chunked(socket: &mut TcpStream, buffered: &mut Vec<u8>) -> bool {
    loop {
        let line_end = loop {
            if let Some(at) = buffered.windows(2).position(|w| w == b"\r\n") {
                break at;
            }
            let want = buffered.len() + 1;
            if !fill(socket, buffered, want).await {
                return false;
            }
        };
        let size_text = String::from_utf8_lossy(&buffered[..line_end]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or(0);
        buffered.drain(..line_end + 2);
        if size == 0 {
            // No trailers: the empty line that ends the body.
            if !fill(socket, buffered, 2).await {
                return false;
            }
            buffered.drain(..2);
            return true;
        }
        if !fill(socket, buffered, size + 2).await {
            return false;
        }
        buffered.drain(..size + 2);
    }
}

/// An activity allowed `origin`, keeping idle connections 30 s: longer than the server
/// does, so that requests meet connections it dropped.
fn grants(origin: &str) -> Arc<Grants> {
    Arc::new(
        Grants::resolve(&GrantsConfig {
            allowed_outbound_hosts: vec![AllowedHost::parse(origin).unwrap()],
            outbound: OutboundLimits {
                pool_idle_seconds: 30,
                ..OutboundLimits::default()
            },
            ..GrantsConfig::default()
        })
        .unwrap(),
    )
}

/// Runs pushy with `input` under `grants`: its `results`, by name.
async fn run_pushy(grants: &Arc<Grants>, input: Value) -> Value {
    let engine = WasmEngine::new(EngineConfig {
        max_concurrent_tasks: 2,
        max_memory_bytes: 128 << 20,
        pooling: true,
        ..EngineConfig::default()
    })
    .expect("engine");
    let cache = sfn_wasm_host::load::open_cache(Some(&polyglot::cache_dir()), &engine);
    let handler = Handler::load(&engine, &guest("pushy"), cache.as_ref())
        .expect("the guest loads")
        .handler;
    let control = TaskControl::default();
    let request = TaskRequest {
        input: input.to_string(),
        activity_arn: "arn:aws:states:us-east-1:000000000000:activity:keepalive".into(),
        worker_name: "test:1".into(),
        task_id: "keepalive".into(),
        limits: TaskLimits {
            memory_bytes: 128 << 20,
            timeout: Duration::from_secs(60),
            heartbeat_every: None,
        },
        control: control.clone(),
        capabilities: Capabilities::none().with(grants.clone()),
    };
    let delivery = Delivery::new(
        Arc::new(LocalTransport),
        Arc::new(Unobserved),
        control,
        DeliveryOptions::default(),
    );
    let report = handler.run(&engine, request, delivery.clone()).await;
    delivery.settled().await;
    match delivery.state().answer() {
        Some(Answer::Success { output }) => {
            let output: Value = serde_json::from_str(output).unwrap();
            output["results"].clone()
        }
        other => panic!("expected a success, got {other:?} ({report:?})"),
    }
}

/// Twelve GETs 1.2 s apart, each but the first meeting the connection of the one before,
/// which the server dropped after 1 s: all twelve succeed, each answered once.
async fn twelve_gets_survive(dropping: Dropping) {
    let server = Dropper::start(dropping, SERVER_IDLE, None).await;
    let results = run_pushy(
        &grants(&server.origin()),
        json!({"push": "paced", "method": "GET", "count": 12, "gap_ms": 1200, "url": server.url()}),
    )
    .await;
    assert_eq!(results, json!({"status 200": 12}), "{dropping:?}");
    assert_eq!(
        server.answered("GET"),
        12,
        "{dropping:?}: each GET answered once"
    );
    assert_eq!(
        server.connections(),
        12,
        "{dropping:?}: a connection per GET"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gets_survive_a_server_that_closes_idle_connections() {
    twelve_gets_survive(Dropping::Close).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gets_survive_a_server_that_drops_idle_connections_without_a_word() {
    twelve_gets_survive(Dropping::Silently).await;
}

/// A POST without `Idempotency-Key` on a dropped connection is not sent again: the guest
/// sees the error, the server acted on it at most once (here: never, it was lost), and
/// no second connection was opened for it. With an `Idempotency-Key`, it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_is_sent_again_only_with_an_idempotency_key() {
    let server = Dropper::start(Dropping::Silently, SERVER_IDLE, None).await;
    let results = run_pushy(
        &grants(&server.origin()),
        json!({"push": "paced", "method": "POST", "count": 2, "gap_ms": 1200, "url": server.url()}),
    )
    .await;
    let failed: u64 = results
        .as_object()
        .unwrap()
        .iter()
        .filter(|(name, _)| *name != "status 200")
        .map(|(_, n)| n.as_u64().unwrap())
        .sum();
    assert_eq!(results["status 200"], 1, "{results}");
    assert_eq!(failed, 1, "the guest sees the second POST fail: {results}");
    assert!(
        results.get("HttpResponseIncomplete").is_some()
            || results.get("ConnectionTerminated").is_some(),
        "{results}"
    );
    assert_eq!(
        server.answered("POST"),
        1,
        "the lost POST was not sent again"
    );
    assert_eq!(server.unheard(), 1);
    assert_eq!(server.connections(), 1, "no new connection for it");

    let server = Dropper::start(Dropping::Silently, SERVER_IDLE, None).await;
    let results = run_pushy(
        &grants(&server.origin()),
        json!({"push": "paced", "method": "POST", "key": "order-42", "count": 2, "gap_ms": 1200, "url": server.url()}),
    )
    .await;
    assert_eq!(results, json!({"status 200": 2}));
    assert_eq!(server.answered("POST"), 2);
    assert_eq!(server.connections(), 2);
}

/// A server that says it keeps a connection 2 s (`Keep-Alive: timeout=2`), and does:
/// the host keeps it 1 s only (though the pool's own limit is 30 s), so requests 1.2 s
/// apart each open one, and none meets one the server dropped. `timeout=1`: not kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_timeout_has_the_host_drop_the_connection_first() {
    let server = Dropper::start(Dropping::Silently, Duration::from_secs(2), Some(2)).await;
    let results = run_pushy(
        &grants(&server.origin()),
        json!({"push": "paced", "method": "GET", "count": 4, "gap_ms": 1200, "url": server.url()}),
    )
    .await;
    assert_eq!(results, json!({"status 200": 4}));
    assert_eq!(server.connections(), 4, "not kept past 1 s");
    assert_eq!(server.unheard(), 0);

    // Back to back, a connection is reused; not when the server keeps it a second.
    let server = Dropper::start(Dropping::Silently, Duration::from_secs(2), Some(2)).await;
    let grants_two = grants(&server.origin());
    let results = run_pushy(
        &grants_two,
        json!({"push": "paced", "method": "GET", "count": 3, "gap_ms": 0, "url": server.url()}),
    )
    .await;
    assert_eq!(results, json!({"status 200": 3}));
    assert_eq!(server.connections(), 1, "kept while under 1 s idle");
    let server = Dropper::start(Dropping::Silently, Duration::from_secs(2), Some(1)).await;
    let results = run_pushy(
        &grants(&server.origin()),
        json!({"push": "paced", "method": "GET", "count": 3, "gap_ms": 0, "url": server.url()}),
    )
    .await;
    assert_eq!(results, json!({"status 200": 3}));
    assert_eq!(server.connections(), 3, "timeout=1: never kept");
}
