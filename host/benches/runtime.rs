//! The host's own CPU per task, without the network: the whole runtime `serve` runs
//! (consumer, pollers, task slots, engine, toolkit, delivery) against an
//! in-memory Step Functions, at 1 and 4 workers, beside a bare loop that polls, parses,
//! answers with the same queue. What is left between the two is what the host adds to
//! each task on top of the SDK calls; the e2e bench (`scripts/bench-e2e.sh`) measures the
//! whole against LocalStack.
//!
//! A third row runs the same with the admin server on (`[host] admin_listen`: metrics
//! and the status board fed by every event and Step Functions call, `/metrics` scraped
//! every second) and traces exported (`[host.otel]`, to a stand-in collector in this
//! process): what observing the host costs per task.
//!
//! Rows for what a task keeps across attempts and crashes (issue 24), each on its own
//! with a folder store in a temporary folder (what a single host would use; S3's cost is
//! its requests): `[activity.progress]` (the key read from every input; `greet` saves no
//! checkpoint, so the row is the per-task price of having it on: the key and the delete
//! after success), `[activity.idempotency]` (a lookup, a claim and the stored answer per
//! task, every key new) and `[host] outbox_dir` (every answer written, fsync'd, and
//! removed). `RUNTIME_FEATURES=0` leaves them out; `RUNTIME_ROWS=A,B` runs only the
//! rows whose name holds `A` or `B` (e.g. `nothing kept,outbox`). They run fewer tasks
//! ([`FEATURE_TASKS`]): each waits for the disk.
//!
//! Run: `cargo bench -p sfn-wasm-host --bench runtime` after `scripts/build-guests.sh`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sfn_wasm_host::runtime::HostRuntime;
use sfn_wasm_host::sfn::StepFunctions;

mod common;

const TASKS: u64 = 20_000;
/// Tasks per run of the rows whose tasks wait for the disk.
const FEATURE_TASKS: u64 = 2_000;
const ROUNDS: usize = 3;
const WORKERS: [u32; 2] = [1, 4];

/// This process's CPU time (user + system), from /proc.
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("a stat line")
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

fn queue_of(tasks: u64) -> Arc<common::Queue> {
    Arc::new(common::Queue::new(
        tasks,
        json!({"hello": "World", "executionId": "e-{n}", "orderId": "o-{n}"}).to_string(),
    ))
}

fn queue() -> Arc<common::Queue> {
    Arc::new(common::Queue::new(TASKS, r#"{"hello": "x"}"#.to_owned()))
}

/// A runtime as `serve` builds it by default (one per case, so cases share nothing): one
/// worker thread (`Config::runtime_threads`), guests that compute moving to the engine's
/// guest threads.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// CPU per task of the host runtime `serve` runs (`HostRuntime`, start-up included)
/// with `workers` workers; with `collector` (an OTLP/HTTP URL), its admin server on
/// (metrics and status kept for every event and call, scraped once a second, as
/// Prometheus would) and every task traced to that collector.
fn host(workers: u32, collector: Option<&str>) -> Duration {
    let runtime = runtime();
    runtime.block_on(async {
        let queue = queue();
        let host_settings = match collector {
            Some(url) => format!(
                "admin_listen = \"127.0.0.1:0\"\nshutdown_grace_seconds = 1\n[host.otel]\nendpoint = \"{url}\""
            ),
            None => "shutdown_grace_seconds = 1".to_owned(),
        };
        let parts = common::parts(
            "greet",
            &format!("workers = {workers}"),
            &host_settings,
            queue.clone(),
        );
        let before = cpu();
        let host = HostRuntime::start(parts).await.expect("the runtime starts");
        let mut scraped = Instant::now();
        while queue.answered() < TASKS {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if let Some(addr) = host.admin_addr()
                && scraped.elapsed() >= Duration::from_secs(1)
            {
                scraped = Instant::now();
                scrape(addr).await;
            }
        }
        let used = cpu() - before;
        assert_eq!(queue.failed.load(std::sync::atomic::Ordering::Relaxed), 0);
        host.shutdown().await;
        used / u32::try_from(TASKS).unwrap()
    })
}

/// The feature rows: a name, and the config that turns the feature on (`DIR` is a
/// fresh temporary folder; activity lines, then `[host]` lines after `|`).
const FEATURES: [(&str, &str); 6] = [
    ("host runtime, same tasks as below, nothing kept", "|"),
    (
        "host runtime, [activity.progress] on (folder)",
        "[activity.progress]\nkey = \"/executionId\"\nstore = \"DIR\"|",
    ),
    (
        "host runtime, [activity.idempotency] on (folder)",
        "[activity.idempotency]\nkey = \"/orderId\"\nstore = \"DIR\"|",
    ),
    (
        "host runtime, [activity.idempotency] on (folder, process-crash)",
        "[activity.idempotency]\nkey = \"/orderId\"\nstore = \"DIR\"\ndurability = \"process-crash\"|",
    ),
    (
        "host runtime, [host] outbox_dir on",
        "|outbox_dir = \"DIR\"",
    ),
    (
        "host runtime, [host] outbox_dir on (process-crash)",
        "|outbox_dir = \"DIR\"\noutbox_durability = \"process-crash\"",
    ),
];

/// CPU per task of the host runtime with one feature of [`FEATURES`] on, over
/// [`FEATURE_TASKS`] tasks with a key of their own each.
fn feature(workers: u32, settings: &str) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let settings = settings.replace("DIR", &dir.path().join("store").display().to_string());
    let (activity, host_extra) = settings.split_once('|').unwrap();
    let runtime = runtime();
    runtime.block_on(async {
        let queue = queue_of(FEATURE_TASKS);
        let parts = common::parts(
            "greet",
            &format!("workers = {workers}\n{activity}"),
            &format!("shutdown_grace_seconds = 1\n{host_extra}"),
            queue.clone(),
        );
        let before = cpu();
        let host = HostRuntime::start(parts).await.expect("the runtime starts");
        while queue.answered() < FEATURE_TASKS {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let used = cpu() - before;
        assert_eq!(queue.failed.load(std::sync::atomic::Ordering::Relaxed), 0);
        host.shutdown().await;
        used / u32::try_from(FEATURE_TASKS).unwrap()
    })
}

/// `GET /metrics`, read to the end.
async fn scrape(addr: std::net::SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("admin");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("response");
    assert!(response.starts_with(b"HTTP/1.1 200"), "a scrape failed");
}

/// CPU per task of `loops` loops of poll → parse → answer on the same queue.
fn bare(loops: u32) -> Duration {
    let runtime = runtime();
    runtime.block_on(async {
        let queue = queue();
        let before = cpu();
        let loops: Vec<_> = (0..loops)
            .map(|_| {
                let queue = queue.clone();
                tokio::spawn(async move {
                    while queue.handed_out.load(std::sync::atomic::Ordering::Relaxed) < TASKS {
                        let Ok(Some(task)) = queue.poll("arn", "bare").await else {
                            break;
                        };
                        let input: serde_json::Value =
                            serde_json::from_str(&task.input).unwrap_or_default();
                        let output = json!({"greeting": format!("Hello, {}", input["hello"].as_str().unwrap_or(""))});
                        let _ = queue.send_success(&task.token, &output.to_string()).await;
                    }
                })
            })
            .collect();
        futures::future::join_all(loops).await;
        (cpu() - before) / u32::try_from(TASKS).unwrap()
    })
}

fn main() {
    common::build_guests(&[]);
    let collector = common::collector();
    let features = std::env::var("RUNTIME_FEATURES").as_deref() != Ok("0");
    let mut rows: Vec<(&str, u32, Vec<Duration>)> = Vec::new();
    let only = std::env::var("RUNTIME_ROWS").unwrap_or_default();
    for workers in WORKERS {
        rows.push(("bare loop", workers, Vec::new()));
        rows.push(("host runtime", workers, Vec::new()));
        rows.push(("host runtime, admin server + OTLP on", workers, Vec::new()));
        if features {
            for (name, _) in FEATURES {
                rows.push((name, workers, Vec::new()));
            }
        }
    }
    rows.retain(|row| only.split(',').any(|part| row.0.contains(part)));
    for _ in 0..ROUNDS {
        for row in &mut rows {
            let started = Instant::now();
            let per_task = match row.0 {
                "bare loop" => bare(row.1),
                "host runtime" => host(row.1, None),
                "host runtime, admin server + OTLP on" => host(row.1, Some(&collector)),
                name => feature(row.1, FEATURES.iter().find(|f| f.0 == name).unwrap().1),
            };
            eprintln!(
                "{} x{}: {:.1} µs per task ({:.1} s)",
                row.0,
                row.1,
                per_task.as_secs_f64() * 1e6,
                started.elapsed().as_secs_f64()
            );
            row.2.push(per_task);
        }
    }
    println!(
        "\n{TASKS} tasks of `greet` per run from an in-memory queue, {ROUNDS} rounds, medians\n"
    );
    println!("| worker | workers | CPU per task |");
    println!("|---|---:|---:|");
    for (name, workers, mut runs) in rows {
        runs.sort();
        println!(
            "| {name} | {workers} | {:.1} µs |",
            runs[runs.len() / 2].as_secs_f64() * 1e6
        );
    }
}
