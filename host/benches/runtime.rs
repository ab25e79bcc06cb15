//! The host's own CPU per task, without the network: the whole runtime `serve` runs
//! (consumer, pollers, task slots, guests' runtime, engine, toolkit, delivery) against an
//! in-memory Step Functions, at 1 and 4 workers, beside a bare loop that polls, parses,
//! answers with the same queue. What is left between the two is what the host adds to
//! each task on top of the SDK calls; the e2e bench (`scripts/bench-e2e.sh`) measures the
//! whole against LocalStack.
//!
//! Run: `cargo bench -p sfn-wasm-host --bench runtime` after `scripts/build-guests.sh`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sfn_wasm_host::sfn::StepFunctions;

mod common;

const TASKS: u64 = 20_000;
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

fn queue() -> Arc<common::Queue> {
    Arc::new(common::Queue::new(TASKS, r#"{"hello": "x"}"#.to_owned()))
}

/// A multi-threaded runtime, as `serve` builds (one per case, so cases share nothing).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// CPU per task of the host runtime with `workers` workers.
fn host(workers: u32) -> Duration {
    let runtime = runtime();
    runtime.block_on(async {
        let queue = queue();
        let mut consumer =
            common::consumer("greet", &format!("workers = {workers}"), queue.clone());
        let before = cpu();
        consumer.start();
        while queue.answered() < TASKS {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let used = cpu() - before;
        assert_eq!(queue.failed.load(std::sync::atomic::Ordering::Relaxed), 0);
        consumer.shutdown(Duration::from_secs(1)).await;
        used / u32::try_from(TASKS).unwrap()
    })
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
    let mut rows: Vec<(&str, u32, Vec<Duration>)> = Vec::new();
    for workers in WORKERS {
        rows.push(("bare loop", workers, Vec::new()));
        rows.push(("host runtime", workers, Vec::new()));
    }
    for _ in 0..ROUNDS {
        for row in &mut rows {
            let started = Instant::now();
            let per_task = match row.0 {
                "bare loop" => bare(row.1),
                _ => host(row.1),
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
