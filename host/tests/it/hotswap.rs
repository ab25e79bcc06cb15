//! Hot swap in a running `serve` (against LocalStack, real components), and the
//! precompiled-artifact cache through `check`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use aws_sdk_sfn::types::ExecutionStatus;
use serde_json::{Value, json};
use sfn_wasm_host::ids::sha256_hex;

use crate::support::emulator;
use crate::support::guests::guest;
use crate::support::served::Served;

fn digest(path: &Path) -> String {
    sha256_hex(&std::fs::read(path).unwrap())
}

/// Replaces `to` with a copy of `from` by an atomic rename, as deploy tools do.
fn deploy(from: &Path, to: &Path) {
    let temp = to.with_extension("tmp");
    std::fs::copy(from, &temp).unwrap();
    std::fs::rename(&temp, to).unwrap();
}

/// A running host serving a fresh activity from `dir/handler.wasm`, a copy of `initial`.
struct Swap {
    runtime: tokio::runtime::Runtime,
    client: aws_sdk_sfn::Client,
    state_machine: String,
    served: Served,
    handler: PathBuf,
    _dir: tempfile::TempDir,
}

impl Swap {
    fn start(initial: &Path, activity_extra: &str) -> Self {
        Self::start_from(initial, activity_extra, None)
    }

    /// As [`start`](Self::start); with `relative`, `serve` is given the config's path
    /// relative to a working folder: `config.toml`, run in the config's folder (`app/`),
    /// or `app/config.toml`, run in the folder above it.
    fn start_from(initial: &Path, activity_extra: &str, relative: Option<&str>) -> Self {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let client = runtime.block_on(emulator::client());
        let activity = runtime.block_on(emulator::activity(&client, "swap"));
        let state_machine = runtime.block_on(emulator::state_machine(&client, &activity, None));
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("app");
        std::fs::create_dir(&app).unwrap();
        let handler = app.join("handler.wasm");
        std::fs::copy(initial, &handler).unwrap();
        let config = app.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n[host]\ncache_dir = \"cache\"\n\
                 [[activity]]\narn = \"{activity}\"\nhandler = \"handler.wasm\"\nworkers = 2\n{activity_extra}\n",
                emulator::endpoint()
            ),
        )
        .unwrap();
        let mut served = match relative {
            Some("config.toml") => Served::start_in(Some(&app), Path::new("config.toml")),
            Some(path) => Served::start_in(Some(dir.path()), Path::new(path)),
            None => Served::start(&config),
        };
        let loaded = served.wait_for("handler:loaded");
        assert_eq!(
            loaded["handler_digest"],
            digest(initial).as_str(),
            "{loaded}"
        );
        served.wait_for("worker:running");
        Self {
            runtime,
            client,
            state_machine,
            served,
            handler,
            _dir: dir,
        }
    }

    fn start_execution(&self, input: Value) -> String {
        self.runtime
            .block_on(emulator::start(&self.client, &self.state_machine, input))
    }

    fn output_of(&self, execution: &str) -> Value {
        let ended = self.runtime.block_on(emulator::wait(
            &self.client,
            execution,
            Duration::from_secs(60),
        ));
        assert_eq!(ended.status, ExecutionStatus::Succeeded, "{ended:?}");
        ended.output.unwrap()
    }

    fn run(&self, hello: &str) -> Value {
        let execution = self.start_execution(json!({"hello": hello}));
        self.output_of(&execution)
    }

    fn wait_swapped_to(&mut self, wasm: &Path) -> Value {
        let want = digest(wasm);
        self.served.wait_until("handler:swapped", |line| {
            line["new_digest"] == want.as_str()
        })
    }
}

/// `cd /srv/app && sfn-wasm-host serve config.toml`, then `cd /srv && sfn-wasm-host
/// serve app/config.toml`: every path the config names is made absolute at load, so the
/// watcher sees the handler replaced, and records land in the config's folder, not the
/// working one.
#[test]
fn a_relative_config_path_swaps_and_records_beside_the_config() {
    let mut swap = Swap::start_from(&guest("greet"), "", Some("config.toml"));
    deploy(&guest("greet_v2"), &swap.handler);
    swap.wait_swapped_to(&guest("greet_v2"));
    assert_eq!(
        swap.run("Two"),
        json!({"greeting": "Hi, Two", "version": 2})
    );
    drop(swap);

    let mut swap = Swap::start_from(
        &guest("greet"),
        "record = \"records\"",
        Some("app/config.toml"),
    );
    assert_eq!(swap.run("One"), json!({"greeting": "Hello, One"}));
    deploy(&guest("greet_v2"), &swap.handler);
    swap.wait_swapped_to(&guest("greet_v2"));
    assert_eq!(
        swap.run("Two"),
        json!({"greeting": "Hi, Two", "version": 2})
    );
    let app = swap.handler.parent().unwrap().to_owned();
    let records = app.join("records");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(&records).map_or(0, Iterator::count) < 2
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        std::fs::read_dir(&records).map_or(0, Iterator::count),
        2,
        "both tasks recorded in {}",
        records.display()
    );
    assert!(!app.parent().unwrap().join("records").exists());
}

#[test]
fn a_new_file_serves_new_tasks_while_running_ones_finish_on_the_old_version() {
    let mut swap = Swap::start(&guest("scenarios"), "");
    let v1 = digest(&guest("scenarios"));
    let slow = swap.start_execution(json!({"hello": "Sleep", "ms": 1500}));
    let started = swap.served.wait_for("task:start");
    assert_eq!(started["handler_digest"], v1.as_str());

    deploy(&guest("greet_v2"), &swap.handler);
    let swapped = swap.wait_swapped_to(&guest("greet_v2"));
    assert_eq!(swapped["old_digest"], v1.as_str(), "{swapped}");
    assert!(swapped["compile_ms"].is_u64(), "{swapped}");

    assert_eq!(
        swap.run("World"),
        json!({"greeting": "Hi, World", "version": 2})
    );
    // The task that started under v1 is answered by v1 (v2 would not know `Sleep`).
    assert_eq!(swap.output_of(&slow), json!({"slept_ms": 1500}));
    swap.served.wait_quiet(Duration::from_millis(200));
    let digests = swap.served.values("task:success", "handler_digest");
    assert!(
        digests.contains(&v1) && digests.contains(&digest(&guest("greet_v2"))),
        "{digests:?}"
    );
}

#[test]
fn bad_files_are_rejected_and_the_old_version_keeps_serving() {
    let mut swap = Swap::start(&guest("greet"), "");
    let good = std::fs::read(guest("greet")).unwrap();
    let bad: [(&str, Vec<u8>, &str); 3] = [
        (
            "truncated",
            good[..good.len() / 2].to_vec(),
            "not a valid WebAssembly component",
        ),
        (
            "not wasm",
            b"#!/bin/sh\necho hello\n".to_vec(),
            "not a WebAssembly component",
        ),
        (
            "other world",
            std::fs::read(guest("other_world")).unwrap(),
            "does not implement the sfn:activity/handler world",
        ),
    ];
    for (what, bytes, reason) in bad {
        std::fs::write(&swap.handler, &bytes).unwrap();
        let rejected = swap.served.wait_for("handler:rejected");
        assert!(
            rejected["reason"].as_str().unwrap().contains(reason),
            "{what}: {rejected}"
        );
        assert_eq!(
            swap.run(what),
            json!({"greeting": format!("Hello, {what}")}),
            "{what}"
        );
    }
    swap.served.wait_quiet(Duration::from_millis(200));
    assert!(
        !swap
            .served
            .events()
            .iter()
            .any(|e| e == "handler:swapped" || e == "task:failure"),
        "{:?}",
        swap.served.events()
    );
}

#[test]
fn sighup_reloads_an_unwatched_handler() {
    let mut swap = Swap::start(&guest("greet"), "watch = false");
    deploy(&guest("greet_v2"), &swap.handler);
    // Not watched: the file change alone does nothing.
    assert_eq!(swap.run("before"), json!({"greeting": "Hello, before"}));
    swap.served.signal(rustix::process::Signal::HUP);
    swap.wait_swapped_to(&guest("greet_v2"));
    assert_eq!(
        swap.run("after"),
        json!({"greeting": "Hi, after", "version": 2})
    );
}

#[test]
fn rapid_writes_end_on_the_last_version() {
    let mut swap = Swap::start(&guest("greet"), "");
    let versions = [guest("greet"), guest("greet_v2")];
    for i in 0..10 {
        // In place, not renamed: the harder case for a watcher.
        std::fs::copy(&versions[i % 2], &swap.handler).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    // The last write (i = 9) was v2; the host must end on it.
    let last = digest(&guest("greet_v2"));
    // Idle polls log nothing at the default level, so quiet means the reloads are done.
    swap.served.wait_quiet(Duration::from_secs(2));
    let swaps = swap.served.values("handler:swapped", "new_digest");
    assert_eq!(swaps.last(), Some(&last), "{:?}", swap.served.events());
    assert_eq!(
        swap.run("last"),
        json!({"greeting": "Hi, last", "version": 2})
    );
}

fn check(config: &Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_sfn-wasm-host"))
        .arg("check")
        .arg(config)
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn the_cache_is_filled_used_and_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[host]\ncache_dir = \"cache\"\n[[activity]]\narn = \"arn:aws:states:us-east-1:000000000000:activity:c\"\nhandler = \"{}\"\n",
            guest("greet").display()
        ),
    )
    .unwrap();
    assert!(check(&config).contains("cache miss"));
    assert!(check(&config).contains("cache hit"));

    // The entries, not the folder's MAC key (`.key`).
    let entries: Vec<_> = std::fs::read_dir(dir.path().join("cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|ext| ext == "cwasm"))
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let mut bytes = std::fs::read(&entries[0]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&entries[0], &bytes).unwrap();
    assert!(check(&config).contains("cache rebuilt"));
    assert!(
        check(&config).contains("cache hit"),
        "the bad entry was replaced"
    );

    std::fs::write(&entries[0], b"SFNWASMC").unwrap();
    assert!(
        check(&config).contains("cache rebuilt"),
        "a truncated entry is rebuilt too"
    );
}

/// A handler built against world 0.1 and one built against 0.2 swap both ways while
/// tasks arrive: every task succeeds, answered in the shape of the version it ran on, and
/// tasks after a swap run the new version.
#[test]
fn world_0_1_and_0_2_handlers_swap_both_ways_under_load() {
    let old = guest("greet_v01");
    let new = guest("greet");
    let mut swap = Swap::start(&old, "");
    let mut executions = Vec::new();
    for (n, (from, to)) in [(&old, &new), (&new, &old), (&old, &new)]
        .into_iter()
        .enumerate()
    {
        for i in 0..4 {
            executions.push(swap.start_execution(json!({"hello": format!("load {n}.{i}")})));
        }
        assert_ne!(digest(from), digest(to));
        deploy(to, &swap.handler);
        swap.wait_swapped_to(to);
        let world = if to == &old { Some("0.1.0") } else { None };
        let answer = swap.run(&format!("after swap {n}"));
        assert_eq!(
            answer["greeting"],
            format!("Hello, after swap {n}"),
            "{answer}"
        );
        assert_eq!(
            answer.get("world").and_then(|w| w.as_str()),
            world,
            "{answer}"
        );
    }
    // Each load task was answered whole by one version: 0.1's shape has `world`, 0.2's
    // (the SDK's greet) has only the greeting.
    for execution in &executions {
        let output = swap.output_of(execution);
        let greeting = output["greeting"].as_str().unwrap_or_default().to_owned();
        assert!(greeting.starts_with("Hello, load "), "{output}");
        let shapes = [
            json!({"greeting": greeting, "world": "0.1.0"}),
            json!({"greeting": greeting}),
        ];
        assert!(shapes.contains(&output), "{output}");
    }
    // Every answer came from one of the two versions, by the digest the host logged.
    swap.served.wait_quiet(Duration::from_millis(200));
    let digests = swap.served.values("task:success", "handler_digest");
    assert_eq!(digests.len(), 15, "{digests:?}");
    assert!(
        digests
            .iter()
            .all(|d| *d == digest(&old) || *d == digest(&new)),
        "{digests:?}"
    );
}
