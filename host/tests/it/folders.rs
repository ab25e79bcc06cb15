//! The host's own folders (`cache_dir`, `outbox_dir`, folder stores, `record`, handler
//! folders) are never reachable from a guest, and what the host finds in them is used
//! only when the host wrote it: `check` and `serve` refuse an overlapping
//! `[[activity.dir]]` grant (exit 2) or a folder others can write; a cache entry copied
//! from another module's is refused and compiled afresh; an outbox entry written by hand
//! is never sent.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use aws_sdk_sfn::types::ExecutionStatus;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::support;
use crate::support::emulator;
use crate::support::guests::guest;
use crate::support::invoke::Invoked;
use crate::support::served::{self, Served};

const ARN: &str = "arn:aws:states:us-east-1:000000000000:activity:folders";

fn host() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sfn-wasm-host"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `dir/config.toml` with `[host]` lines `host_lines` and one activity of `greet`
/// followed by `activity_lines`.
fn config(dir: &Path, host_lines: &str, activity_lines: &str) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[host]\n{host_lines}\n[[activity]]\narn = \"{ARN}\"\nhandler = \"{}\"\n{activity_lines}\n",
            guest("greet").display()
        ),
    )
    .unwrap();
    path
}

fn grant(host: &str, writable: bool) -> String {
    format!("[[activity.dir]]\nhost = \"{host}\"\nguest = \"/data\"\nwritable = {writable}\n")
}

#[test]
fn check_and_serve_refuse_a_grant_over_a_host_folder() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("cache/sub")).unwrap();
    std::fs::create_dir_all(dir.path().join("state/outbox")).unwrap();
    // The guest copying compiled code into the cache: a writable grant of the folder.
    let path = config(dir.path(), "cache_dir = \"cache\"", &grant("cache", true));
    for command in ["check", "serve"] {
        let output = host().arg(command).arg(&path).output().unwrap();
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{command}: {stderr}");
        let cache = dir.path().join("cache");
        assert!(
            stderr.contains(&format!(
                "`activity[0].dir[0]`: {} is `host.cache_dir`, {}, a folder the host keeps for itself (compiled handlers)",
                cache.display(),
                cache.display()
            )),
            "{command}: {stderr}"
        );
    }
    // Inside it, or around the outbox, read-only: refused all the same.
    for (host_lines, granted, names) in [
        (
            "cache_dir = \"cache\"",
            "cache/sub",
            "lies inside `host.cache_dir`",
        ),
        (
            "outbox_dir = \"state/outbox\"",
            "state",
            "contains `host.outbox_dir`",
        ),
    ] {
        let path = config(dir.path(), host_lines, &grant(granted, false));
        let output = host().arg("check").arg(&path).output().unwrap();
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("`activity[0].dir[0]`") && stderr.contains(names),
            "{stderr}"
        );
    }
    // A folder of its own is fine.
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let path = config(dir.path(), "cache_dir = \"cache\"", &grant("data", true));
    let output = host().arg("check").arg(&path).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
}

#[test]
fn a_host_folder_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let open = |name: &str| {
        let path = dir.path().join(name);
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        path
    };
    // The outbox (and a folder store, a record folder): `check` and `serve` stop.
    let outbox = open("outbox");
    let path = config(dir.path(), "outbox_dir = \"outbox\"", "");
    let output = host().arg("check").arg(&path).output().unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "`host.outbox_dir`: refusing {}: others can write to it (mode 777); run `chmod go-w {}` or use another folder",
            outbox.display(),
            outbox.display()
        )),
        "{stderr}"
    );
    // The cache only saves time: it is not used, with a warning, and every handler is
    // compiled.
    let cache = open("cache");
    let path = config(dir.path(), "cache_dir = \"cache\"", "");
    let output = host().arg("check").arg(&path).output().unwrap();
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("cache disabled"), "{stdout}");
    assert!(
        stderr.contains(&format!(
            "refusing the cache folder {}: others can write to it (mode 777)",
            cache.display()
        )),
        "{stderr}"
    );
    assert!(!cache.join(".key").exists(), "nothing is written there");
}

/// `invoke HANDLER` with the cache in `cache`: the answer line and stderr.
fn invoke(handler: &Path, cache: &Path) -> (Value, String) {
    let Invoked { line, stderr, .. } = support::invoke::invoke(handler)
        .input(r#"{"hello": "X"}"#)
        .arg("--cache-dir")
        .arg(cache)
        .run();
    (line, stderr)
}

/// The cache entry of the module `wasm`.
fn entry(cache: &Path, wasm: &Path) -> PathBuf {
    let digest = format!("{:x}", Sha256::digest(std::fs::read(wasm).unwrap()));
    let found: Vec<PathBuf> = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with(&digest) && name.ends_with(".cwasm")
        })
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found.into_iter().next().unwrap()
}

#[test]
fn a_cache_entry_copied_from_another_module_is_refused_and_compiled_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (greet, other) = (guest("greet"), guest("greet_v2"));
    let greeting = json!({"status": "success", "output": {"greeting": "Hello, X"}});
    assert_eq!(invoke(&greet, &cache).0, greeting);
    assert_eq!(
        invoke(&other, &cache).0["output"],
        json!({"greeting": "Hi, X", "version": 2})
    );
    let (mine, theirs) = (entry(&cache, &greet), entry(&cache, &other));
    // Another module's compiled code, under this module's name: a valid entry (its own
    // MAC), for another digest.
    std::fs::copy(&theirs, &mine).unwrap();
    let (line, stderr) = invoke(&greet, &cache);
    assert_eq!(
        line, greeting,
        "the module that runs is the one pinned: {stderr}"
    );
    assert!(stderr.contains("cache:rejected"), "{stderr}");
    assert!(stderr.contains(&mine.display().to_string()), "{stderr}");
    let (line, stderr) = invoke(&greet, &cache);
    assert_eq!(line, greeting);
    assert!(
        !stderr.contains("cache:rejected"),
        "the entry was compiled afresh: {stderr}"
    );

    // One byte changed.
    let mut bytes = std::fs::read(&mine).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&mine, &bytes).unwrap();
    let (line, stderr) = invoke(&greet, &cache);
    assert_eq!(line, greeting);
    assert!(stderr.contains("cache:rejected"), "{stderr}");
}

/// A task token of `activity`, taken from Step Functions by the test itself, for an
/// execution of `machine` that stays open until it is answered.
async fn a_token(client: &aws_sdk_sfn::Client, activity: &str, machine: &str) -> (String, String) {
    let execution = emulator::start(client, machine, json!({"hello": "X"})).await;
    for _ in 0..20 {
        let task = client
            .get_activity_task()
            .activity_arn(activity)
            .worker_name("folders-test")
            .send()
            .await
            .unwrap();
        if let Some(token) = task.task_token.filter(|t| !t.is_empty()) {
            return (execution, token);
        }
    }
    panic!("no task for {execution}");
}

#[test]
fn a_planted_outbox_entry_is_never_sent() {
    let (runtime, client, activity, machine) = emulator::emulated("planted");
    let (forged_execution, forged_token) = runtime.block_on(a_token(&client, &activity, &machine));
    let (plain_execution, plain_token) = runtime.block_on(a_token(&client, &activity, &machine));
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    std::fs::create_dir(&outbox).unwrap();
    let name = |token: &str| format!("{:x}.json", Sha256::digest(token.as_bytes()));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let entry = |token: &str| {
        json!({
            "activity": activity, "task_id": "planted", "handler_digest": "00",
            "written_at_ms": now_ms, "token": token,
            "answer": {"status": "success", "output": "{\"forged\":true}"},
        })
        .to_string()
    };
    // As entries were before they carried a MAC, and with a MAC made up.
    std::fs::write(outbox.join(name(&plain_token)), entry(&plain_token)).unwrap();
    std::fs::write(
        outbox.join(name(&forged_token)),
        format!(
            "sfn-wasm-host outbox v1 {}\n{}",
            "00".repeat(32),
            entry(&forged_token)
        ),
    )
    .unwrap();

    let path = served::config(
        dir.path(),
        &emulator::endpoint(),
        &activity,
        &guest("greet"),
        "",
        "outbox_dir = \"outbox\"",
    );
    let mut served = Served::start(&path);
    let mut refused = Vec::new();
    for _ in 0..2 {
        let line = served.wait_for("outbox:refused");
        assert_eq!(line["level"], "WARN", "{line}");
        refused.push(line["file"].as_str().unwrap().to_owned());
    }
    refused.sort();
    let mut planted = vec![
        outbox.join(name(&plain_token)).display().to_string(),
        outbox.join(name(&forged_token)).display().to_string(),
    ];
    planted.sort();
    assert_eq!(refused, planted);
    served.wait_for("worker:running");
    served.wait_quiet(Duration::from_millis(500));
    assert!(
        !served.events().iter().any(|e| e.starts_with("task:")),
        "nothing was delivered: {:?}",
        served.events()
    );
    for token in [&plain_token, &forged_token] {
        assert!(!outbox.join(name(token)).exists());
        assert!(outbox.join(format!("{}.refused", name(token))).exists());
    }
    served.terminate();
    // Step Functions never heard of the forged answers: the tasks are still open.
    for (execution, token) in [
        (&plain_execution, &plain_token),
        (&forged_execution, &forged_token),
    ] {
        let described = runtime
            .block_on(client.describe_execution().execution_arn(execution).send())
            .unwrap();
        assert_eq!(described.status, ExecutionStatus::Running, "{execution}");
        runtime
            .block_on(
                client
                    .send_task_failure()
                    .task_token(token)
                    .error("Test.Done")
                    .send(),
            )
            .unwrap();
    }
}
