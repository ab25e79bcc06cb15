//! `scripts/dev.sh`: a newcomer's own handler against the emulator, as the README says to
//! run it (the emulator `scripts/test.sh` started, and this build's host).

use std::path::Path;
use std::process::Command;

use crate::support::emulator;
use crate::support::guests::guest;

fn dev(args: &[&str]) -> (i32, String, String) {
    let (code, stdout, stderr, _) = dev_written(args);
    (code, stdout, stderr)
}

/// As [`dev`], with the config it wrote (`target/dev/config.toml`), read in its turn.
fn dev_written(args: &[&str]) -> (i32, String, String, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    dev_in(root, args)
}

/// One `scripts/dev.sh` at a time: its files are `target/dev/` (the config it writes,
/// the host's log), which two runs at once would share.
pub static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `scripts/dev.sh ARGS` run from the folder `cwd`: its exit code, output, and the config
/// it wrote.
fn dev_in(cwd: &Path, args: &[&str]) -> (i32, String, String, String) {
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let output = Command::new(root.join("scripts/dev.sh"))
        .current_dir(cwd)
        .args(args)
        .env("SFN_WASM_HOST", env!("CARGO_BIN_EXE_sfn-wasm-host"))
        .env("LOCALSTACK_ENDPOINT", emulator::endpoint())
        .output()
        .expect("run scripts/dev.sh");
    let written = std::fs::read_to_string(root.join("target/dev/config.toml")).unwrap_or_default();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        written,
    )
}

#[test]
fn dev_runs_a_handler_once_per_input_and_says_what_it_ran() {
    let greet = guest("greet");
    let (code, stdout, stderr) = dev(&[
        greet.to_str().unwrap(),
        "--input",
        r#"{"hello": "One"}"#,
        "--input",
        r#"{"hello": "Two"}"#,
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("emulator: {}", emulator::endpoint())),
        "{stdout}"
    );
    for name in ["One", "Two"] {
        assert!(
            stdout.lines().any(|line| line.starts_with("SUCCEEDED")
                && line.contains(&format!(r#"{{"greeting":"Hello, {name}"}}"#))),
            "{stdout}"
        );
    }
    assert!(stdout.contains("ran: aws --endpoint-url"), "{stdout}");
    assert!(stdout.contains("stepfunctions start-execution"), "{stdout}");
    assert!(stdout.contains("exited with 0 after SIGTERM"), "{stdout}");
}

#[test]
fn dev_serves_a_callback_from_a_queue() {
    let greet = guest("greet");
    let (code, stdout, stderr, written) = dev_written(&[
        greet.to_str().unwrap(),
        "--callback",
        "--input",
        r#"{"hello": "Queue"}"#,
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout
            .lines()
            .any(|line| line.starts_with("SUCCEEDED")
                && line.contains(r#"{"greeting":"Hello, Queue"}"#)),
        "{stdout}"
    );
    assert!(stdout.contains("sqs create-queue"), "{stdout}");
    assert!(stdout.contains("waitForTaskToken"), "{stdout}");
    assert!(
        written.contains("[[callback]]") && written.contains("queue_url = "),
        "{written}"
    );
    assert!(!written.contains("[[activity]]"), "{written}");
    assert!(stdout.contains("exited with 0 after SIGTERM"), "{stdout}");
}

#[test]
fn dev_serves_with_the_users_own_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[host]\nshutdown_grace_seconds = 2\n\n[[activity]]\narn = \"arn:aws:states:eu-west-1:123456789012:activity:mine\"\n\
         handler = \"mine.wasm\"\nmemory_limit_mb = 64\n\n[activity.env]\nGREETING = \"hi\"\n\n\
         [activity.polling]\nmax_attempts = 3\n",
    )
    .unwrap();
    let greet = guest("greet");
    let (code, stdout, stderr, written) = dev_written(&[
        greet.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--input",
        r#"{"hello": "Mine"}"#,
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains(r#"{"greeting":"Hello, Mine"}"#), "{stdout}");
    assert!(
        written.contains("memory_limit_mb = 64"),
        "the config it served with: {written}"
    );
    assert!(written.contains("memory_limit_mb = 64"), "{written}");
    assert!(written.contains("[activity.polling]"), "{written}");
    assert!(written.contains("\"GREETING\" = \"hi\""), "{written}");
}

/// From the handler's own project folder, with paths relative to it (as a team runs it
/// after building there): the handler and the config are found where the caller is.
#[test]
fn dev_takes_paths_relative_to_where_it_is_run() {
    let project = tempfile::tempdir().unwrap();
    std::fs::copy(guest("greet"), project.path().join("orders.wasm")).unwrap();
    std::fs::write(
        project.path().join("config.toml"),
        "[[activity]]\narn = \"arn:aws:states:us-east-1:123456789012:activity:orders\"\n\
         handler = \"orders.wasm\"\n",
    )
    .unwrap();
    let (code, stdout, stderr, _) = dev_in(
        project.path(),
        &[
            "orders.wasm",
            "--config",
            "config.toml",
            "--input",
            r#"{"hello": "Here"}"#,
        ],
    );
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains(r#"{"greeting":"Hello, Here"}"#), "{stdout}");
    let (code, _, stderr, _) = dev_in(project.path(), &["orders.wasm", "--config", "nope.toml"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("--config needs a config file (nope.toml"),
        "{stderr}"
    );
}

#[test]
fn dev_refuses_a_missing_handler_with_usage() {
    let (code, _, stderr) = dev(&["no-such.wasm"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("usage: scripts/dev.sh HANDLER.wasm"),
        "{stderr}"
    );
    assert!(stderr.contains("no-such.wasm is not a file"), "{stderr}");
}
