//! The answer outbox (`[host] outbox_dir`), against LocalStack through a proxy whose
//! network can be cut, with the real `scenarios` component: an answer the host could not
//! deliver outlives the process (`kill -9`, or a shutdown that gave it up) and is
//! delivered by the next start, without running the guest again.

use std::path::Path;
use std::time::{Duration, Instant};

use aws_sdk_sfn::types::ExecutionStatus;
use rustix::process::Signal;
use serde_json::json;

use crate::support::emulator;
use crate::support::guests::guest;
use crate::support::proxy::Proxy;
use crate::support::served::{self, Served};

/// The entries in the outbox `dir`: the records of its log (`store.log`), as the next
/// start would find them.
fn entries(dir: &Path) -> usize {
    sfn_wasm_host::store::read_log(&dir.join(sfn_wasm_host::store::LOG)).map_or(0, |objects| {
        objects
            .iter()
            .filter(|(name, _)| name.ends_with(".json"))
            .count()
    })
}

/// Serves `scenarios` through a proxy, cuts the network while a task answers, stops the
/// host with `stop`, restores the network and starts a new host on the same outbox. The
/// task holds an idempotency key: the recovered answer settles it, so a later task with
/// the key gets the answer without running the guest.
fn answer_outlives(stop: Signal) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let proxy = runtime.block_on(Proxy::start());
    let client = runtime.block_on(emulator::client());
    let activity = runtime.block_on(emulator::activity(&client, "outbox"));
    let machine = runtime.block_on(emulator::state_machine(&client, &activity, None));
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    let config = served::config(
        dir.path(),
        &proxy.endpoint(),
        &activity,
        &guest("scenarios"),
        "[activity.idempotency]\nkey = \"/orderId\"\nstore = \"answers\"",
        "outbox_dir = \"outbox\"\nshutdown_grace_seconds = 1",
    );
    let mut first = Served::start(&config);
    first.wait_for("worker:running");
    let execution = runtime.block_on(emulator::start(
        &client,
        &machine,
        json!({"hello": "Sleep", "ms": 1000, "orderId": "o-1"}),
    ));
    first.wait_for("task:start");
    proxy.cut();
    // The answer's first attempt failed: it is on disk, private, before any retry.
    first.wait_for("task:retrying");
    assert_eq!(entries(&outbox), 1);
    #[cfg(unix)]
    for file in ["store.log", ".key"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(outbox.join(file))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }
    first.signal(stop);
    let _ = first.child_wait();
    assert_eq!(entries(&outbox), 1, "the answer stays for the next start");
    proxy.restore();

    let mut second = Served::start(&config);
    let ended = runtime.block_on(emulator::wait(&client, &execution, Duration::from_secs(60)));
    assert_eq!(ended.status, ExecutionStatus::Succeeded, "{ended:?}");
    assert_eq!(ended.output, Some(json!({"slept_ms": 1000})));
    let delivered = second.wait_for("task:success");
    assert_eq!(delivered["recovered"], true, "{delivered}");
    let done = second.wait_for("task:done");
    assert_eq!(done["recovered"], true, "{done}");
    assert_eq!(done["outcome"], "success", "{done}");
    // The key holds the recovered answer: a duplicate gets it, and no guest runs.
    let duplicate = runtime.block_on(emulator::start(
        &client,
        &machine,
        json!({"hello": "Sleep", "ms": 1000, "orderId": "o-1"}),
    ));
    let ended = runtime.block_on(emulator::wait(&client, &duplicate, Duration::from_secs(60)));
    assert_eq!(ended.status, ExecutionStatus::Succeeded, "{ended:?}");
    assert_eq!(ended.output, Some(json!({"slept_ms": 1000})));
    let done = second.wait_for("task:done");
    assert_eq!(done["deduplicated"], true, "{done}");
    second.wait_quiet(Duration::from_millis(200));
    assert!(
        !second.events().iter().any(|e| e == "task:start"),
        "the guest ran once: {:?}",
        second.events()
    );
    let started = Instant::now();
    while entries(&outbox) > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the settled entry is removed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_answer_outlives_kill_9() {
    answer_outlives(Signal::KILL);
}

#[test]
fn an_answer_given_up_at_shutdown_is_delivered_by_the_next_start() {
    answer_outlives(Signal::TERM);
}

/// One outbox folder per host: a second host started on a folder a running host holds
/// waits for it, then exits with a config error naming the key, rather than deliver
/// the first one's entries beside it (and compact them away under it).
#[test]
fn a_second_host_on_a_held_outbox_folder_exits_with_a_config_error() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = runtime.block_on(emulator::client());
    let activity = runtime.block_on(emulator::activity(&client, "outbox-held"));
    let dir = tempfile::tempdir().unwrap();
    let config = served::config(
        dir.path(),
        &emulator::endpoint(),
        &activity,
        &guest("greet"),
        "",
        "outbox_dir = \"outbox\"\nshutdown_grace_seconds = 1",
    );
    let mut first = Served::start(&config);
    first.wait_for("worker:running");
    let second = std::process::Command::new(env!("CARGO_BIN_EXE_sfn-wasm-host"))
        .arg("serve")
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`host.outbox_dir`: InUse:") && stderr.contains("a folder of its own"),
        "{stderr}"
    );
    let (_, code) = first.terminate();
    assert_eq!(code, 0);
    // Gone, it let go of the folder: the next host starts on it.
    let mut third = Served::start(&config);
    third.wait_for("worker:running");
    assert_eq!(third.terminate().1, 0);
}
