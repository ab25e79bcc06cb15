//! Resident memory with 1,000 tasks in flight, each guest waiting in a host call (a
//! WASI sleep), as a host with 1,000 workers and slow handlers would be. Prints a table.
//!
//! Run: `scripts/bench.sh` (or `cargo bench -p sfn-wasm-host --bench memory` after
//! `scripts/build-guests.sh`). Step Functions is left out (the local responder answers),
//! so this is the sandbox's share: instances, stores, stacks, tasks.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sfn_wasm_host::engine::{EngineConfig, Handler, WasmEngine};

mod common;

const TASKS: u32 = 1000;
const SLEEP_MS: u64 = 4000;

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

fn main() {
    common::build_guests(&[]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let engine = Arc::new(
        WasmEngine::new(EngineConfig {
            max_concurrent_tasks: TASKS,
            max_memory_bytes: 64 << 20,
            pooling: true,
            ..EngineConfig::default()
        })
        .expect("an engine with 1,000 slots"),
    );
    let handler = Handler::load_file(&engine, &common::guest("scenarios")).unwrap();
    let before = resident_bytes();
    let peak = Arc::new(AtomicU64::new(before));

    runtime.block_on(async {
        let sampler = {
            let peak = peak.clone();
            tokio::spawn(async move {
                loop {
                    peak.fetch_max(resident_bytes(), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        let tasks: Vec<_> = (0..TASKS)
            .map(|i| {
                let (engine, handler) = (engine.clone(), handler.clone());
                tokio::spawn(async move {
                    let input = format!(r#"{{"hello": "Sleep", "ms": {SLEEP_MS}}}"#);
                    let mut request = common::request(&input, 64);
                    request.task_id = format!("t{i}");
                    request.limits.timeout = Duration::from_secs(60);
                    let delivery = common::local_delivery(&request);
                    handler.run(&engine, request, delivery).await
                })
            })
            .collect();
        for task in tasks {
            let report = task.await.unwrap();
            assert!(report.error.is_none(), "{:?}", report.error);
        }
        sampler.abort();
    });
    let peak = peak.load(Ordering::Relaxed);
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!("\n| case | resident |");
    println!("|---|---:|");
    println!(
        "| engine + scenarios handler loaded, idle | {:.0} MiB |",
        mib(before)
    );
    println!(
        "| peak with {TASKS} tasks sleeping in a host call | {:.0} MiB |",
        mib(peak)
    );
    println!(
        "| per task in flight | {:.0} KiB |",
        (peak - before) as f64 / 1024.0 / f64::from(TASKS)
    );
}
