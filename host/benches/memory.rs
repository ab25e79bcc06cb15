//! Resident memory with N tasks in flight, each guest waiting in a host call (a WASI
//! sleep), through the whole runtime `serve` runs: consumer, pools, pollers, task slots,
//! engine, delivery. Prints a table for 1,000, 5,000 and 10,000 tasks (or the counts in
//! `MEMORY_BENCH_TASKS`, comma-separated), each measured in a fresh process.
//!
//! Run: `scripts/bench.sh` (or `cargo bench -p sfn-wasm-host --bench memory` after
//! `scripts/build-guests.sh`). Step Functions is an in-memory queue here (the emulator
//! cannot hand out 10,000 tasks at once on this machine), so the figure is the host's
//! share: what the poll and answer paths, the slots and the sandboxes hold per task.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

mod common;

const DEFAULT_CASES: &[u32] = &[1_000, 5_000, 10_000];
/// Long enough that every task is in flight at once, even at 10,000.
const SLEEP_MS: u64 = 15_000;
const CASE_VAR: &str = "MEMORY_BENCH_CASE";

fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS");
    line.split_whitespace()
        .nth(1)
        .and_then(|kb| kb.parse::<u64>().ok())
        .expect("a number")
        * 1024
}

struct Row {
    idle: u64,
    peak: u64,
    in_flight: u64,
    failed: u64,
}

/// One case, in this process: a host with `tasks` slots and 100 pollers.
fn measure(tasks: u32) -> Row {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let queue = Arc::new(common::Queue::new(
            u64::from(tasks),
            format!(r#"{{"hello": "Sleep", "ms": {SLEEP_MS}}}"#),
        ));
        let mut consumer = common::consumer(
            "scenarios",
            &format!(
                "pollers = 100\nmax_concurrent_tasks = {tasks}\n\
                 task_timeout_seconds = 120\nmemory_limit_mb = 64"
            ),
            queue.clone(),
        );
        let idle = resident_bytes();
        consumer.start();
        let (mut peak, mut in_flight) = (idle, 0);
        let started = Instant::now();
        while queue.answered() < u64::from(tasks) {
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "{} of {tasks} answered after 300 s",
                queue.answered()
            );
            peak = peak.max(resident_bytes());
            let handed_out = queue.handed_out.load(Ordering::Relaxed);
            in_flight = in_flight.max(handed_out.min(u64::from(tasks)) - queue.answered());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        consumer.shutdown(Duration::from_secs(5)).await;
        Row {
            idle,
            peak,
            in_flight,
            failed: queue.failed.load(Ordering::Relaxed),
        }
    })
}

fn main() {
    if let Ok(case) = std::env::var(CASE_VAR) {
        let row = measure(case.parse().expect("a task count"));
        println!("{} {} {} {}", row.idle, row.peak, row.in_flight, row.failed);
        return;
    }
    common::build_guests(&[]);
    let cases: Vec<u32> = std::env::var("MEMORY_BENCH_TASKS").map_or_else(
        |_| DEFAULT_CASES.to_vec(),
        |list| {
            list.split(',')
                .map(|n| n.trim().parse().expect("MEMORY_BENCH_TASKS: numbers"))
                .collect()
        },
    );
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    println!("\n| tasks in flight (sleeping in a host call) | idle host | peak | per task |");
    println!("|---:|---:|---:|---:|");
    for tasks in cases {
        let me = std::env::current_exe().expect("this benchmark's path");
        let out = std::process::Command::new(me)
            .env(CASE_VAR, tasks.to_string())
            .output()
            .expect("run a case");
        assert!(
            out.status.success(),
            "case {tasks}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let fields: Vec<u64> = text
            .lines()
            .last()
            .unwrap_or_default()
            .split_whitespace()
            .map(|n| n.parse().expect("a number"))
            .collect();
        let [idle, peak, in_flight, failed] = fields[..] else {
            panic!("case {tasks} printed {text}");
        };
        assert_eq!(failed, 0, "case {tasks}: {failed} tasks failed");
        assert_eq!(
            in_flight,
            u64::from(tasks),
            "case {tasks}: only {in_flight} were in flight at once"
        );
        println!(
            "| {tasks} | {:.0} MiB | {:.0} MiB | {:.0} KiB |",
            mib(idle),
            mib(peak),
            (peak - idle) as f64 / 1024.0 / f64::from(tasks)
        );
    }
}
