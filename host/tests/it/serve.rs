//! `sfn-wasm-host serve` and `check` as processes: config errors, JSON logs, and shutdown
//! on SIGTERM with tasks in flight.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use aws_sdk_sfn::types::ExecutionStatus;
use serde_json::{Value, json};

use crate::support::emulator;
use crate::support::guests::guest;
use crate::support::served::Served;
use rustix::process::Signal;

fn host() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sfn-wasm-host"))
}

/// `command` with no AWS credentials anywhere the SDK's default chain looks (`nowhere`
/// is a path that does not exist).
fn without_credentials<'a>(command: &'a mut Command, nowhere: &Path) -> &'a mut Command {
    command
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", nowhere)
        .env("AWS_SHARED_CREDENTIALS_FILE", nowhere)
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

/// `check --remote` asks AWS what an offline `check` cannot: whether the credentials,
/// the activities and the S3 handler objects are there. One line per problem, naming
/// the key; exit 2.
#[test]
fn check_remote_names_what_aws_does_not_have() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = runtime.block_on(emulator::client());
    let activity = runtime.block_on(emulator::activity(&client, "remote"));
    let (s3, bucket) = crate::support::emulator::bucket(&runtime);
    crate::support::emulator::upload(&runtime, &s3, &bucket, "greet.wasm", &guest("greet"));
    let aws = format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n[host]\ncache = false\n",
        emulator::endpoint()
    );
    let source = |key: &str| format!("s3://{bucket}/{key}");
    let s3_table = |arn: &str, key: &str| {
        format!(
            "[[activity]]\narn = \"{arn}\"\nhandler = \"{}\"\n",
            source(key)
        )
    };
    let check = |config: &Path, remote: bool| {
        let mut command = host();
        command.arg("check");
        if remote {
            command.arg("--remote");
        }
        command.arg(config).output().unwrap()
    };
    let errors = |output: &std::process::Output| -> Vec<String> {
        String::from_utf8_lossy(&output.stderr)
            .lines()
            .filter(|line| line.starts_with("error:"))
            .map(str::to_owned)
            .collect()
    };

    let good_dir = tempfile::tempdir().unwrap();
    let good = write_config(
        good_dir.path(),
        &format!("{aws}{}", s3_table(&activity, "greet.wasm")),
    );
    let output = check(&good, true);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("ok: AWS knows every activity"),
        "{output:?}"
    );

    // A typo in an ARN and a handler object that is not there: a line each.
    let typo = format!("{activity}-typo");
    let bad_dir = tempfile::tempdir().unwrap();
    let bad = write_config(
        bad_dir.path(),
        &format!(
            "{aws}{}{}",
            activity_table(&typo, &guest("greet"), ""),
            s3_table(&activity, "missing.wasm")
        ),
    );
    let output = check(&bad, true);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let lines = errors(&output);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(
        lines[0].contains("`activity[0].arn`") && lines[0].contains("does not exist"),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("create-activity"), "{}", lines[0]);
    assert!(
        lines[1].contains("`activity[1].handler`") && lines[1].contains(&source("missing.wasm")),
        "{}",
        lines[1]
    );
    // Offline, nobody is asked: the typo passes (the deploy pipeline's check).
    let offline_dir = tempfile::tempdir().unwrap();
    let offline = write_config(
        offline_dir.path(),
        &format!("{aws}{}", activity_table(&typo, &guest("greet"), "")),
    );
    assert_eq!(check(&offline, false).status.code(), Some(0));

    // No credentials anywhere: one line naming `[aws]`, and nothing else asked.
    let nowhere = good_dir.path().join("nowhere");
    let output = without_credentials(host().args(["check", "--remote"]).arg(&good), &nowhere)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let lines = errors(&output);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains("`[aws]`: no AWS credentials"),
        "{}",
        lines[0]
    );
}

/// Without credentials, `serve` says so in one short line per failed poll (the SDK's
/// account of every provider it tried goes to debug), and what to do.
#[test]
fn no_credentials_is_one_short_line_per_poll() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"http://127.0.0.1:9\"\n{}",
            activity_table(ARN, &guest("greet"), "")
        ),
    );
    let nowhere = dir.path().join("nowhere");
    let child = without_credentials(
        host().args(["serve", "--log-format", "json"]).arg(&config),
        &nowhere,
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let _ = rustix::process::kill_process(rustix::process::Pid::from_child(&child), Signal::TERM);
    let output = child.wait_with_output().unwrap();
    let errors: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["event"] == "polling:error")
        .collect();
    assert!(!errors.is_empty(), "no polling:error in {output:?}");
    for error in &errors {
        let message = error["message"].as_str().unwrap();
        assert!(message.contains("no AWS credentials"), "{message}");
        assert!(message.contains("AWS_ACCESS_KEY_ID"), "{message}");
        assert!(!message.contains('\n') && message.len() < 400, "{message}");
    }
}

/// The profiling switch (`SFN_WASM_HOST_INSTANCE_ALLOCATION=on-demand`, for valgrind)
/// builds an engine that loads the handler, and says loudly that it is on; without it,
/// nothing is said.
#[test]
fn check_under_the_on_demand_profiling_switch_loads_and_warns() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &activity_table(ARN, &guest("greet"), ""));
    let warning =
        "SFN_WASM_HOST_INSTANCE_ALLOCATION=on-demand: instances are allocated without the pool";
    for (value, warned) in [(Some("on-demand"), true), (None, false)] {
        let mut command = host();
        command.arg("check").arg(&config);
        match value {
            Some(value) => command.env("SFN_WASM_HOST_INSTANCE_ALLOCATION", value),
            None => command.env_remove("SFN_WASM_HOST_INSTANCE_ALLOCATION"),
        };
        let output = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{value:?}: {stderr}");
        assert_eq!(stderr.contains(warning), warned, "{value:?}: {stderr}");
    }
}

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
    assert!(
        stdout.contains("grants: none (no network, environment or files)"),
        "{stdout}"
    );

    // Each grant on a line of its own; a from_env value is never printed.
    std::fs::create_dir(dir.path().join("reference-data")).unwrap();
    let grants = "allowed_outbound_hosts = [\"https://api.example.com\"]\n\
        [activity.env]\nGREETING = \"hello\"\nAPI_KEY = { from_env = \"SFN_WASM_HOST_TEST_CHECK_KEY\" }\n\
        [[activity.dir]]\nhost = \"reference-data\"\nguest = \"/data\"\n";
    let config = write_config(dir.path(), &activity_table(ARN, &guest("greet"), grants));
    let output = host()
        .arg("check")
        .arg(&config)
        .env("SFN_WASM_HOST_TEST_CHECK_KEY", "do-not-print-me")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    for line in [
        "grants: outbound https://api.example.com:443",
        "grants: env GREETING (literal)",
        "grants: env API_KEY (from_env SFN_WASM_HOST_TEST_CHECK_KEY)",
        "grants: dir /data -> ",
        "(read-only)",
    ] {
        assert!(stdout.contains(line), "{line:?} not in {stdout}");
    }
    assert!(
        !stdout.contains("do-not-print-me") && !stdout.contains("hello"),
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
        (
            activity_table(
                ARN,
                &guest("greet"),
                "[activity.env]\nAPI_KEY = { from_env = \"SFN_WASM_HOST_TEST_SURELY_UNSET\" }",
            ),
            "`activity[0].env.API_KEY`: reads SFN_WASM_HOST_TEST_SURELY_UNSET from the host's environment",
        ),
        (
            activity_table(
                ARN,
                &guest("greet"),
                "allowed_outbound_hosts = [\"ftp://x.example\"]",
            ),
            "`activity[0].allowed_outbound_hosts[0]`",
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
    let (runtime, client, activity, state_machine) = emulator::emulated("shutdown");
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
    let (runtime, client, activity, state_machine) = emulator::emulated("patient");
    let (mut served, _dir) = serve(&activity, "scenarios", 10.0);
    served.wait_for("worker:running");
    let execution = runtime.block_on(emulator::start(
        &client,
        &state_machine,
        json!({"hello": "Patient"}),
    ));
    served.wait_for("task:start");
    let signalled = Instant::now();
    served.signal(Signal::TERM);
    // The handler answers at once; the host itself keeps its other worker's poll open
    // until the grace ends, so that no task handed to it is stranded.
    let ended = runtime.block_on(emulator::wait(&client, &execution, Duration::from_secs(30)));
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "a cooperative handler should not need the grace: {:?}",
        signalled.elapsed()
    );
    assert_eq!(ended.status, ExecutionStatus::Succeeded, "{ended:?}");
    assert_eq!(ended.output, Some(json!({"stopped": "cancelled"})));
    served.exits_cleanly_within(signalled, Duration::from_secs(11));
}

#[test]
fn a_task_polled_during_shutdown_is_answered_not_stranded() {
    let (runtime, client, activity, state_machine) = emulator::emulated("late");
    let (mut served, _dir) = serve(&activity, "scenarios", 10.0);
    served.wait_for("worker:running");
    // Let both workers' long polls reach the emulator.
    std::thread::sleep(Duration::from_secs(1));
    let signalled = Instant::now();
    served.signal(Signal::TERM);
    std::thread::sleep(Duration::from_millis(500));
    let execution = runtime.block_on(emulator::start(
        &client,
        &state_machine,
        json!({"hello": "World"}),
    ));
    // A poll in flight at SIGTERM brings the task; the host answers it at once with
    // the retriable SfnWasmHost.Shutdown instead of dropping the poll (which would leave
    // the task to its 120 s timeout).
    let ended = runtime.block_on(emulator::wait(&client, &execution, Duration::from_secs(8)));
    assert_eq!(ended.status, ExecutionStatus::Failed, "{ended:?}");
    assert_eq!(
        ended.error.as_deref(),
        Some("SfnWasmHost.Shutdown"),
        "{ended:?}"
    );
    served.exits_cleanly_within(signalled, Duration::from_secs(11));
}

#[test]
fn sigterm_during_a_reload_compile_stops_at_once() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = runtime.block_on(emulator::client());
    let activity = runtime.block_on(emulator::activity(&client, "compiling"));
    let dir = tempfile::tempdir().unwrap();
    let handler = dir.path().join("handler.wasm");
    std::fs::copy(guest("greet"), &handler).unwrap();
    let body = format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n[host]\nshutdown_grace_seconds = 0.2\ncache = false\n{}",
        emulator::endpoint(),
        activity_table(&activity, &handler, "workers = 1"),
    );
    let config = write_config(dir.path(), &body);
    let mut served = Served::start(&config);
    served.wait_for("worker:running");
    // A 12 MB JavaScript component takes seconds to compile.
    let staged = dir.path().join("staged.wasm");
    std::fs::copy(crate::support::polyglot::component("greet-js"), &staged).unwrap();
    std::fs::rename(&staged, &handler).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let (took, code) = served.terminate();
    assert_eq!(code, 0);
    assert!(took < Duration::from_millis(1200), "exit took {took:?}");
    assert!(!served.events().contains(&"handler:swapped".to_owned()));
}

#[test]
fn with_no_host_table_the_compile_cache_is_on() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &activity_table(ARN, &guest("greet"), ""));
    let check = || {
        let output = host()
            .arg("check")
            .arg(&config)
            .env("XDG_CACHE_HOME", dir.path().join("xdg"))
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let first = check();
    assert!(first.contains("cache miss"), "{first}");
    let second = check();
    assert!(second.contains("cache hit"), "{second}");
    assert!(dir.path().join("xdg/sfn-wasm-host").is_dir());
}

#[test]
fn a_stalled_log_pipe_stops_neither_polls_nor_answers() {
    let (runtime, client, activity, state_machine) = emulator::emulated("chatty");
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n[host]\ncache = false\n{}",
        emulator::endpoint(),
        activity_table(&activity, &guest("pushy"), "workers = 2"),
    );
    let config = write_config(dir.path(), &body);
    /// Kills the host even when an assertion fails first.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    // Nobody reads the host's stdout: its pipe fills after 64 KiB.
    let _child = Killed(
        host()
            .args(["serve", "--log-format", "json"])
            .arg(&config)
            .env("RUST_LOG", "debug")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let executions: Vec<String> = (0..4)
        .map(|_| {
            runtime.block_on(emulator::start(
                &client,
                &state_machine,
                json!({"push": "chatty"}),
            ))
        })
        .collect();
    for execution in &executions {
        let ended = runtime.block_on(emulator::wait(&client, execution, Duration::from_secs(60)));
        assert_eq!(ended.status, ExecutionStatus::Succeeded, "{ended:?}");
    }
}

#[test]
fn compile_fills_the_cache_that_check_and_serve_read() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let compile = |handler: &Path| {
        host()
            .arg("compile")
            .arg(handler)
            .arg("--cache-dir")
            .arg(&cache)
            .output()
            .unwrap()
    };
    let output = compile(&guest("greet"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains(": compiled in"), "{stdout}");
    let output = compile(&guest("greet"));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("already compiled"),
        "{output:?}"
    );
    // Whatever the config's pool sizes, the entry is the one `check` (and `serve`) use.
    let body = format!(
        "[host]\ncache_dir = \"cache\"\n{}",
        activity_table(ARN, &guest("greet"), "workers = 7\nmemory_limit_mb = 300")
    );
    let config = write_config(dir.path(), &body);
    let output = host().arg("check").arg(&config).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("cache hit"), "{stdout}");

    let output = compile(&guest("other_world"));
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("does not implement"),
        "{output:?}"
    );
}

#[test]
fn check_refuses_more_workers_than_one_engine_can_hold() {
    let dir = tempfile::tempdir().unwrap();
    // 10,000 tasks at once fit (one memory slot each, as every guest toolchain makes).
    let fits = activity_table(
        ARN,
        &guest("greet"),
        "pollers = 100\nmax_concurrent_tasks = 10000",
    );
    let config = write_config(dir.path(), &fits);
    let output = host().arg("check").arg(&config).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("10000 tasks at once"),
        "{output:?}"
    );

    let body: String = (0..17)
        .map(|i| activity_table(&format!("{ARN}{i}"), &guest("greet"), "workers = 1000"))
        .collect();
    let slots = activity_table(
        ARN,
        &guest("greet"),
        "workers = 4\nmax_concurrent_tasks = 20000",
    );
    for body in [body, slots] {
        let config = write_config(dir.path(), &body);
        let output = host().arg("check").arg(&config).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("config.toml")
                && stderr.contains("`activity[*].max_concurrent_tasks` (else `workers`)")
                && stderr.contains("0 tasks at once"),
            "{stderr}"
        );
    }
}

/// `check` prints an activity's AWS grant (never a credential) and verifies that its
/// credentials resolve and its role can be assumed (LocalStack's STS); without
/// credentials it fails naming `activity[0].aws`.
#[test]
fn check_prints_the_aws_grant_and_verifies_its_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let aws = "[activity.aws]\nservices = [\"s3\", \"sqs\"]\nrole_arn = \"arn:aws:iam::000000000000:role/handler\"\n";
    let config = write_config(
        dir.path(),
        &format!(
            "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n{}",
            crate::support::emulator::endpoint(),
            activity_table(ARN, &guest("greet"), aws)
        ),
    );
    let output = host().arg("check").arg(&config).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stdout.contains(
            "grants: aws s3, sqs in us-east-1, signed by the host as role arn:aws:iam::000000000000:role/handler"
        ),
        "{stdout}"
    );

    let nowhere = dir.path().join("nowhere");
    let output = without_credentials(host().arg("check").arg(&config), &nowhere)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`activity[0].aws`: the host has no AWS credentials"),
        "{stderr}"
    );
}
