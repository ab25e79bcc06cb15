//! The admin server of a served host against LocalStack: `/metrics` (parsed by the
//! Prometheus project's Python parser) moves as the tasks did, `/healthz`, `/status`
//! with a task in flight, `/readyz` turning 503 on SIGTERM before the process exits, and
//! the per-task accounting in `task:done`; and the admin server's bounds (connection
//! cap, idle timeout, connection lifetime, head size, no bodies) and `/status`'s bearer
//! token, on a server of the test's own or a `serve` with Step Functions unreachable.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use serde_json::{Value, json};
use sfn_wasm_host::admin::{AdminOptions, AdminServer, AdminState};
use sfn_wasm_host::config::Config;
use sfn_wasm_host::engine::{EngineConfig, WasmEngine};
use sfn_wasm_host::metrics::Metrics;
use sfn_wasm_host::status::StatusBoard;

use crate::support::admin::{get, parse_metrics};
use crate::support::emulator;
use crate::support::guests::guest;
use crate::support::served::Served;

fn sample(samples: &HashMap<String, f64>, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("no sample {key}; have: {:#?}", samples.keys()))
}

#[test]
#[allow(clippy::too_many_lines)] // one served run, checked end to end
fn metrics_status_health_and_readiness_of_a_served_host() {
    let (runtime, client, activity, machine) = emulator::emulated("admin");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    // Only the required keys and the admin address: metrics need no other setting.
    std::fs::write(
        &config,
        format!(
            "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n[host]\nadmin_listen = \"127.0.0.1:0\"\nshutdown_grace_seconds = 20\ncache = false\n\
             [[activity]]\narn = \"{activity}\"\nhandler = \"{}\"\nworkers = 2\nmemory_limit_mb = 128\n",
            emulator::endpoint(),
            guest("scenarios").display()
        ),
    )
    .unwrap();
    let mut served = Served::start(&config);
    let listening = served.wait_line(|line| line["admin"].is_string());
    let addr: SocketAddr = listening["admin"].as_str().unwrap().parse().unwrap();
    served.wait_for("worker:running");

    // Ready once the workers poll; healthy.
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(addr, "/readyz").0 != 200 {
        assert!(
            Instant::now() < deadline,
            "never ready: {:?}",
            get(addr, "/readyz")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(get(addr, "/healthz"), (200, "ok\n".into()));
    assert_eq!(get(addr, "/nope").0, 404);

    // A guest that computes for 200 ms of CPU: a fixed amount of work (a wall-clock spin
    // gets less CPU than its wall time on a busy machine), sized from a first run whose
    // cpu_ms says how fast this machine runs it.
    const CALIBRATION_ROUNDS: u64 = 50_000_000;
    runtime.block_on(emulator::start(
        &client,
        &machine,
        json!({"hello": "Work", "n": CALIBRATION_ROUNDS}),
    ));
    let calibration = served.wait_for("task:done")["cpu_ms"].as_f64().unwrap();
    assert!(
        calibration > 0.0,
        "cpu_ms of a computing guest: {calibration}"
    );
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let rounds = (CALIBRATION_ROUNDS as f64 * 200.0 / calibration) as u64;

    // One task of each outcome, the 200 ms computer and an allocator.
    let inputs = [
        json!({"hello": "World"}),
        json!({"hello": "Failure"}),
        json!({"hello": "Error"}),
        json!({"hello": "Work", "n": rounds}),
        json!({"hello": "Allocate", "mb": 32}),
    ];
    for input in &inputs {
        runtime.block_on(emulator::start(&client, &machine, input.clone()));
    }
    let mut done: Vec<Value> = Vec::new();
    while done.len() < inputs.len() {
        done.push(served.wait_for("task:done"));
    }
    let outcomes: Vec<(&str, &str)> = done
        .iter()
        .map(|d| (d["outcome"].as_str().unwrap(), d["error"].as_str().unwrap()))
        .collect();
    for expected in [
        ("success", "guest"),
        ("failure", "guest"),
        ("host_failure", "SfnWasmHost.Trap"),
    ] {
        assert!(
            outcomes.contains(&expected),
            "{expected:?} not in {outcomes:?}"
        );
    }
    let cpu_ms: Vec<f64> = done.iter().map(|d| d["cpu_ms"].as_f64().unwrap()).collect();
    let peaks: Vec<u64> = done
        .iter()
        .map(|d| d["memory_peak_bytes"].as_u64().unwrap())
        .collect();
    // The computer's cpu_ms is within 150–400; every other task's is below it.
    assert_eq!(
        cpu_ms
            .iter()
            .filter(|ms| (150.0..=400.0).contains(*ms))
            .count(),
        1,
        "the 200 ms computer's cpu_ms: {cpu_ms:?} (calibration: {calibration} ms for {CALIBRATION_ROUNDS} rounds)"
    );
    assert_eq!(
        cpu_ms.iter().filter(|ms| **ms < 150.0).count(),
        inputs.len() - 1,
        "only the computer computes for long: {cpu_ms:?}"
    );
    assert!(
        peaks.iter().any(|bytes| *bytes >= 32 << 20),
        "the 32 MiB allocator's peak: {peaks:?}"
    );
    assert!(
        done.iter().all(|d| d["elapsed_ms"].is_u64()),
        "elapsed_ms: {done:?}"
    );

    // The counters moved as the tasks did.
    let (status, text) = get(addr, "/metrics");
    assert_eq!(status, 200);
    let m = parse_metrics(&text);
    let a = format!("activity=\"{activity}\"");
    let task = |outcome: &str, error: &str| {
        sample(
            &m,
            &format!("sfn_wasm_host_tasks_total{{{a},error=\"{error}\",outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(
        task("success", "guest"),
        4.0,
        "World, Work (twice), Allocate"
    );
    assert_eq!(task("failure", "guest"), 1.0);
    assert_eq!(task("host_failure", "SfnWasmHost.Trap"), 1.0);
    assert_eq!(
        sample(&m, &format!("sfn_wasm_host_tasks_in_flight{{{a}}}")),
        0.0
    );
    assert_eq!(sample(&m, &format!("sfn_wasm_host_workers{{{a}}}")), 2.0);
    assert_eq!(
        sample(
            &m,
            &format!("sfn_wasm_host_polls_total{{{a},result=\"task\"}}")
        ),
        6.0
    );
    assert_eq!(
        sample(
            &m,
            "sfn_wasm_host_sfn_requests_total{api=\"SendTaskSuccess\",result=\"ok\"}"
        ),
        4.0
    );
    assert_eq!(
        sample(
            &m,
            "sfn_wasm_host_sfn_requests_total{api=\"SendTaskFailure\",result=\"ok\"}"
        ),
        2.0
    );
    assert!(
        sample(
            &m,
            "sfn_wasm_host_sfn_request_duration_seconds_count{api=\"GetActivityTask\"}"
        ) >= 6.0
    );
    for histogram in [
        "task_duration_seconds",
        "task_cpu_seconds",
        "task_memory_peak_bytes",
    ] {
        assert_eq!(
            sample(&m, &format!("sfn_wasm_host_{histogram}_count{{{a}}}")),
            6.0,
            "{histogram}"
        );
    }
    assert!(
        sample(&m, &format!("sfn_wasm_host_task_cpu_seconds_sum{{{a}}}")) >= 0.15,
        "the computer's CPU is in the histogram"
    );
    let digest = done[0]["handler_digest"].as_str().unwrap();
    assert_eq!(
        sample(
            &m,
            &format!("sfn_wasm_host_handler_info{{{a},digest=\"{digest}\"}}")
        ),
        1.0
    );

    // /status with a task in flight, then SIGTERM: /readyz says 503 while the task is
    // still finishing inside the grace, before the process exits.
    runtime.block_on(emulator::start(
        &client,
        &machine,
        json!({"hello": "Sleep", "ms": 3000}),
    ));
    let start = served.wait_for("task:start");
    let (status, body) = get(addr, "/status");
    assert_eq!(status, 200);
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["version"], env!("CARGO_PKG_VERSION"));
    assert!(page["uptime_seconds"].as_f64().unwrap() > 0.0, "{page}");
    let entry = &page["activities"][0];
    assert_eq!(entry["arn"], activity.as_str(), "{page}");
    assert_eq!(entry["handler_digest"], digest, "{page}");
    // No rollout, no canary.
    assert!(entry["canary"].is_null(), "{page}");
    assert_eq!(entry["desired_workers"], 2, "{page}");
    assert_eq!(entry["running_workers"], 2, "{page}");
    assert_eq!(entry["tasks_in_flight"], 1, "{page}");
    let in_flight = &entry["tasks"][0];
    assert_eq!(in_flight["task_id"], start["task_id"], "{page}");
    assert_eq!(in_flight["handler_digest"], digest, "{page}");
    assert!(
        in_flight["started"].is_string() && in_flight["elapsed_ms"].is_u64(),
        "{page}"
    );

    served.signal(Signal::TERM);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let (status, body) = get(addr, "/readyz");
        if status == 503 {
            assert!(body.contains("shutting down"), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still {status} after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    served.wait_until("task:done", |d| d["task_id"] == start["task_id"]);
    assert_eq!(served.wait_exit(), 0);
    assert!(
        TcpStream::connect(addr).is_err(),
        "the admin server stops with the host"
    );
}

#[test]
fn a_taken_admin_port_fails_serve_naming_the_key() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"http://127.0.0.1:9\"\n[host]\ncache = false\n\
             [[activity]]\narn = \"arn:aws:states:us-east-1:000000000000:activity:a\"\nhandler = \"{}\"\n",
            guest("greet").display()
        ),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_sfn-wasm-host"))
        .arg("serve")
        .arg(&config)
        .args(["--admin-listen", &addr.to_string()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("config.toml") && stderr.contains("host.admin_listen"),
        "{stderr}"
    );
    // A malformed address is refused by the flag parser, naming the form.
    let output = Command::new(env!("CARGO_BIN_EXE_sfn-wasm-host"))
        .arg("serve")
        .arg(&config)
        .args(["--admin-listen", "localhost:9464"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("IP:PORT"), "{stderr}");
}

/// An admin server of the test's own, within `options`, for one activity with nothing
/// to report; the runtime that serves it goes with it.
fn own_server(options: AdminOptions) -> (tokio::runtime::Runtime, AdminServer) {
    own_server_with(options, sfn_wasm_host::outbound::GuestSockets::new(64))
}

fn own_server_with(
    options: AdminOptions,
    guest_sockets: sfn_wasm_host::outbound::GuestSockets,
) -> (tokio::runtime::Runtime, AdminServer) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let engine = WasmEngine::new(EngineConfig {
        pooling: false,
        ..EngineConfig::sized(1, 16 << 20)
    })
    .unwrap();
    let state = Arc::new(AdminState {
        metrics: Arc::new(Metrics::new()),
        status: Arc::new(StatusBoard::new(std::iter::once((
            "arn:aws:states:us-east-1:123456789012:activity:a",
            1,
        )))),
        engine: Arc::new(engine),
        shutting_down: AtomicBool::new(false),
        guest_sockets,
    });
    let server = runtime
        .block_on(AdminServer::start_with(
            "127.0.0.1:0".parse().unwrap(),
            state,
            options,
        ))
        .unwrap();
    (runtime, server)
}

/// Sends `head` (a request without its final blank line) on `stream`, keeping it open,
/// and reads one response: the status code and the body.
fn exchange(stream: &mut TcpStream, head: &str) -> (u16, String) {
    write!(stream, "{head}\r\n\r\n").unwrap();
    read_response(stream)
}

/// One response from `stream`, by its `content-length`.
fn read_response(stream: &mut TcpStream) -> (u16, String) {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut received = Vec::new();
    let mut byte = [0u8; 1];
    while !received.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).unwrap();
        assert_eq!(
            n,
            1,
            "closed mid-head: {:?}",
            String::from_utf8_lossy(&received)
        );
        received.push(byte[0]);
    }
    let head = String::from_utf8(received).unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    stream.read_exact(&mut body).unwrap();
    (status, String::from_utf8(body).unwrap())
}

/// Whether the server closed `stream` (end of file or a reset) within `within`; reading
/// anything else first is a failure.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buffer = [0u8; 64];
    match stream.read(&mut buffer) {
        Ok(0) => true,
        Ok(n) => panic!(
            "read {:?} where the connection should close",
            String::from_utf8_lossy(&buffer[..n])
        ),
        Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(_) => true,
    }
}

const HEALTHZ: &str = "GET /healthz HTTP/1.1\r\nHost: admin";

#[test]
fn a_connection_over_the_cap_is_answered_503_and_closed_while_the_cap_is_held() {
    let (_runtime, server) = own_server(AdminOptions {
        max_connections: 2,
        idle_timeout: Duration::from_secs(30),
        ..AdminOptions::default()
    });
    let addr = server.local_addr();
    // Two keep-alive connections, each answered: both hold a place.
    let mut held: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
    for stream in &mut held {
        assert_eq!(exchange(stream, HEALTHZ), (200, "ok\n".into()));
    }
    // A third is told 503 without being read, then closed.
    let mut over = TcpStream::connect(addr).unwrap();
    over.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    over.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 503 ") && answer.contains("too many admin connections"),
        "{answer:?}"
    );
    // The held ones still work; one closed frees its place for a new connection.
    assert_eq!(exchange(&mut held[1], HEALTHZ).0, 200);
    drop(held.remove(0));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // Until the server has seen the close, a new connection is still over the cap
        // (and its unread request may turn the 503 into a reset).
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut answer = String::new();
        let sent = write!(stream, "{HEALTHZ}\r\nConnection: close\r\n\r\n").is_ok();
        if sent && stream.read_to_string(&mut answer).is_ok() && answer.starts_with("HTTP/1.1 200")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the freed place is never reused: {answer:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let idle = Duration::from_millis(300);
    let (_runtime, server) = own_server(AdminOptions {
        idle_timeout: idle,
        ..AdminOptions::default()
    });
    let addr = server.local_addr();
    // After an answered request…
    let mut stream = TcpStream::connect(addr).unwrap();
    assert_eq!(exchange(&mut stream, HEALTHZ).0, 200);
    let since = Instant::now();
    assert!(
        closed_within(&mut stream, Duration::from_secs(5)),
        "an idle keep-alive connection stays open"
    );
    assert!(since.elapsed() >= idle - Duration::from_millis(50));
    // …and one that never sends a byte.
    let mut silent = TcpStream::connect(addr).unwrap();
    assert!(
        closed_within(&mut silent, Duration::from_secs(5)),
        "a silent connection stays open"
    );
}

#[test]
fn requests_sent_inside_the_idle_timeout_do_not_hold_a_connection_past_its_lifetime() {
    let lifetime = Duration::from_secs(1);
    let (_runtime, server) = own_server(AdminOptions {
        idle_timeout: Duration::from_millis(500),
        connection_lifetime: lifetime,
        ..AdminOptions::default()
    });
    let mut stream = TcpStream::connect(server.local_addr()).unwrap();
    let started = Instant::now();
    let mut answered = 0;
    // A request every 100 ms, each well inside the idle timeout: before the lifetime
    // cap, this held the connection for as long as the client liked.
    let closed = loop {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the connection outlived its lifetime: {answered} requests answered"
        );
        if write!(stream, "{HEALTHZ}\r\n\r\n").is_err() {
            break started.elapsed();
        }
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut peek = [0u8; 1];
        match stream.peek(&mut peek) {
            Ok(0) | Err(_) => break started.elapsed(),
            Ok(_) => {
                assert_eq!(read_response(&mut stream).0, 200);
                answered += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(answered >= 5, "only {answered} requests answered");
    assert!(
        closed >= lifetime && closed < lifetime + Duration::from_secs(2),
        "closed after {closed:?}"
    );
}

#[test]
fn an_oversized_request_head_a_body_or_another_method_is_refused() {
    let (_runtime, server) = own_server(AdminOptions::default());
    let addr = server.local_addr();
    // The server answers and closes before the rest of the head has been read, so the
    // end of the write may fail; the answer is there all the same.
    let mut stream = TcpStream::connect(addr).unwrap();
    let padding = "a".repeat(9 << 10);
    let _ = write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: admin\r\nX-Padding: {padding}\r\n\r\n"
    );
    let mut answer = [0u8; 12];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 431");
    // A body is refused unread, and the connection closed after the answer.
    let mut stream = TcpStream::connect(addr).unwrap();
    let (status, body) = exchange(
        &mut stream,
        "GET /healthz HTTP/1.1\r\nHost: admin\r\nContent-Length: 5",
    );
    assert_eq!(
        (status, body.as_str()),
        (413, "admin requests take no body\n")
    );
    assert!(closed_within(&mut stream, Duration::from_secs(5)));
    let mut stream = TcpStream::connect(addr).unwrap();
    assert_eq!(
        exchange(
            &mut stream,
            "POST /healthz HTTP/1.1\r\nHost: admin\r\nContent-Length: 0"
        )
        .0,
        405
    );
}

/// `GET path` with `authorization` as the `Authorization` header, if any: status,
/// `WWW-Authenticate` and body.
fn get_with(
    addr: SocketAddr,
    path: &str,
    authorization: Option<&str>,
) -> (u16, Option<String>, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    let auth = authorization.map_or(String::new(), |a| format!("\r\nAuthorization: {a}"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close{auth}\r\n\r\n"
    )
    .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let challenge = head.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .starts_with("www-authenticate:")
            .then(|| l["www-authenticate:".len()..].trim().to_owned())
    });
    (status, challenge, body.to_owned())
}

#[test]
fn with_admin_token_file_status_needs_the_token_and_the_rest_stays_open() {
    let token = "c0ffee-5ecret-7e57-token";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.token"), format!("  {token}\n")).unwrap();
    // Through `serve` itself: the config key reaches the server; Step Functions is
    // unreachable (port 9), which the admin server does not need. The soft limit on open
    // files starts low, to see `serve` raise it.
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"http://127.0.0.1:9\"\n\
             [host]\ncache = false\nadmin_listen = \"127.0.0.1:0\"\nadmin_token_file = \"admin.token\"\n\
             [[activity]]\narn = \"arn:aws:states:us-east-1:000000000000:activity:a\"\nhandler = \"{}\"\n",
            guest("greet").display()
        ),
    )
    .unwrap();
    let mut child = Command::new("bash")
        .args([
            "-c",
            r#"ulimit -Sn 256 && exec "$0" serve --log-format json "$1""#,
        ])
        .arg(env!("CARGO_BIN_EXE_sfn-wasm-host"))
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut logged = Vec::new();
    let mut addr: Option<SocketAddr> = None;
    for line in stdout.lines().map_while(Result::ok) {
        logged.push(line.clone());
        let line: Value = serde_json::from_str(&line).unwrap();
        if let Some(listening) = line["admin"].as_str() {
            assert_eq!(line["status_needs_token"], true, "{line}");
            addr = Some(listening.parse().unwrap());
            break;
        }
    }
    let addr = addr.unwrap_or_else(|| panic!("no admin line; logged:\n{}", logged.join("\n")));

    // Open to anyone: the probes and the scraper.
    assert_eq!(get_with(addr, "/healthz", None).0, 200);
    assert_eq!(get_with(addr, "/metrics", None).0, 200);
    // /status: 401 with a Bearer challenge without the token or with a wrong one.
    for authorization in [
        None,
        Some("Bearer wrong"),
        Some(&*format!("Bearer {token}x")),
        Some(&*format!("Basic {token}")),
    ] {
        let (status, challenge, body) = get_with(addr, "/status", authorization);
        assert_eq!(status, 401, "{authorization:?}: {body}");
        assert_eq!(
            challenge.as_deref(),
            Some(r#"Bearer realm="sfn-wasm-host""#)
        );
        assert!(!body.contains("activity:a"), "{body}");
    }
    let (status, _, body) = get_with(addr, "/status", Some(&format!("Bearer {token}")));
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("arn:aws:states:us-east-1:000000000000:activity:a"),
        "{body}"
    );

    // `serve` raised its soft limit on open files to the hard one.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let open_files: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .skip(3)
        .take(2)
        .collect();
    assert_eq!(open_files[0], open_files[1], "{limits}");

    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
    rustix::process::kill_process(pid, Signal::TERM).unwrap();
    let output = child.wait_with_output().unwrap();
    let everything = format!(
        "{}{}{}",
        logged.join("\n"),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !everything.contains(token),
        "the token was logged:\n{everything}"
    );
}

#[test]
fn admin_token_file_problems_are_config_errors_naming_the_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let parse = |token_file: &str| {
        let text = format!(
            "[host]\nadmin_token_file = \"{token_file}\"\n\
             [[activity]]\narn = \"arn:aws:states:us-east-1:000000000000:activity:a\"\nhandler = \"h.wasm\"\n"
        );
        Config::parse(&dir.path().join("config.toml"), &text)
    };
    let secret = "s3cret token";
    std::fs::write(dir.path().join("h.wasm"), "").unwrap();
    std::fs::write(dir.path().join("empty"), " \n").unwrap();
    std::fs::write(dir.path().join("spaced"), secret).unwrap();
    std::fs::write(dir.path().join("huge"), "x".repeat(5000)).unwrap();
    for (file, says) in [
        ("missing", "cannot read"),
        ("empty", "is empty"),
        ("spaced", "visible ASCII"),
        ("huge", "more than 4096 bytes"),
    ] {
        let error = parse(file).unwrap_err();
        assert_eq!(error.key, "host.admin_token_file", "{error}");
        let text = error.to_string();
        assert!(
            text.contains("config.toml")
                && text.contains(&dir.path().join(file).display().to_string())
                && text.contains(says),
            "{text}"
        );
        assert!(!text.contains("s3cret"), "{text}");
    }
    // A good one: kept as a digest that no print shows.
    std::fs::write(dir.path().join("good"), "s3cret-token\n").unwrap();
    let config = parse("good").unwrap();
    assert!(config.host.admin.token.is_some());
    assert!(!format!("{config:?}").contains("s3cret"));
    assert_eq!(config.host.admin.max_connections, 64);
    let error = Config::parse(
        &dir.path().join("config.toml"),
        "[host]\nadmin_max_connections = 0\n[[activity]]\narn = \"arn:aws:states:us-east-1:000000000000:activity:a\"\nhandler = \"h.wasm\"\n",
    )
    .unwrap_err();
    assert_eq!(error.key, "host.admin_max_connections", "{error}");
}

/// Issue 34, class 3: while guests hold every connection the host gives them, `/readyz`
/// says so (their next one is refused; the host's own calls keep the rest).
#[test]
fn readyz_says_when_guests_hold_every_connection_they_may_have() {
    let sockets = sfn_wasm_host::outbound::GuestSockets::new(2);
    let (_runtime, server) = own_server_with(AdminOptions::default(), sockets.clone());
    let (status, _) = get(server.local_addr(), "/readyz");
    let ready_before = status;
    let held: Vec<_> = std::iter::from_fn(|| sockets.take()).take(3).collect();
    assert_eq!(held.len(), 2);
    let (status, body) = get(server.local_addr(), "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("guests hold all 2 connections"), "{body}");
    drop(held);
    let (status, body) = get(server.local_addr(), "/readyz");
    assert_eq!(status, ready_before, "{body}");
    assert!(!body.contains("guests hold all"), "{body}");
}
