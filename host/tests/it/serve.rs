//! `sfn-wasm-host serve` and `check` as processes: config errors, JSON logs, and shutdown
//! on SIGTERM with tasks in flight.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use aws_sdk_sfn::types::ExecutionStatus;
use serde_json::{Value, json};

use crate::emulator;
use crate::guests::guest;
use crate::served::Served;

fn host() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sfn-wasm-host"))
}

fn write_config(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(&path, body).unwrap();
    path
}

fn activity_table(arn: &str, handler: &Path, extra: &str) -> String {
    format!(
        "[[activity]]\narn = \"{arn}\"\nhandler = \"{}\"\n{extra}\n",
        handler.display()
    )
}

const ARN: &str = "arn:aws:states:us-east-1:000000000000:activity:greet";

#[test]
fn check_reports_what_would_be_served() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &activity_table(ARN, &guest("greet"), "workers = 3"),
    );
    let output = host().arg("check").arg(&config).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(ARN) && stdout.contains("3 workers") && stdout.contains("sha256 "),
        "{stdout}"
    );
}

#[test]
fn config_and_handler_errors_exit_2_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let other = guest("other_world");
    let cases = [
        (
            activity_table(ARN, &guest("greet"), "workers = 0"),
            "`activity[0].workers`",
        ),
        (
            activity_table(ARN, &guest("greet"), "colour = \"blue\""),
            "unknown field `colour`",
        ),
        (activity_table(ARN, &other, ""), "`activity[0].handler`: "),
        (
            activity_table(ARN, Path::new("nope.wasm"), ""),
            "nope.wasm is not a file",
        ),
    ];
    for subcommand in ["check", "serve"] {
        for (body, expected) in &cases {
            let config = write_config(dir.path(), body);
            let output = host().arg(subcommand).arg(&config).output().unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(
                output.status.code(),
                Some(2),
                "{subcommand} {body}: {stderr}"
            );
            assert!(stderr.contains("config.toml"), "{subcommand}: {stderr}");
            assert!(
                stderr.contains(expected),
                "{subcommand}: {expected:?} not in {stderr}"
            );
        }
    }
}

fn serve(activity: &str, handler: &str, grace_seconds: f64) -> (Served, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n[host]\nshutdown_grace_seconds = {grace_seconds}\ncache = false\n{}",
        emulator::endpoint(),
        activity_table(
            activity,
            &guest(handler),
            "workers = 2\ntask_timeout_seconds = 60\nmemory_limit_mb = 64"
        ),
    );
    let config = write_config(dir.path(), &body);
    (Served::start(&config), dir)
}

fn sigterm_during(input: Value, grace_seconds: f64) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = runtime.block_on(emulator::client());
    let activity = runtime.block_on(emulator::activity(&client, "shutdown"));
    let state_machine = runtime.block_on(emulator::state_machine(&client, &activity, None));
    let (mut served, _dir) = serve(&activity, "scenarios", grace_seconds);
    served.wait_for("worker:running");
    let execution = runtime.block_on(emulator::start(&client, &state_machine, input));
    let start = served.wait_for("task:start");
    assert!(
        start["task_id"].is_string() && start["handler_digest"].is_string(),
        "{start}"
    );
    assert!(
        start["activity"] == activity && start["worker"].is_string(),
        "{start}"
    );

    let (took, code) = served.terminate();
    assert_eq!(code, 0);
    let limit = Duration::from_secs_f64(grace_seconds) + Duration::from_secs(1);
    assert!(
        took < limit,
        "exit took {took:?}; grace is {grace_seconds} s"
    );

    let ended = runtime.block_on(emulator::wait(&client, &execution, Duration::from_secs(30)));
    assert_eq!(ended.status, ExecutionStatus::Failed, "{ended:?}");
    assert_eq!(
        ended.error.as_deref(),
        Some("SfnWasmHost.Shutdown"),
        "{ended:?}"
    );
}

#[test]
fn sigterm_during_a_sleep_answers_shutdown_after_the_grace() {
    sigterm_during(json!({"hello": "Sleep", "ms": 60_000}), 1.0);
}

#[test]
fn sigterm_during_a_loop_answers_shutdown_after_the_grace() {
    sigterm_during(json!({"hello": "Loop"}), 1.0);
}

#[test]
fn sigterm_lets_a_cooperative_handler_answer_by_itself() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = runtime.block_on(emulator::client());
    let activity = runtime.block_on(emulator::activity(&client, "patient"));
    let state_machine = runtime.block_on(emulator::state_machine(&client, &activity, None));
    let (mut served, _dir) = serve(&activity, "scenarios", 10.0);
    served.wait_for("worker:running");
    let execution = runtime.block_on(emulator::start(
        &client,
        &state_machine,
        json!({"hello": "Patient"}),
    ));
    served.wait_for("task:start");
    let (took, code) = served.terminate();
    assert_eq!(code, 0);
    assert!(
        took < Duration::from_secs(10),
        "a cooperative handler should not need the grace: {took:?}"
    );
    let ended = runtime.block_on(emulator::wait(&client, &execution, Duration::from_secs(30)));
    assert_eq!(ended.status, ExecutionStatus::Succeeded, "{ended:?}");
    assert_eq!(ended.output, Some(json!({"stopped": "cancelled"})));
}
