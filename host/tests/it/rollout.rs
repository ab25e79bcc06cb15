//! Rollouts against LocalStack (Step Functions and S3) with real components: handlers
//! from S3 and HTTP sources, the sha256 pin, canary rollback and promotion, and record
//! then replay.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_sfn::types::ExecutionStatus;
use serde_json::{Value, json};
use sfn_wasm_host::ids::sha256_hex;

use crate::support::emulator::{self, bucket, upload};
use crate::support::guests::guest;
use crate::support::served::Served;

fn digest(path: &Path) -> String {
    sha256_hex(&std::fs::read(path).unwrap())
}

/// A running host on a fresh activity, with `handler_line` (`handler = ...` and
/// whatever else the activity table needs) in its config.
pub(crate) struct Host {
    runtime: tokio::runtime::Runtime,
    client: aws_sdk_sfn::Client,
    state_machine: String,
    pub(crate) served: Served,
    /// The `handler:loaded` line.
    pub(crate) loaded: Value,
    /// The admin server.
    admin: std::net::SocketAddr,
    dir: tempfile::TempDir,
}

impl Host {
    fn config(dir: &Path, activity: &str, activity_lines: &str) -> PathBuf {
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n[host]\ncache_dir = \"cache\"\nadmin_listen = \"127.0.0.1:0\"\n\
                 [[activity]]\narn = \"{activity}\"\nworkers = 4\n{activity_lines}\n",
                emulator::endpoint()
            ),
        )
        .unwrap();
        config
    }

    /// `prepare` gets the config's folder before the host starts (to put handlers there).
    pub(crate) fn start(activity_lines: &str, prepare: impl FnOnce(&Path)) -> Self {
        Self::start_with_env(activity_lines, prepare, &[])
    }

    /// [`Host::start`] with `vars` added to the host's environment.
    pub(crate) fn start_with_env(
        activity_lines: &str,
        prepare: impl FnOnce(&Path),
        vars: &[(&str, &str)],
    ) -> Self {
        let (runtime, client, activity, state_machine) = emulator::emulated("rollout");
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path());
        let config = Self::config(dir.path(), &activity, activity_lines);
        let mut served = Served::start_with_env(&config, vars);
        let loaded = served.wait_for("handler:loaded");
        let listening = served.wait_line(|line| line["admin"].is_string());
        let admin = listening["admin"].as_str().unwrap().parse().unwrap();
        served.wait_for("worker:running");
        Self {
            runtime,
            client,
            state_machine,
            served,
            loaded,
            admin,
            dir,
        }
    }

    /// Runs an execution per input, all at once; how each ended, in order.
    fn run_all(&self, inputs: &[Value]) -> Vec<emulator::Ended> {
        self.runtime.block_on(async {
            let mut executions = Vec::new();
            for input in inputs {
                executions
                    .push(emulator::start(&self.client, &self.state_machine, input.clone()).await);
            }
            let mut ended = Vec::new();
            for execution in executions {
                ended.push(emulator::wait(&self.client, &execution, Duration::from_secs(60)).await);
            }
            ended
        })
    }

    /// This activity's entry in `/status`.
    fn status(&self) -> Value {
        let (code, body) = crate::support::admin::get(self.admin, "/status");
        assert_eq!(code, 200, "{body}");
        let page: Value = serde_json::from_str(&body).unwrap();
        page["activities"][0].clone()
    }

    pub(crate) fn run(&self, hello: &str) -> Value {
        let ended = self.run_all(&[json!({ "hello": hello })]).remove(0);
        assert_eq!(ended.status, ExecutionStatus::Succeeded, "{ended:?}");
        ended.output.unwrap()
    }
}

/// Compiles `wasms` into `dir/cache`, as a deploy does before it uploads (so that a
/// swap measures the source, not the compiler).
fn precompile(dir: &Path, wasms: &[PathBuf]) {
    let status = Command::new(env!("CARGO_BIN_EXE_sfn-wasm-host"))
        .arg("compile")
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .args(wasms)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_handler_in_s3_is_served_and_a_new_object_version_picked_up() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (s3, bucket) = bucket(&runtime);
    upload(
        &runtime,
        &s3,
        &bucket,
        "handlers/greet.wasm",
        &guest("greet"),
    );
    let poll = 1;
    let mut host = Host::start(
        &format!("handler = \"s3://{bucket}/handlers/greet.wasm\"\nsource_poll_seconds = {poll}"),
        |dir| precompile(dir, &[guest("greet"), guest("greet_v2")]),
    );
    assert_eq!(
        host.loaded["handler_digest"],
        digest(&guest("greet")).as_str()
    );
    // How long the emulator takes from StartExecution to a task at a worker, for the
    // pickup figure below.
    let started = Instant::now();
    let execution = host.runtime.block_on(emulator::start(
        &host.client,
        &host.state_machine,
        json!({"hello": "World"}),
    ));
    host.served.wait_for("task:start");
    let dispatch = started.elapsed();
    let ended = host.runtime.block_on(emulator::wait(
        &host.client,
        &execution,
        Duration::from_secs(60),
    ));
    assert_eq!(ended.output, Some(json!({"greeting": "Hello, World"})));

    upload(
        &runtime,
        &s3,
        &bucket,
        "handlers/greet.wasm",
        &guest("greet_v2"),
    );
    let uploaded = Instant::now();
    let v2 = digest(&guest("greet_v2"));
    let swapped = host
        .served
        .wait_until("handler:swapped", |line| line["new_digest"] == v2.as_str());
    let picked_up = uploaded.elapsed();
    let execution = host.runtime.block_on(emulator::start(
        &host.client,
        &host.state_machine,
        json!({"hello": "World"}),
    ));
    host.served
        .wait_until("task:start", |line| line["handler_digest"] == v2.as_str());
    let first_task = uploaded.elapsed();
    eprintln!(
        "S3 upload -> handler:swapped {} ms; -> first task started on it {} ms (an execution \
         started after the swap; before the upload, StartExecution -> task at a worker took {} ms) \
         ({swapped})",
        picked_up.as_millis(),
        first_task.as_millis(),
        dispatch.as_millis()
    );
    let answered = host
        .runtime
        .block_on(emulator::wait(
            &host.client,
            &execution,
            Duration::from_secs(60),
        ))
        .output
        .unwrap();
    assert_eq!(answered, json!({"greeting": "Hi, World", "version": 2}));
    assert!(
        picked_up < Duration::from_secs(poll + 1),
        "picked up {picked_up:?} after the upload; source_poll_seconds = {poll}"
    );
    // The unchanged object is not read again: no further swap or rejection.
    host.served.wait_quiet(Duration::from_millis(2500));
    let events = host.served.events();
    assert_eq!(
        events.iter().filter(|e| *e == "handler:swapped").count(),
        1,
        "{events:?}"
    );
    assert!(
        !events.iter().any(|e| e == "handler:rejected"),
        "{events:?}"
    );
}

#[test]
fn a_module_with_another_digest_than_the_pin_is_rejected_and_the_old_one_serves() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (s3, bucket) = bucket(&runtime);
    upload(&runtime, &s3, &bucket, "greet.wasm", &guest("greet"));
    let pin = digest(&guest("greet"));
    let lines = format!(
        "handler = \"s3://{bucket}/greet.wasm\"\nsha256 = \"{pin}\"\nsource_poll_seconds = 1"
    );
    let mut host = Host::start(&lines, |_| {});
    assert_eq!(host.loaded["handler_digest"], pin.as_str());

    upload(&runtime, &s3, &bucket, "greet.wasm", &guest("greet_v2"));
    let rejected = host.served.wait_for("handler:rejected");
    let v2 = digest(&guest("greet_v2"));
    assert_eq!(rejected["digest"], v2.as_str(), "{rejected}");
    let reason = rejected["reason"].as_str().unwrap();
    assert!(
        reason.contains(&pin) && reason.contains(&v2) && reason.contains("sha256"),
        "{reason}"
    );
    assert_eq!(host.run("World"), json!({"greeting": "Hello, World"}));
    // Reported once, not at every poll.
    host.served.wait_quiet(Duration::from_millis(2500));
    let events = host.served.events();
    assert_eq!(
        events.iter().filter(|e| *e == "handler:rejected").count(),
        1,
        "{events:?}"
    );

    // At start-up a pin mismatch stops the host, naming the key.
    let config = Host::config(
        host.dir.path(),
        "arn:aws:states:us-east-1:000000000000:activity:pinned",
        &lines,
    );
    let check = Command::new(env!("CARGO_BIN_EXE_sfn-wasm-host"))
        .arg("check")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(
        stderr.contains("`activity[0].sha256`") && stderr.contains(&v2),
        "{stderr}"
    );
}

/// A one-file HTTP server with ETags: answers `304` to a matching `If-None-Match`.
/// Counts the bodies it sent.
fn serve_file(body: Arc<Mutex<Vec<u8>>>, bodies_sent: Arc<Mutex<u32>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/handler.wasm", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut if_none_match = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("if-none-match")
                {
                    if_none_match = Some(value.trim().to_owned());
                }
            }
            let body = body.lock().unwrap().clone();
            let etag = format!("\"{}\"", &sha256_hex(&body)[..16]);
            if if_none_match.as_deref() == Some(etag.as_str()) {
                let _ = write!(
                    stream,
                    "HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\nConnection: close\r\n\r\n"
                );
            } else {
                *bodies_sent.lock().unwrap() += 1;
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nETag: {etag}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(&body);
            }
        }
    });
    url
}

#[test]
fn a_handler_behind_a_url_is_fetched_again_only_when_its_etag_changes() {
    let body = Arc::new(Mutex::new(std::fs::read(guest("greet")).unwrap()));
    let sent = Arc::new(Mutex::new(0));
    let url = serve_file(body.clone(), sent.clone());
    let mut host = Host::start(
        &format!("handler = \"{url}\"\nsource_poll_seconds = 1"),
        |_| {},
    );
    assert_eq!(host.run("World"), json!({"greeting": "Hello, World"}));
    // Polls in between are answered 304.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(*sent.lock().unwrap(), 1);
    *body.lock().unwrap() = std::fs::read(guest("greet_v2")).unwrap();
    let v2 = digest(&guest("greet_v2"));
    host.served
        .wait_until("handler:swapped", |line| line["new_digest"] == v2.as_str());
    assert_eq!(
        host.run("World"),
        json!({"greeting": "Hi, World", "version": 2})
    );
}

/// Replaces `to` with a copy of `from` by an atomic rename, as deploy tools do.
fn deploy(from: &Path, to: &Path) {
    let temp = to.with_extension("tmp");
    std::fs::copy(from, &temp).unwrap();
    std::fs::rename(&temp, to).unwrap();
}

#[test]
fn a_canary_that_fails_every_task_is_rolled_back_and_later_tasks_run_the_old_version() {
    let rollout = "[activity.rollout]\ncanary_percent = 50\npromote_after_tasks = 50\n\
                   max_failure_rate_increase = 0.2\nrollback_min_tasks = 4";
    let mut host = Host::start(&format!("handler = \"handler.wasm\"\n{rollout}"), |dir| {
        std::fs::copy(guest("greet"), dir.join("handler.wasm")).unwrap();
    });
    let (stable, canary) = (digest(&guest("greet")), digest(&guest("scenarios")));
    // `scenarios` panics on this input; `greet` answers it.
    let input = json!({"hello": "Error"});
    deploy(&guest("scenarios"), &host.dir.path().join("handler.wasm"));
    let started = host.served.wait_for("handler:canary");
    assert_eq!(started["old_digest"], stable.as_str(), "{started}");
    assert_eq!(started["new_digest"], canary.as_str(), "{started}");
    assert_eq!(started["percent"], 50, "{started}");

    let ended = host.run_all(&vec![input.clone(); 12]);
    let rolled = host.served.wait_for("handler:rolledback");
    assert_eq!(rolled["old_digest"], stable.as_str(), "{rolled}");
    assert_eq!(rolled["new_digest"], canary.as_str(), "{rolled}");
    assert_eq!(rolled["canary_failure_rate"], 1.0, "{rolled}");
    assert_eq!(rolled["stable_failure_rate"], 0.0, "{rolled}");
    assert_eq!(rolled["max_failure_rate_increase"], 0.2, "{rolled}");
    assert!(rolled["canary_tasks"].as_u64().unwrap() >= 4, "{rolled}");
    let failed = ended
        .iter()
        .filter(|e| e.status == ExecutionStatus::Failed)
        .count();
    assert!(
        (4..=6).contains(&failed),
        "{failed} of 12 failed: {ended:?}"
    );

    // Every task after the rollback runs the stable version.
    host.served.wait_quiet(Duration::from_millis(200));
    let before = host.served.values("task:done", "handler_digest").len();
    let ended = host.run_all(&vec![input; 6]);
    assert!(
        ended.iter().all(|e| e.status == ExecutionStatus::Succeeded),
        "{ended:?}"
    );
    host.served.wait_quiet(Duration::from_millis(500));
    let after = host.served.values("task:done", "handler_digest");
    assert_eq!(after[before..], vec![stable.clone(); 6], "{after:?}");
    // The same file is not tried again.
    assert_eq!(
        host.served
            .events()
            .iter()
            .filter(|e| *e == "handler:canary")
            .count(),
        1
    );
}

#[test]
fn a_good_canary_is_promoted_after_its_tasks() {
    let rollout = "[activity.rollout]\ncanary_percent = 50\npromote_after_tasks = 5";
    let mut host = Host::start(&format!("handler = \"handler.wasm\"\n{rollout}"), |dir| {
        std::fs::copy(guest("greet"), dir.join("handler.wasm")).unwrap();
    });
    let (stable, canary) = (digest(&guest("greet")), digest(&guest("greet_v2")));
    deploy(&guest("greet_v2"), &host.dir.path().join("handler.wasm"));
    host.served.wait_for("handler:canary");
    let status = host.status();
    assert_eq!(status["handler_digest"], stable.as_str(), "{status}");
    assert_eq!(status["canary"], json!({"digest": canary, "percent": 50}));

    let ended = host.run_all(&vec![json!({"hello": "World"}); 10]);
    let outputs: Vec<Value> = ended.into_iter().map(|e| e.output.unwrap()).collect();
    let new = outputs.iter().filter(|o| o["version"] == 2).count();
    assert_eq!(new, 5, "half of the tasks run the canary: {outputs:?}");
    let promoted = host.served.wait_for("handler:promoted");
    assert_eq!(promoted["old_digest"], stable.as_str(), "{promoted}");
    assert_eq!(promoted["new_digest"], canary.as_str(), "{promoted}");
    assert_eq!(promoted["canary_tasks"], 5, "{promoted}");
    assert_eq!(promoted["canary_failure_rate"], 0.0, "{promoted}");
    let status = host.status();
    assert_eq!(status["handler_digest"], canary.as_str(), "{status}");
    assert!(status["canary"].is_null(), "{status}");
    let ended = host.run_all(&vec![json!({"hello": "World"}); 4]);
    assert!(
        ended
            .iter()
            .all(|e| e.output.as_ref().unwrap()["version"] == 2),
        "{ended:?}"
    );
}

/// A canary between world versions: a 0.2 handler (`greet_v2`, built with the SDK) as
/// the canary of a 0.1 one (`greet_v01`); each task answers in its version's shape.
#[test]
fn a_world_0_2_canary_of_a_0_1_handler_is_promoted() {
    let rollout = "[activity.rollout]\ncanary_percent = 50\npromote_after_tasks = 4";
    let mut host = Host::start(&format!("handler = \"handler.wasm\"\n{rollout}"), |dir| {
        std::fs::copy(guest("greet_v01"), dir.join("handler.wasm")).unwrap();
    });
    let canary = digest(&guest("greet_v2"));
    deploy(&guest("greet_v2"), &host.dir.path().join("handler.wasm"));
    host.served.wait_for("handler:canary");
    let ended = host.run_all(&vec![json!({"hello": "World"}); 8]);
    let outputs: Vec<Value> = ended.into_iter().map(|e| e.output.unwrap()).collect();
    let new = outputs.iter().filter(|o| o["version"] == 2).count();
    let old = outputs.iter().filter(|o| o["world"] == "0.1.0").count();
    assert_eq!((new, old), (4, 4), "{outputs:?}");
    let promoted = host.served.wait_for("handler:promoted");
    assert_eq!(promoted["new_digest"], canary.as_str(), "{promoted}");
}

fn replay(dir: &Path, handler: &Path, extra: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_sfn-wasm-host"))
        .arg("replay")
        .arg(dir)
        .arg("--handler")
        .arg(handler)
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    eprintln!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    (output.status.code().unwrap(), stdout)
}

#[test]
fn recorded_tasks_replay_the_same_on_the_same_module_and_changes_show_on_another() {
    let mut host = Host::start("handler = \"greet.wasm\"\nrecord = \"records\"", |dir| {
        std::fs::copy(guest("greet"), dir.join("greet.wasm")).unwrap();
    });
    let inputs: Vec<Value> = (0..20).map(|i| json!({"hello": format!("n{i}")})).collect();
    let ended = host.run_all(&inputs);
    assert!(ended.iter().all(|e| e.status == ExecutionStatus::Succeeded));
    // Records are written once the answer is settled: a clean exit has written them all.
    assert_eq!(host.served.terminate().1, 0);

    let records = host.dir.path().join("records");
    let files: Vec<_> = std::fs::read_dir(&records)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 20, "{files:?}");
    for file in &files {
        assert_eq!(
            std::fs::metadata(file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let one: Value = serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    assert_eq!(one["answer"]["status"], "success", "{one}");
    assert_eq!(one["handler_digest"], digest(&guest("greet")).as_str());

    let config = host.dir.path().join("config.toml");
    let (code, out) = replay(
        &records,
        &guest("greet"),
        &["--same-grants", config.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("20 tasks: 20 same, 0 changed, 0 now failing, 0 now passing"),
        "{out}"
    );

    let (code, out) = replay(&records, &guest("greet_v2"), &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("20 tasks: 0 same, 20 changed"), "{out}");
    assert!(
        out.contains(r#"replace /greeting "Hi, n"#) && out.contains("add /version 2"),
        "{out}"
    );

    // Nothing recorded is not a pass: a gate must not open on an empty folder.
    let empty = host.dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let (code, _) = replay(&empty, &guest("greet"), &[]);
    assert_eq!(code, 2);

    // `scenarios` fails these inputs: each one is now failing.
    let (code, out) = replay(&records, &guest("scenarios"), &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("20 now failing"), "{out}");
}
