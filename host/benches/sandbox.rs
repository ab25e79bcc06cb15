//! Per-task sandbox overhead, and handler load time. Prints a table.
//!
//! Run: `scripts/bench.sh` (or `cargo bench -p sfn-wasm-host --bench sandbox` after
//! `scripts/build-guests.sh` and `scripts/build-polyglot.sh`). All cases run in one
//! process, one after the other, on a single-threaded tokio runtime, so ratios against the
//! native baseline are comparable even on a noisy machine.
//!
//! - `native`: a Rust closure doing the greet handler's JSON work, no sandbox.
//! - `greet, ...`: `Handler::run` for the real `greet` component (instantiate, `handle`,
//!   answer, drop) with the pooling allocator as the host configures it, with no memory
//!   kept resident between tasks, and with the on-demand allocator.
//! - `greet-js` / `greet-py`: the same greet handler written in JavaScript and Python
//!   (when `scripts/build-polyglot.sh` has built them), with and without kept memory.
//! - `compile` / `precompiled`: loading the handler from `.wasm` vs from an artifact.
//! - `grants set-up, none granted`: the per-task work capabilities added for a task whose
//!   activity grants nothing (apply the empty grants, the wasi:http state and outbound
//!   hook in the `Store`), to compare with a whole task in the same run.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sfn_wasm_host::engine::{EngineConfig, Handler, WasmEngine};

mod common;

const TASKS: usize = 20_000;
const LOADS: usize = 10;
const INPUT: &str = r#"{"hello": "World"}"#;

struct Row {
    name: &'static str,
    samples: Vec<Duration>,
}

impl Row {
    fn percentile(&self, p: f64) -> Duration {
        let index = ((self.samples.len() - 1) as f64 * p).round() as usize;
        self.samples[index]
    }
}

fn measure(name: &'static str, iterations: usize, mut f: impl FnMut()) -> Row {
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = Instant::now();
        f();
        samples.push(started.elapsed());
    }
    samples.sort();
    Row { name, samples }
}

/// Runs `tasks` greet tasks (after a 5 % warm-up) on a fresh engine built from `config`.
fn task_row(
    name: &'static str,
    config: EngineConfig,
    wasm: &[u8],
    runtime: &tokio::runtime::Runtime,
    tasks: usize,
) -> Row {
    let engine = WasmEngine::new(EngineConfig {
        max_concurrent_tasks: 4,
        max_memory_bytes: 256 << 20,
        ..config
    })
    .expect("engine");
    let handler = Handler::load_bytes(&engine, Path::new(name), wasm).expect("the handler loads");
    let run = || {
        let request = common::request(INPUT, 256);
        let delivery = common::local_delivery(&request);
        let report = runtime.block_on(handler.run(&engine, request, delivery));
        assert!(report.error.is_none(), "{:?}", report.error);
        black_box(report);
    };
    for _ in 0..tasks / 20 {
        run();
    }
    measure(name, tasks, run)
}

fn main() {
    common::build_guests(&[]);
    let root = common::root();
    let wasm =
        std::fs::read(root.join("target/wasm32-wasip2/release/greet.wasm")).expect("greet.wasm");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    #[derive(Deserialize)]
    struct Input {
        hello: String,
    }
    #[derive(Serialize)]
    struct Output {
        greeting: String,
    }
    let native = || {
        let input: Input = serde_json::from_str(black_box(INPUT)).unwrap();
        let output = serde_json::to_string(&Output {
            greeting: format!("Hello, {}", input.hello),
        })
        .unwrap();
        black_box(output);
    };
    let native = measure("native closure (baseline)", TASKS, native);
    let pooling = EngineConfig::default();
    let nothing_kept = EngineConfig {
        keep_resident_bytes: Some(0),
        ..EngineConfig::default()
    };
    // The policy sweep: how much stays resident, and whether only dirtied pages are reset.
    let kept = |bytes: usize, scan: bool| EngineConfig {
        keep_resident_bytes: Some(bytes),
        scan_dirty_pages: scan,
        ..EngineConfig::default()
    };
    let on_demand = EngineConfig {
        pooling: false,
        ..EngineConfig::default()
    };
    let mut rows = vec![
        native,
        task_row("greet, pooling", pooling.clone(), &wasm, &runtime, TASKS),
        task_row(
            "greet, pooling, nothing kept resident",
            nothing_kept.clone(),
            &wasm,
            &runtime,
            TASKS,
        ),
        task_row(
            "greet, pooling, 16 MiB kept, first bytes zeroed (no dirty-page scan)",
            kept(16 << 20, false),
            &wasm,
            &runtime,
            TASKS,
        ),
        task_row(
            "greet, pooling, 2 MiB kept, dirty pages reset",
            kept(2 << 20, true),
            &wasm,
            &runtime,
            TASKS,
        ),
        task_row(
            "greet, pooling, 64 MiB kept, dirty pages reset",
            kept(64 << 20, true),
            &wasm,
            &runtime,
            TASKS,
        ),
        task_row(
            "greet, on-demand allocator",
            on_demand,
            &wasm,
            &runtime,
            TASKS,
        ),
    ];
    // Handlers from other languages, if scripts/build-polyglot.sh has built them.
    let polyglot = [
        (
            "greet-js (ComponentizeJS), pooling",
            "greet-js, pooling, nothing kept resident",
            "greet-js",
        ),
        (
            "greet-py (componentize-py), pooling",
            "greet-py, pooling, nothing kept resident",
            "greet-py",
        ),
    ];
    for (kept_name, bare_name, file) in polyglot {
        if let Ok(wasm) = std::fs::read(root.join("target/polyglot").join(format!("{file}.wasm"))) {
            rows.push(task_row(
                kept_name,
                pooling.clone(),
                &wasm,
                &runtime,
                TASKS / 10,
            ));
            rows.push(task_row(
                bare_name,
                nothing_kept.clone(),
                &wasm,
                &runtime,
                TASKS / 10,
            ));
        }
    }

    let engine = WasmEngine::new(EngineConfig::default()).expect("engine");
    let path = Path::new("greet.wasm");
    let compile = measure("load: compile .wasm", LOADS, || {
        black_box(Handler::load_bytes(&engine, path, &wasm).expect("compiles"));
    });
    let artifact = Handler::precompile(&engine, path, &wasm).expect("precompiles");
    let digest = sfn_wasm_host::engine::Digest::of(&wasm);
    let precompiled = measure("load: precompiled artifact", LOADS * 10, || {
        // SAFETY: the artifact was written just above by this engine.
        black_box(
            unsafe { Handler::load_precompiled(&engine, path, &artifact, digest.clone()) }
                .expect("loads"),
        );
    });

    let grants = sfn_wasm_host::grants::Grants::default();
    let mut builder = wasmtime_wasi::WasiCtxBuilder::new();
    let task_id: std::sync::Arc<str> = std::sync::Arc::from("bench");
    let grants_setup = measure("grants set-up, none granted", TASKS, || {
        use sfn_wasm_host::engine::{Capability, InstanceBuilder, TaskInfo};
        let activity = std::sync::Arc::from(black_box("arn:aws:states:us-east-1:0:activity:a"));
        let lines = std::sync::Arc::default();
        let task = TaskInfo {
            activity_arn: &activity,
            task_id: &task_id,
            input: "{}",
        };
        let mut instance = InstanceBuilder::new(task, &mut builder, &lines);
        grants.prepare(&mut instance).expect("nothing to open");
        black_box(instance);
        black_box(wasmtime_wasi_http::WasiHttpCtx::new());
    });

    rows.extend([compile, precompiled, grants_setup]);
    let baseline = rows[0].percentile(0.5).as_secs_f64();
    println!(
        "\ngreet.wasm: {} bytes; per-task rows after a 5 % warm-up\n",
        wasm.len()
    );
    println!("| case | n | median | p99 | median vs native |");
    println!("|---|---:|---:|---:|---:|");
    for row in &rows {
        let median = row.percentile(0.5);
        println!(
            "| {} | {} | {} | {} | {:.1}x |",
            row.name,
            row.samples.len(),
            show(median),
            show(row.percentile(0.99)),
            median.as_secs_f64() / baseline
        );
    }
}

fn show(d: Duration) -> String {
    let micros = d.as_secs_f64() * 1e6;
    if micros >= 10_000.0 {
        format!("{:.1} ms", micros / 1000.0)
    } else {
        format!("{micros:.2} µs")
    }
}
