//! Progress kept across retries (`[activity.progress]`, world 0.2 `checkpoint` and
//! `last-checkpoint`), against LocalStack's Step Functions and S3 and a folder store,
//! with the real `scenarios` component; and world 0.1 handlers beside 0.2 ones.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use aws_sdk_sfn::types::ExecutionStatus;
use serde_json::json;

use crate::support::emulator;
use crate::support::guests::guest;
use crate::support::invoke::invoke;
use crate::support::served::{self, Served};

/// A task state that passes the execution's id as the progress key and retries
/// `SfnWasmHost.Trap` once.
pub fn retrying_traps(activity: &str) -> serde_json::Value {
    json!({
        "Type": "Task", "Resource": activity, "TimeoutSeconds": 120, "HeartbeatSeconds": 60,
        "Parameters": {"hello.$": "$.hello", "executionId.$": "$$.Execution.Id"},
        "Retry": [{"ErrorEquals": ["SfnWasmHost.Trap"], "IntervalSeconds": 1, "MaxAttempts": 2}],
        "End": true,
    })
}

/// Serves `scenarios` with `[activity.progress]` = `progress` (TOML lines), runs one
/// `Count` execution (a first attempt traps at 5, the retry resumes) and returns the
/// host's log and what the execution answered.
fn count_with_progress(progress: &str) -> (Served, serde_json::Value) {
    let (runtime, client, activity, state_machine) =
        emulator::emulated_with("progress", retrying_traps);
    let dir = tempfile::tempdir().unwrap();
    let config = served::config(
        dir.path(),
        &emulator::endpoint(),
        &activity,
        &guest("scenarios"),
        &format!("[activity.progress]\n{progress}"),
        "",
    );
    let mut served = Served::start(&config);
    served.wait_for("worker:running");
    let execution = runtime.block_on(emulator::start(
        &client,
        &state_machine,
        json!({"hello": "Count"}),
    ));
    let ended = runtime.block_on(emulator::wait(&client, &execution, Duration::from_secs(60)));
    assert_eq!(ended.status, ExecutionStatus::Succeeded, "{ended:?}");
    served.wait_quiet(Duration::from_millis(200));
    // The first attempt trapped and the host said so; the second succeeded.
    assert_eq!(
        served.values("task:done", "outcome"),
        ["host_failure", "success"],
        "{:?}",
        served.events()
    );
    (served, ended.output.unwrap())
}

/// Waits (up to 5 s) until `done` holds.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(5), "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_retried_task_resumes_from_its_last_checkpoint_in_a_folder_which_goes_on_success() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("progress");
    let (_served, output) = count_with_progress(&format!(
        "key = \"/executionId\"\nstore = \"{}\"",
        store.display()
    ));
    assert_eq!(output, json!({"count": 10, "resumed_at": 5}));
    // keep_after_success = false (the default): the checkpoint is deleted.
    eventually("the checkpoint is deleted after success", || {
        std::fs::read_dir(&store).unwrap().next().is_none()
    });
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&store).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "the store folder is private");
    }
}

#[test]
fn a_retried_task_resumes_from_its_last_checkpoint_in_s3_kept_after_success() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let s3 = runtime.block_on(emulator::s3());
    let bucket = format!("progress-{:08x}", fastrand::u32(..));
    runtime
        .block_on(s3.create_bucket().bucket(&bucket).send())
        .expect("create bucket");
    let (_served, output) = count_with_progress(&format!(
        "key = \"/executionId\"\nstore = \"s3://{bucket}/checkpoints/\"\nkeep_after_success = true"
    ));
    assert_eq!(output, json!({"count": 10, "resumed_at": 5}));
    let listed = runtime
        .block_on(s3.list_objects_v2().bucket(&bucket).send())
        .expect("list");
    let keys: Vec<_> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].starts_with("checkpoints/checkpoint-"), "{keys:?}");
    let object = runtime
        .block_on(s3.get_object().bucket(&bucket).key(keys[0]).send())
        .expect("get");
    let body = runtime
        .block_on(object.body.collect())
        .unwrap()
        .into_bytes();
    assert_eq!(&body[..], b"10", "the last checkpoint stays");
}

#[test]
fn without_progress_a_checkpoint_is_unavailable_and_a_0_1_handler_still_runs() {
    let answer_of = |handler: &Path, input: &str| {
        invoke(handler)
            .args(["--no-cache", "--input", input])
            .run()
            .line
    };
    let answer = answer_of(&guest("scenarios"), r#"{"hello":"Count"}"#);
    assert_eq!(answer["error"], "SfnWasmHost.HandlerError", "{answer}");
    assert!(
        answer["cause"]
            .as_str()
            .unwrap()
            .contains("no progress key"),
        "{answer}"
    );
    let answer = answer_of(&guest("greet_v01"), r#"{"hello":"old"}"#);
    assert_eq!(
        answer["output"],
        json!({"greeting": "Hello, old", "world": "0.1.0"}),
        "{answer}"
    );
}

#[test]
fn check_names_the_world_version_of_each_handler() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[[activity]]\narn = \"arn:aws:states:us-east-1:000000000000:activity:old\"\nhandler = \"{}\"\n\
             [[activity]]\narn = \"arn:aws:states:us-east-1:000000000000:activity:new\"\nhandler = \"{}\"\n\
             [activity.progress]\nkey = \"/executionId\"\nstore = \"progress\"\n",
            guest("greet_v01").display(),
            guest("scenarios").display()
        ),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_sfn-wasm-host"))
        .arg("check")
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].contains("activity:old") && lines[0].contains("(world sfn:activity@0.1.0,"),
        "{stdout}"
    );
    assert!(
        stdout.contains("activity:new") && stdout.contains("(world sfn:activity@0.2.0,"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "progress: key /executionId in {}",
            dir.path().join("progress").display()
        )),
        "{stdout}"
    );
}
