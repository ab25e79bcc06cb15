//! The admin server's `/metrics` scrape with 10 activities, each with a history of tasks
//! of every outcome, polls, heartbeats and calls of every API: the time from connecting to
//! the last byte (a new connection per scrape, as Prometheus opens when keep-alive is
//! off), median and p99 over 500 scrapes, and the exposition's size. Also `/status`.
//!
//! Run: `cargo bench -p sfn-wasm-host --bench admin`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use sfn_wasm_host::admin::{AdminServer, AdminState};
use sfn_wasm_host::engine::{EngineConfig, WasmEngine};
use sfn_wasm_host::events::{
    DoneError, Event, EventKind, HandlerEvent, Observer, TaskDone, TaskEvent, TaskOutcome, TaskRef,
    WorkerEvent,
};
use sfn_wasm_host::metrics::Metrics;
use sfn_wasm_host::outcome::{FailureKind, HeartbeatSource};
use sfn_wasm_host::status::StatusBoard;

const ACTIVITIES: usize = 10;
const TASKS_PER_ACTIVITY: usize = 1_000;
const SCRAPES: usize = 500;

fn history(metrics: &Metrics, status: &StatusBoard, arn: &Arc<str>) {
    let worker_name: Arc<str> = Arc::from("bench:1");
    let handler = |event: HandlerEvent| Event {
        kind: EventKind::Handler(event),
        activity: arn.clone(),
        task_source: "activity",
    };
    let worker = |event: WorkerEvent| Event {
        kind: EventKind::Worker {
            worker: worker_name.clone(),
            event,
        },
        activity: arn.clone(),
        task_source: "activity",
    };
    let task = |event: TaskEvent, id: &str| Event {
        kind: EventKind::Task {
            worker: worker_name.clone(),
            task: TaskRef {
                task_id: Arc::from(id),
                handler_digest: Arc::from("0123abcd"),
                recovered: false,
            },
            event,
        },
        activity: arn.clone(),
        task_source: "activity",
    };
    for observer in [metrics as &dyn Observer, status as &dyn Observer] {
        observer.observe(&handler(HandlerEvent::Loaded {
            digest: Arc::from("0123abcd"),
            cache: "hit",
            load_ms: 3,
        }));
        for _ in 0..4 {
            observer.observe(&worker(WorkerEvent::Running));
        }
        let outcomes = [
            (TaskOutcome::Success, DoneError::Guest),
            (TaskOutcome::Failure, DoneError::Guest),
            (TaskOutcome::HostFailure, DoneError::Host(FailureKind::Trap)),
            (
                TaskOutcome::HostFailure,
                DoneError::Host(FailureKind::Timeout),
            ),
            (TaskOutcome::Closed, DoneError::Closed),
        ];
        for n in 0..TASKS_PER_ACTIVITY {
            let id = format!("{n:016x}");
            observer.observe(&task(TaskEvent::Received, &id));
            observer.observe(&task(
                TaskEvent::Heartbeat {
                    source: HeartbeatSource::Auto,
                },
                &id,
            ));
            let (outcome, error) = outcomes[n % outcomes.len()];
            observer.observe(&task(
                TaskEvent::Done(TaskDone {
                    outcome,
                    error,
                    elapsed: Duration::from_millis(u64::try_from(n % 900).unwrap()),
                    cpu: Duration::from_micros(u64::try_from(n).unwrap()),
                    memory_peak_bytes: 1 << (16 + n % 12),
                    log_lines_dropped: 0,
                    deduplicated: false,
                }),
                &id,
            ));
        }
    }
}

fn get(addr: SocketAddr, path: &str) -> (Duration, usize) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    assert!(response.starts_with(b"HTTP/1.1 200"));
    (started.elapsed(), response.len())
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let metrics = Arc::new(Metrics::new());
    let arns: Vec<Arc<str>> = (0..ACTIVITIES)
        .map(|n| {
            Arc::from(format!(
                "arn:aws:states:us-east-1:123456789012:activity:bench-{n}"
            ))
        })
        .collect();
    let status = Arc::new(StatusBoard::new(arns.iter().map(|a| (&**a, 4))));
    for arn in &arns {
        history(&metrics, &status, arn);
    }
    let engine = Arc::new(WasmEngine::new(EngineConfig::default()).unwrap());
    let state = Arc::new(AdminState {
        metrics,
        status,
        engine,
        shutting_down: AtomicBool::new(false),
        guest_sockets: sfn_wasm_host::outbound::GuestSockets::new(64),
    });
    let server = runtime
        .block_on(AdminServer::start("127.0.0.1:0".parse().unwrap(), state))
        .unwrap();
    let addr = server.local_addr();
    println!(
        "\n{ACTIVITIES} activities, {TASKS_PER_ACTIVITY} tasks each recorded; {SCRAPES} scrapes, new connection each\n"
    );
    println!("| endpoint | median | p99 | bytes |");
    println!("|---|---:|---:|---:|");
    for path in ["/metrics", "/status", "/healthz"] {
        let mut times = Vec::with_capacity(SCRAPES);
        let mut bytes = 0;
        for _ in 0..SCRAPES {
            let (took, size) = get(addr, path);
            times.push(took);
            bytes = size;
        }
        times.sort();
        println!(
            "| `{path}` | {:.0} µs | {:.0} µs | {bytes} |",
            times[SCRAPES / 2].as_secs_f64() * 1e6,
            times[SCRAPES * 99 / 100].as_secs_f64() * 1e6,
        );
    }
    runtime.block_on(server.stop());
}
