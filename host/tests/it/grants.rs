//! Capabilities: outbound HTTP (allow-list, post-DNS address checks, limits, timeouts,
//! abort), environment and preopened folders, through real guests (`examples/fetch`,
//! `tests/guests/probe`) and a real HTTP server on 127.0.0.1 started by each test.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sfn_wasm_host::delivery::{AnswerState, Delivery, DeliveryOptions, LocalTransport, Unobserved};
use sfn_wasm_host::engine::{
    Capabilities, EngineConfig, Handler, TaskControl, TaskLimits, TaskReport, TaskRequest,
    WasmEngine,
};
use sfn_wasm_host::grants::{DirGrant, EnvSource, EnvVar, Grants, GrantsConfig};
use sfn_wasm_host::outbound::{AllowedHost, OutboundLimits};
use sfn_wasm_host::outcome::{Answer, HostFailure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::emulator;
use crate::support::guests::guest;
use crate::support::polyglot;
use crate::support::served::Served;
use crate::support::tls::{https_server, tls_file};

/// A small HTTP/1.1 server (plain only: it answers a TLS handshake with a 400): `/hello`
/// answers `hello`, `/bytes/N` N bytes with a `content-length` (a HEAD, the length
/// alone), `/stream/N` N bytes
/// chunked (no length), `/slow/N` N bytes chunked 100 every 10 ms, `/stall` one chunk
/// and then nothing, `/cut/N` declares N bytes and closes after 10, `/never` never
/// answers.
struct Server {
    address: SocketAddr,
    requests: Arc<AtomicUsize>,
}

impl Server {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                        // A TLS ClientHello: answer in plain HTTP, as a plain server would.
                        if head.first() == Some(&0x16) {
                            let _ = socket.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
                            return;
                        }
                    }
                    counted.fetch_add(1, Ordering::SeqCst);
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    let number = |prefix: &str| path.strip_prefix(prefix)?.parse::<usize>().ok();
                    let response = if path == "/hello" {
                        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello"
                            .to_vec()
                    } else if let Some(n) = number("/bytes/") {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {n}\r\nconnection: close\r\n\r\n"
                        )
                        .into_bytes();
                        // A HEAD's answer declares the length and sends no body.
                        if !head.starts_with("HEAD ") {
                            r.resize(r.len() + n, b'x');
                        }
                        r
                    } else if let Some(n) = number("/stream/") {
                        let mut r = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n".to_vec();
                        for chunk in (0..n).step_by(100) {
                            let size = (n - chunk).min(100);
                            r.extend_from_slice(format!("{size:x}\r\n").as_bytes());
                            r.resize(r.len() + size, b'x');
                            r.extend_from_slice(b"\r\n");
                        }
                        r.extend_from_slice(b"0\r\n\r\n");
                        r
                    } else if let Some(n) = number("/slow/") {
                        // Chunked, 100 bytes every 10 ms.
                        let head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
                        if socket.write_all(head).await.is_err() {
                            return;
                        }
                        for _ in (0..n).step_by(100) {
                            let chunk = format!("64\r\n{}\r\n", "x".repeat(100));
                            if socket.write_all(chunk.as_bytes()).await.is_err() {
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        b"0\r\n\r\n".to_vec()
                    } else if path == "/stall" {
                        // One chunk, then nothing.
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n64\r\n{}\r\n",
                            "x".repeat(100)
                        );
                        let _ = socket.write_all(head.as_bytes()).await;
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return;
                    } else if let Some(n) = number("/cut/") {
                        // Declares N bytes, sends 10 and closes.
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {n}\r\nconnection: close\r\n\r\n{}",
                            "x".repeat(10)
                        )
                        .into_bytes()
                    } else if path == "/never" {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return;
                    } else {
                        b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                            .to_vec()
                    };
                    let _ = socket.write_all(&response).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Self { address, requests }
    }

    /// `http://127.0.0.1:PORT`, the allow-list entry for this server.
    fn origin(&self) -> String {
        format!("http://{}", self.address)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn engine() -> WasmEngine {
    WasmEngine::new(EngineConfig {
        max_concurrent_tasks: 4,
        // The JavaScript and Python components need more than the Rust ones.
        max_memory_bytes: 256 << 20,
        pooling: true,
        ..EngineConfig::default()
    })
    .expect("engine")
}

fn allow(entries: &[&str]) -> GrantsConfig {
    GrantsConfig {
        allowed_outbound_hosts: entries
            .iter()
            .map(|e| AllowedHost::parse(e).unwrap())
            .collect(),
        ..GrantsConfig::default()
    }
}

struct Ran {
    report: TaskReport,
    state: AnswerState,
    elapsed: Duration,
}

impl Ran {
    fn output(&self) -> Value {
        match self.state.answer() {
            Some(Answer::Success { output }) => serde_json::from_str(output).unwrap(),
            other => panic!("expected a success, got {other:?} ({:?})", self.report),
        }
    }

    /// The failure's name and cause.
    fn failure(&self) -> (String, String) {
        match self.state.answer() {
            Some(Answer::Failure { error, cause }) => (error.clone(), cause.clone()),
            other => panic!("expected a failure, got {other:?} ({:?})", self.report),
        }
    }
}

async fn run(handler: &str, grants: &GrantsConfig, input: Value) -> Ran {
    run_controlled(handler, grants, input, TaskControl::default()).await
}

async fn run_controlled(
    handler: &str,
    grants: &GrantsConfig,
    input: Value,
    control: TaskControl,
) -> Ran {
    run_file(&guest(handler), grants, input, control).await
}

/// Runs the component at `path`, compiled once into the tests' shared cache (the
/// JavaScript and Python ones take seconds to compile).
async fn run_file(path: &Path, grants: &GrantsConfig, input: Value, control: TaskControl) -> Ran {
    let grants = Arc::new(Grants::resolve(grants).expect("grants resolve"));
    run_with(path, &grants, input, control).await
}

/// Runs the component at `path` with `grants` already resolved (an activity's
/// connection pool lives in them, so that tasks run this way share it).
async fn run_with(path: &Path, grants: &Arc<Grants>, input: Value, control: TaskControl) -> Ran {
    let engine = engine();
    let cache = sfn_wasm_host::load::open_cache(Some(&polyglot::cache_dir()), &engine);
    let handler = Handler::load(&engine, path, cache.as_ref())
        .expect("the guest loads")
        .handler;
    let request = TaskRequest {
        input: input.to_string(),
        activity_arn: "arn:aws:states:us-east-1:000000000000:activity:grants".into(),
        worker_name: "test:1".into(),
        task_id: "grants".into(),
        limits: TaskLimits {
            memory_bytes: 256 << 20,
            timeout: Duration::from_secs(30),
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
    let started = Instant::now();
    let report = handler.run(&engine, request, delivery.clone()).await;
    let elapsed = started.elapsed();
    delivery.settled().await;
    Ran {
        report,
        state: delivery.state(),
        elapsed,
    }
}

#[tokio::test]
async fn an_allowed_host_answers_and_others_are_denied() {
    let server = Server::start().await;
    let url = server.url("/hello");

    let ran = run("fetch", &allow(&[&server.origin()]), json!({"url": url})).await;
    assert_eq!(ran.output(), json!({"status": 200, "body": "hello"}));

    // Not listed: another port of the same address, and no grants at all. The guest
    // sees wasi:http's HTTP-request-denied and answers with it; nothing is sent.
    let before = server.requests();
    let other_port = format!("http://127.0.0.1:{}", server.address.port() + 1);
    for grants in [allow(&[&other_port]), GrantsConfig::default()] {
        let ran = run("fetch", &grants, json!({"url": url})).await;
        assert_eq!(
            ran.failure().0,
            "HTTP-request-denied",
            "{:?}",
            ran.failure()
        );
        assert_eq!(ran.report.error, None, "the guest answered by itself");
    }
    assert_eq!(
        server.requests(),
        before,
        "a denied request never leaves the host"
    );

    // https goes through TLS (Mozilla roots): a plain-HTTP server fails the handshake,
    // an error for the guest, not for the host.
    let https = format!("https://{}", server.address);
    let ran = run(
        "fetch",
        &allow(&[&https]),
        json!({"url": format!("{https}/hello")}),
    )
    .await;
    assert_eq!(ran.failure().0, "TLS-protocol-error", "{:?}", ran.failure());
}

/// A name other than `localhost` that resolves to a loopback address on this machine:
/// from `/etc/hosts`, or the host name.
fn loopback_name() -> String {
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let mut names: Vec<String> = hosts
        .lines()
        .filter_map(|line| {
            let mut words = line.split('#').next()?.split_whitespace();
            let ip: IpAddr = words.next()?.parse().ok()?;
            ip.is_loopback()
                .then(|| words.map(str::to_owned).collect::<Vec<_>>())
        })
        .flatten()
        .collect();
    names.push(gethostname());
    names
        .into_iter()
        .filter(|name| name != "localhost" && !name.is_empty())
        .find(|name| {
            (name.as_str(), 80)
                .to_socket_addrs()
                .is_ok_and(|mut addrs| addrs.all(|a| a.ip().is_loopback()))
        })
        .expect("this test needs a name other than localhost that resolves to 127.0.0.1 (/etc/hosts or the host name)")
}

fn gethostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

#[tokio::test]
async fn private_addresses_need_a_literal_entry_and_link_local_is_never_reached() {
    let server = Server::start().await;
    let port = server.address.port();
    let name = loopback_name();

    // Listed by a name that resolves to 127.0.0.1: refused after DNS.
    let by_name = format!("http://{name}:{port}");
    let ran = run(
        "fetch",
        &allow(&[&by_name]),
        json!({"url": format!("{by_name}/hello")}),
    )
    .await;
    assert_eq!(ran.failure().0, "destination-IP-prohibited", "{name}");

    // `localhost` and the IP literal name it literally: allowed.
    for origin in [format!("http://localhost:{port}"), server.origin()] {
        let ran = run(
            "fetch",
            &allow(&[&origin]),
            json!({"url": format!("{origin}/hello")}),
        )
        .await;
        assert_eq!(ran.output()["body"], "hello", "{origin}");
    }

    // The metadata service, listed explicitly, by IPv4 and IPv6: still refused.
    for origin in ["http://169.254.169.254", "http://[fd00:ec2::254]"] {
        let ran = run(
            "fetch",
            &allow(&[origin]),
            json!({"url": format!("{origin}/latest/meta-data/")}),
        )
        .await;
        assert_eq!(ran.failure().0, "destination-IP-prohibited", "{origin}");
    }
}

#[tokio::test]
async fn requests_and_response_bytes_are_limited_per_task() {
    let server = Server::start().await;
    let limited = |max_requests, max_response_bytes| GrantsConfig {
        outbound: OutboundLimits {
            max_requests,
            max_response_bytes,
            ..OutboundLimits::default()
        },
        ..allow(&[&server.origin()])
    };
    let fetch =
        |path: &str, times: u32| json!({"op": "fetch", "url": server.url(path), "times": times});

    let ran = run("probe", &limited(2, 1 << 20), fetch("/hello", 2)).await;
    assert_eq!(ran.output()["statuses"], json!([200, 200]));
    let before = server.requests();
    let ran = run("probe", &limited(2, 1 << 20), fetch("/hello", 3)).await;
    assert_eq!(ran.failure().0, "connection-limit-reached");
    assert_eq!(
        server.requests(),
        before + 2,
        "the third request was not sent"
    );

    // A declared length over the budget fails at the head; a chunked body, as it grows;
    // and the budget is the task's, over all its requests.
    let ran = run("probe", &limited(10, 1000), fetch("/bytes/1000", 1)).await;
    assert_eq!(ran.output()["bytes"], 1000);
    let ran = run("probe", &limited(10, 1000), fetch("/bytes/1001", 1)).await;
    assert_eq!(ran.failure().0, "HTTP-response-body-size");
    let ran = run("probe", &limited(10, 1000), fetch("/stream/5000", 1)).await;
    let (name, cause) = ran.failure();
    assert_eq!(name, "HTTP-response-body-size", "{cause}");
    assert!(
        cause.contains("1000 bytes (outbound.max_response_bytes)"),
        "{name}: {cause}"
    );
    let ran = run("probe", &limited(10, 1000), fetch("/bytes/600", 2)).await;
    assert_eq!(ran.failure().0, "HTTP-response-body-size");
    // A HEAD's length is of a body it does not send (S3 `HeadObject` of a large object).
    let head = json!({"op": "request", "method": "HEAD", "url": server.url("/bytes/5000")});
    let ran = run("probe", &limited(10, 1000), head).await;
    assert_eq!(ran.output()["status"], 200);
}

/// Every limit and timeout the host enforces reaches the guest as its wasi:http error
/// code, at the head or while the body streams, however the server frames or paces the
/// body, and each language's fetch example fails the task with that name.
#[tokio::test]
async fn limits_and_timeouts_have_their_code_in_the_head_and_the_body_in_three_languages() {
    let server = Server::start().await;
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_origin = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let limits = OutboundLimits {
        max_response_bytes: 1000,
        first_byte_timeout_ms: 300,
        ..OutboundLimits::default()
    };
    let grants = |max_requests| GrantsConfig {
        outbound: OutboundLimits {
            max_requests,
            ..limits
        },
        ..allow(&[&server.origin(), &closed_origin])
    };
    let cases = [
        (server.url("/bytes/5000"), 10, "HTTP-response-body-size"),
        (server.url("/stream/5000"), 10, "HTTP-response-body-size"),
        (server.url("/slow/5000"), 10, "HTTP-response-body-size"),
        (server.url("/never"), 10, "connection-read-timeout"),
        (server.url("/stall"), 10, "connection-read-timeout"),
        (server.url("/cut/900"), 10, "HTTP-response-incomplete"),
        (format!("{closed_origin}/hello"), 10, "connection-refused"),
        (server.url("/hello"), 0, "connection-limit-reached"),
        (
            "http://127.0.0.2:9/hello".to_owned(),
            10,
            "HTTP-request-denied",
        ),
    ];
    let handlers = [
        ("rust", guest("fetch")),
        ("js", polyglot::component("fetch-js")),
        ("py", polyglot::component("fetch-py")),
    ];
    for (language, handler) in &handlers {
        for (url, max_requests, expected) in &cases {
            let ran = run_file(
                handler,
                &grants(*max_requests),
                json!({"url": url}),
                TaskControl::default(),
            )
            .await;
            let (name, cause) = ran.failure();
            assert_eq!(name, *expected, "{language} {url}: {cause}");
            assert_eq!(
                ran.report.error, None,
                "{language} {url}: the guest answered"
            );
            // The Python SDK's HttpError says what a denial means (the guest is told
            // no more: why is in the host's log).
            if *language == "py" && *expected == "HTTP-request-denied" {
                assert!(cause.contains("does not grant it"), "{cause}");
            }
        }
    }
}

/// A keep-alive HTTP/1.1 server: answers every request on a connection with `hello`,
/// `/big` with 5,000 bytes; counts the connections it accepted and those that closed.
struct KeepAlive {
    address: SocketAddr,
    opened: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
}

impl KeepAlive {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let opened = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (opens, closes) = (opened.clone(), closed.clone());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                opens.fetch_add(1, Ordering::SeqCst);
                let closes = closes.clone();
                tokio::spawn(async move {
                    let mut buffered = Vec::new();
                    let mut buf = [0u8; 4096];
                    'connection: loop {
                        while !buffered.windows(4).any(|w| w == b"\r\n\r\n") {
                            match socket.read(&mut buf).await {
                                Ok(0) | Err(_) => break 'connection,
                                Ok(n) => buffered.extend_from_slice(&buf[..n]),
                            }
                        }
                        let end = buffered.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                        let head = String::from_utf8_lossy(&buffered[..end]).into_owned();
                        buffered.drain(..end);
                        let body = if head.starts_with("GET /big ") {
                            "x".repeat(5000)
                        } else {
                            "hello".to_owned()
                        };
                        let response = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if socket.write_all(response.as_bytes()).await.is_err() {
                            break;
                        }
                    }
                    closes.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            address,
            opened,
            closed,
        }
    }

    fn origin(&self) -> String {
        format!("http://{}", self.address)
    }

    fn opened(&self) -> usize {
        self.opened.load(Ordering::SeqCst)
    }

    fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }
}

/// Runs `probe` with `grants` already resolved.
async fn run_resolved(grants: &Arc<Grants>, input: Value) -> Ran {
    run_with(&guest("probe"), grants, input, TaskControl::default()).await
}

/// An activity keeps its connections: ten GETs of a task, and the next task's, share
/// one; another activity opens its own; a body not read to its end closes its
/// connection; an idle one closes after `pool_idle_seconds`; 0 turns reuse off.
#[tokio::test]
async fn an_activity_reuses_its_connections_and_only_its_own() {
    let server = KeepAlive::start().await;
    let grants = |idle, max_response_bytes| {
        Arc::new(
            Grants::resolve(&GrantsConfig {
                outbound: OutboundLimits {
                    pool_idle_seconds: idle,
                    max_response_bytes,
                    ..OutboundLimits::default()
                },
                ..allow(&[&server.origin()])
            })
            .unwrap(),
        )
    };
    let fetch = |path: &str, times: u32| json!({"op": "fetch", "url": format!("{}{path}", server.origin()), "times": times});
    let first = grants(1, 1 << 20);
    let ran = run_resolved(&first, fetch("/hello", 10)).await;
    assert_eq!(ran.output()["statuses"].as_array().unwrap().len(), 10);
    assert_eq!(server.opened(), 1, "ten GETs, one connection");
    run_resolved(&first, fetch("/hello", 1)).await.output();
    assert_eq!(server.opened(), 1, "the next task reuses it");

    let other = grants(1, 1 << 20);
    run_resolved(&other, fetch("/hello", 1)).await.output();
    assert_eq!(server.opened(), 2, "another activity does not share it");

    // Idle past pool_idle_seconds (1 s): both close.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(server.closed(), 2, "idle connections close");
    run_resolved(&first, fetch("/hello", 1)).await.output();
    assert_eq!(server.opened(), 3);

    // A body cut at the byte budget is not read to its end: its connection closes.
    let small = grants(30, 1000);
    let ran = run_resolved(&small, fetch("/big", 1)).await;
    assert_eq!(ran.failure().0, "HTTP-response-body-size");
    run_resolved(&small, fetch("/hello", 1)).await.output();
    assert_eq!(server.opened(), 5, "the cut connection was not reused");

    // Reuse off.
    let off = grants(0, 1 << 20);
    run_resolved(&off, fetch("/hello", 3)).await.output();
    assert_eq!(server.opened(), 8, "a connection per request");
}

/// An internal https API whose CA is not a public one: refused as an untrusted
/// certificate, then trusted through the activity's `ca_file` alone.
#[tokio::test]
async fn a_company_ca_is_trusted_through_ca_file_only() {
    let address = https_server().await;
    let origin = format!("https://{address}");
    let input = json!({"url": format!("{origin}/hello")});
    let ran = run("fetch", &allow(&[&origin]), input.clone()).await;
    assert_eq!(
        ran.failure().0,
        "TLS-certificate-error",
        "{:?}",
        ran.failure()
    );
    let trusted = GrantsConfig {
        ca_file: Some(tls_file("ca.pem")),
        ..allow(&[&origin])
    };
    let ran = run("fetch", &trusted, input).await;
    assert_eq!(ran.output(), json!({"status": 200, "body": "hello"}));
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_and_an_abort_stops_the_wait() {
    let server = Server::start().await;
    let grants = GrantsConfig {
        outbound: OutboundLimits {
            first_byte_timeout_ms: 300,
            ..OutboundLimits::default()
        },
        ..allow(&[&server.origin()])
    };
    let ran = run("fetch", &grants, json!({"url": server.url("/never")})).await;
    assert_eq!(ran.failure().0, "connection-read-timeout");
    assert!(
        ran.elapsed >= Duration::from_millis(300) && ran.elapsed < Duration::from_secs(10),
        "{:?}",
        ran.elapsed
    );

    // With the default 30 s, an abort during the wait stops the task at once.
    let control = TaskControl::default();
    let abort = control.abort.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        abort.cancel();
    });
    let ran = run_controlled(
        "fetch",
        &allow(&[&server.origin()]),
        json!({"url": server.url("/never")}),
        control,
    )
    .await;
    assert_eq!(ran.report.error, Some(HostFailure::Shutdown));
    assert!(ran.elapsed < Duration::from_secs(5), "{:?}", ran.elapsed);
}

#[tokio::test]
async fn the_guest_sees_exactly_the_environment_it_is_granted() {
    let variable = "SFN_WASM_HOST_TEST_GRANTS_API_KEY";
    // SAFETY: only this test reads or writes this variable.
    unsafe { std::env::set_var(variable, "secret") };
    let grants = GrantsConfig {
        env: vec![
            EnvVar {
                name: "GREETING".into(),
                source: EnvSource::Literal("hello".into()),
            },
            EnvVar {
                name: "API_KEY".into(),
                source: EnvSource::FromEnv(variable.into()),
            },
        ],
        ..GrantsConfig::default()
    };
    let ran = run("probe", &grants, json!({"op": "env"})).await;
    assert_eq!(
        ran.output(),
        json!({"API_KEY": "secret", "GREETING": "hello"})
    );
    let ran = run("probe", &GrantsConfig::default(), json!({"op": "env"})).await;
    assert_eq!(ran.output(), json!({}), "nothing of the host's environment");
}

#[tokio::test]
async fn folders_are_read_only_unless_writable_and_cannot_be_escaped() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let scratch = root.path().join("scratch");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&scratch).unwrap();
    std::fs::write(data.join("ref.txt"), "reference").unwrap();
    std::fs::write(root.path().join("secret.txt"), "outside").unwrap();
    std::os::unix::fs::symlink(root.path().join("secret.txt"), data.join("link.txt")).unwrap();
    std::os::unix::fs::symlink(root.path(), data.join("up")).unwrap();
    let grants = GrantsConfig {
        dirs: vec![
            DirGrant {
                host: data.clone(),
                guest: "/data".into(),
                writable: false,
            },
            DirGrant {
                host: scratch.clone(),
                guest: "/scratch".into(),
                writable: true,
            },
        ],
        ..GrantsConfig::default()
    };

    let ran = run(
        "probe",
        &grants,
        json!({"op": "read", "path": "/data/ref.txt"}),
    )
    .await;
    assert_eq!(ran.output(), json!({"text": "reference"}));
    let ran = run(
        "probe",
        &grants,
        json!({"op": "write", "path": "/data/new.txt", "text": "x"}),
    )
    .await;
    assert_eq!(ran.failure().0, "Probe.Io");
    assert!(!data.join("new.txt").exists());
    let ran = run(
        "probe",
        &grants,
        json!({"op": "write", "path": "/scratch/new.txt", "text": "x"}),
    )
    .await;
    assert_eq!(ran.output(), json!({"written": 1}));
    assert_eq!(
        std::fs::read_to_string(scratch.join("new.txt")).unwrap(),
        "x"
    );

    for path in [
        "/data/../secret.txt",
        "/data/link.txt",
        "/data/up/secret.txt",
        "/scratch/../data/../secret.txt",
        "/secret.txt",
    ] {
        let ran = run("probe", &grants, json!({"op": "read", "path": path})).await;
        assert_eq!(ran.failure().0, "Probe.Io", "{path} must not be readable");
    }
    let ran = run(
        "probe",
        &grants,
        json!({"op": "write", "path": "/data/up/planted.txt", "text": "x"}),
    )
    .await;
    assert_eq!(ran.failure().0, "Probe.Io");
    assert!(!root.path().join("planted.txt").exists());

    // No grant, no folder.
    let ran = run(
        "probe",
        &GrantsConfig::default(),
        json!({"op": "list", "path": "/"}),
    )
    .await;
    assert_eq!(ran.failure().0, "Probe.Io");
}

/// The fetch example in each language, served against LocalStack, each activity allowed
/// the test's server: every execution succeeds with the server's body; a URL not
/// allowed fails with the error the guest saw, and the host logs `outbound:denied`.
#[test]
fn the_three_languages_fetch_through_a_served_activity() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(Server::start());
    let client = runtime.block_on(emulator::client());
    let handlers = [
        ("rust", guest("fetch")),
        ("js", polyglot::component("fetch-js")),
        ("py", polyglot::component("fetch-py")),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut body = format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n[host]\ncache_dir = \"{}\"\n",
        emulator::endpoint(),
        polyglot::cache_dir().display()
    );
    let mut machines = Vec::new();
    for (language, handler) in &handlers {
        let activity = runtime.block_on(emulator::activity(&client, &format!("fetch-{language}")));
        let machine = runtime.block_on(emulator::state_machine(&client, &activity, None));
        body.push_str(&format!(
            "[[activity]]\narn = \"{activity}\"\nhandler = \"{}\"\nmemory_limit_mb = 256\nallowed_outbound_hosts = [\"{}\"]\n",
            handler.display(),
            server.origin()
        ));
        machines.push((*language, activity, machine));
    }
    let config = dir.path().join("config.toml");
    std::fs::write(&config, body).unwrap();
    let mut served = Served::start(&config);
    for _ in &machines {
        served.wait_for("worker:running");
    }

    let denied_port = server.address.port() + 1;
    for (language, activity, machine) in &machines {
        let allowed = runtime.block_on(emulator::start(
            &client,
            machine,
            json!({"url": server.url("/hello")}),
        ));
        let ended = runtime.block_on(emulator::wait(&client, &allowed, Duration::from_secs(60)));
        assert_eq!(
            ended.output,
            Some(json!({"status": 200, "body": "hello"})),
            "{language}: {ended:?}"
        );

        let denied = runtime.block_on(emulator::start(
            &client,
            machine,
            json!({"url": format!("http://127.0.0.1:{denied_port}/hello")}),
        ));
        let ended = runtime.block_on(emulator::wait(&client, &denied, Duration::from_secs(60)));
        assert_eq!(
            ended.error.as_deref(),
            Some("HTTP-request-denied"),
            "{language}: {ended:?}"
        );
        let line = served.wait_until("outbound:denied", |line| line["activity"] == *activity);
        assert_eq!(
            line["authority"],
            format!("127.0.0.1:{denied_port}"),
            "{line}"
        );
        assert!(line["task_id"].is_string(), "{line}");
        assert_eq!(line["level"], "INFO", "{line}");
    }
    served.terminate();
}
