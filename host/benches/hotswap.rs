//! Hot-swap latency and handler start-up time. Prints a table.
//!
//! Run: `scripts/bench.sh` (it builds the guests, including the large `bulky` one).
//!
//! - swap: from the atomic rename of a new handler file to the first task answered by
//!   the new version, in process (debounce + read + compile or cache + swap + one task).
//!   Polling Step Functions is not included: LocalStack hands a queued task to an idle
//!   poller up to ~1 s later, which would drown the host's own share.
//! - start-up: loading a handler with an empty cache (compile and store) vs a filled one.
//!
//! Two modules: `greet` (small) and `bulky` (a few MiB of generated code, standing in
//! for the large components other languages produce).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sfn_wasm_host::engine::{ArtifactCache, CacheStatus, EngineConfig, Handler, WasmEngine};
use sfn_wasm_host::events::{Emitter, Events};
use sfn_wasm_host::reload::{ReloadTarget, Reloader};
use sfn_wasm_host::rollout::VersionChooser;
use sfn_wasm_host::source::HandlerSource;

mod common;

const SWAPS: usize = 6;
const STARTS: usize = 5;

/// Swaps `dir/handler.wasm` between two versions `SWAPS` times; returns the latencies.
async fn swaps(
    engine: &Arc<WasmEngine>,
    versions: [&Path; 2],
    cache: Option<ArtifactCache>,
) -> Vec<Duration> {
    let dir = tempfile::tempdir().unwrap();
    let handler = dir.path().join("handler.wasm");
    std::fs::copy(versions[0], &handler).unwrap();
    let emitter = Emitter::for_activity(Events::default(), Arc::from("bench"));
    let chooser = Arc::new(VersionChooser::new(
        Handler::load(engine, &handler, cache.as_ref())
            .unwrap()
            .handler,
        None,
        emitter.clone(),
    ));
    let target = ReloadTarget {
        source: HandlerSource::File(handler.clone()),
        watch: true,
        poll: Duration::from_secs(30),
        pin: None,
        max_bytes: u64::MAX,
        versions: chooser.clone(),
        tag: None,
        emitter,
    };
    let reloader = Reloader::start(vec![target], engine.clone(), cache, None).unwrap();
    let mut latencies = Vec::new();
    for i in 1..=SWAPS {
        let next = versions[i % 2];
        let want = sfn_wasm_host::engine::Digest::of(&std::fs::read(next).unwrap());
        let temp = dir.path().join("incoming.tmp");
        std::fs::copy(next, &temp).unwrap();
        let started = Instant::now();
        std::fs::rename(&temp, &handler).unwrap();
        let current = loop {
            let current = chooser.choose().handler;
            if *current.digest() == want {
                break current;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "no swap");
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let request = common::request(r#"{"hello": "bench"}"#, 64);
        let delivery = common::local_delivery(&request);
        let report = current.run(engine, request, delivery.clone()).await;
        latencies.push(started.elapsed());
        assert!(report.error.is_none(), "{:?}", report.error);
        assert!(delivery.answered());
        // Let the watcher settle before the next write.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    reloader.stop();
    latencies
}

fn starts(engine: &WasmEngine, wasm: &Path, n: usize) -> (Vec<Duration>, Vec<Duration>) {
    let (mut cold, mut cached) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let dir = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::open(&dir.path().join("cache"), engine).unwrap();
        let miss = Handler::load(engine, wasm, Some(&cache)).unwrap();
        assert_eq!(miss.cache, CacheStatus::Miss);
        cold.push(miss.elapsed);
        let hit = Handler::load(engine, wasm, Some(&cache)).unwrap();
        assert_eq!(hit.cache, CacheStatus::Hit);
        cached.push(hit.elapsed);
    }
    (cold, cached)
}

fn row(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let median = samples[samples.len() / 2];
    let max = samples[samples.len() - 1];
    println!(
        "| {name} | {} | {:.1} ms | {:.1} ms |",
        samples.len(),
        ms(median),
        ms(max)
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    common::build_guests(&["-p", "bulky"]);
    let guest = common::guest;
    let (greet, greet_v2, bulky) = (guest("greet"), guest("greet_v2"), guest("bulky"));
    // A second version of bulky: the same code plus an empty custom section, so it has
    // another digest but costs the same to compile.
    let bulky_v2 = std::env::temp_dir().join("sfn-wasm-host-bench-bulky-v2.wasm");
    let mut bytes = std::fs::read(&bulky).unwrap();
    bytes.extend_from_slice(&[0, 6, 5, b'b', b'e', b'n', b'c', b'h']);
    std::fs::write(&bulky_v2, &bytes).unwrap();

    let engine = Arc::new(WasmEngine::new(EngineConfig::default()).unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let size = |p: &Path| std::fs::metadata(p).unwrap().len() as f64 / (1 << 20) as f64;
    println!(
        "\ngreet.wasm {:.2} MiB, bulky.wasm {:.2} MiB\n",
        size(&greet),
        size(&bulky)
    );
    println!("| case | n | median | max |");
    println!("|---|---:|---:|---:|");
    row(
        "swap greet, compiled (no cache)",
        runtime.block_on(swaps(&engine, [&greet, &greet_v2], None)),
    );
    row(
        "swap bulky, compiled (no cache)",
        runtime.block_on(swaps(&engine, [&bulky, &bulky_v2], None)),
    );
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = || Some(ArtifactCache::open(cache_dir.path(), &engine).unwrap());
    // Both versions get cached on the first swaps; later ones are swaps back to known digests.
    row(
        "swap bulky, cached (swap back)",
        runtime
            .block_on(swaps(&engine, [&bulky, &bulky_v2], cache()))
            .split_off(2),
    );
    let (cold, cached) = starts(&engine, &greet, STARTS);
    row("start-up greet, empty cache", cold);
    row("start-up greet, cached", cached);
    let (cold, cached) = starts(&engine, &bulky, STARTS);
    row("start-up bulky, empty cache", cold);
    row("start-up bulky, cached", cached);

    // JavaScript and Python handlers (12-18 MiB), if scripts/build-polyglot.sh has built
    // them: a deploy that runs `sfn-wasm-host compile` on the new file before moving it
    // into place, so the swap loads machine code from the cache.
    for name in ["greet-js", "greet-py"] {
        let wasm = common::root()
            .join("target/polyglot")
            .join(format!("{name}.wasm"));
        if !wasm.exists() {
            continue;
        }
        let v2 = std::env::temp_dir().join(format!("sfn-wasm-host-bench-{name}-v2.wasm"));
        let mut bytes = std::fs::read(&wasm).unwrap();
        bytes.extend_from_slice(&[0, 6, 5, b'b', b'e', b'n', b'c', b'h']);
        std::fs::write(&v2, &bytes).unwrap();
        let precompiled = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::open(precompiled.path(), &engine).unwrap();
        let (cold, _) = starts(&engine, &wasm, 1);
        // What `compile` does for each version, ahead of the swaps.
        for version in [&wasm, &v2] {
            Handler::load(&engine, version, Some(&cache)).unwrap();
        }
        println!(
            "| {name} ({:.1} MiB): compile, as `sfn-wasm-host compile` does | 1 | {:.1} ms | |",
            size(&wasm),
            ms(cold[0])
        );
        row(
            &format!("swap {name}, precompiled"),
            runtime.block_on(swaps(&engine, [&wasm, &v2], Some(cache))),
        );
    }
}
