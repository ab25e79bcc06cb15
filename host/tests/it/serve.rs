//! `sfn-wasm-host serve` and `check` as processes: config errors, JSON logs, and shutdown
//! on SIGTERM with tasks in flight.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aws_sdk_sfn::types::ExecutionStatus;
use serde_json::{Value, json};

use crate::emulator;
use crate::guests::guest;

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

/// A `serve` process whose JSON log lines arrive on a channel.
struct Served {
    child: Child,
    lines: mpsc::Receiver<Value>,
    _dir: tempfile::TempDir,
}

impl Served {
    fn start(activity: &str, handler: &str, grace_seconds: f64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let body = format!(
            "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n[host]\nshutdown_grace_seconds = {grace_seconds}\n{}",
            emulator::endpoint(),
            activity_table(
                activity,
                &guest(handler),
                "workers = 2\ntask_timeout_seconds = 60\nmemory_limit_mb = 64"
            ),
        );
        let config = write_config(dir.path(), &body);
        let mut child = host()
            .args(["serve", "--log-format", "json"])
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                if send.send(value).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            _dir: dir,
        }
    }

    /// Waits for a log line with `event` = `name`.
    fn wait_for(&self, name: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {name} event"));
            if line["event"] == name {
                return line;
            }
        }
    }

    fn terminate(&mut self) -> (Duration, i32) {
        let started = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        (started.elapsed(), exit.code().expect("exited, not killed"))
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn sigterm_during(input: Value, grace_seconds: f64) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = runtime.block_on(emulator::client());
    let activity = runtime.block_on(emulator::activity(&client, "shutdown"));
    let state_machine = runtime.block_on(emulator::state_machine(&client, &activity, None));
    let mut served = Served::start(&activity, "scenarios", grace_seconds);
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
    let mut served = Served::start(&activity, "scenarios", 10.0);
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
