//! The admin server of a served host against LocalStack: `/metrics` (parsed by the
//! Prometheus project's Python parser) moves as the tasks did, `/healthz`, `/status`
//! with a task in flight, `/readyz` turning 503 on SIGTERM before the process exits, and
//! the per-task accounting in `task:done`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::Signal;
use serde_json::{Value, json};

use crate::emulator;
use crate::guests::guest;
use crate::served::Served;

/// `GET path` over a fresh connection: the status code and the body.
pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// Every sample of a Prometheus text exposition, as Python's `prometheus_client` parser
/// reads it: `name{label="value",...}` (labels sorted) → value.
pub fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        out[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps(out))
"#;
    serde_json::from_slice(&test_tools_python(script, text, "the parser refused")).unwrap()
}

/// Runs `script` with the test tools' Python (`scripts/test.sh` installs it) on `input`:
/// its stdout. Panics with `refusal` and the input when the script fails.
pub fn test_tools_python(script: &str, input: &str, refusal: &str) -> Vec<u8> {
    let python = std::env::var("TEST_TOOLS_PYTHON").expect(
        "TEST_TOOLS_PYTHON is not set: run the suite with scripts/test.sh, which installs the test tools",
    );
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{refusal}:\n{input}");
    output.stdout
}

fn sample(samples: &HashMap<String, f64>, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("no sample {key}; have: {:#?}", samples.keys()))
}

#[test]
#[allow(clippy::too_many_lines)] // one served run, checked end to end
fn metrics_status_health_and_readiness_of_a_served_host() {
    let (runtime, client, activity, machine) = emulator::emulated("admin");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    // Only the required keys and the admin address: metrics need no other setting.
    std::fs::write(
        &config,
        format!(
            "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n[host]\nadmin_listen = \"127.0.0.1:0\"\nshutdown_grace_seconds = 20\ncache = false\n\
             [[activity]]\narn = \"{activity}\"\nhandler = \"{}\"\nworkers = 2\nmemory_limit_mb = 128\n",
            emulator::endpoint(),
            guest("scenarios").display()
        ),
    )
    .unwrap();
    let mut served = Served::start(&config);
    let listening = served.wait_line(|line| line["admin"].is_string());
    let addr: SocketAddr = listening["admin"].as_str().unwrap().parse().unwrap();
    served.wait_for("worker:running");

    // Ready once the workers poll; healthy.
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(addr, "/readyz").0 != 200 {
        assert!(
            Instant::now() < deadline,
            "never ready: {:?}",
            get(addr, "/readyz")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(get(addr, "/healthz"), (200, "ok\n".into()));
    assert_eq!(get(addr, "/nope").0, 404);

    // A guest that computes for 200 ms of CPU: a fixed amount of work (a wall-clock spin
    // gets less CPU than its wall time on a busy machine), sized from a first run whose
    // cpu_ms says how fast this machine runs it.
    const CALIBRATION_ROUNDS: u64 = 50_000_000;
    runtime.block_on(emulator::start(
        &client,
        &machine,
        json!({"hello": "Work", "n": CALIBRATION_ROUNDS}),
    ));
    let calibration = served.wait_for("task:done")["cpu_ms"].as_f64().unwrap();
    assert!(
        calibration > 0.0,
        "cpu_ms of a computing guest: {calibration}"
    );
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let rounds = (CALIBRATION_ROUNDS as f64 * 200.0 / calibration) as u64;

    // One task of each outcome, the 200 ms computer and an allocator.
    let inputs = [
        json!({"hello": "World"}),
        json!({"hello": "Failure"}),
        json!({"hello": "Error"}),
        json!({"hello": "Work", "n": rounds}),
        json!({"hello": "Allocate", "mb": 32}),
    ];
    for input in &inputs {
        runtime.block_on(emulator::start(&client, &machine, input.clone()));
    }
    let mut done: Vec<Value> = Vec::new();
    while done.len() < inputs.len() {
        done.push(served.wait_for("task:done"));
    }
    let outcomes: Vec<(&str, &str)> = done
        .iter()
        .map(|d| (d["outcome"].as_str().unwrap(), d["error"].as_str().unwrap()))
        .collect();
    for expected in [
        ("success", "guest"),
        ("failure", "guest"),
        ("host_failure", "SfnWasmHost.Trap"),
    ] {
        assert!(
            outcomes.contains(&expected),
            "{expected:?} not in {outcomes:?}"
        );
    }
    let cpu_ms: Vec<f64> = done.iter().map(|d| d["cpu_ms"].as_f64().unwrap()).collect();
    let peaks: Vec<u64> = done
        .iter()
        .map(|d| d["memory_peak_bytes"].as_u64().unwrap())
        .collect();
    // The computer's cpu_ms is within 150–400; every other task's is below it.
    assert_eq!(
        cpu_ms
            .iter()
            .filter(|ms| (150.0..=400.0).contains(*ms))
            .count(),
        1,
        "the 200 ms computer's cpu_ms: {cpu_ms:?} (calibration: {calibration} ms for {CALIBRATION_ROUNDS} rounds)"
    );
    assert_eq!(
        cpu_ms.iter().filter(|ms| **ms < 150.0).count(),
        inputs.len() - 1,
        "only the computer computes for long: {cpu_ms:?}"
    );
    assert!(
        peaks.iter().any(|bytes| *bytes >= 32 << 20),
        "the 32 MiB allocator's peak: {peaks:?}"
    );
    assert!(
        done.iter().all(|d| d["elapsed_ms"].is_u64()),
        "elapsed_ms: {done:?}"
    );

    // The counters moved as the tasks did.
    let (status, text) = get(addr, "/metrics");
    assert_eq!(status, 200);
    let m = parse_metrics(&text);
    let a = format!("activity=\"{activity}\"");
    let task = |outcome: &str, error: &str| {
        sample(
            &m,
            &format!("sfn_wasm_host_tasks_total{{{a},error=\"{error}\",outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(
        task("success", "guest"),
        4.0,
        "World, Work (twice), Allocate"
    );
    assert_eq!(task("failure", "guest"), 1.0);
    assert_eq!(task("host_failure", "SfnWasmHost.Trap"), 1.0);
    assert_eq!(
        sample(&m, &format!("sfn_wasm_host_tasks_in_flight{{{a}}}")),
        0.0
    );
    assert_eq!(sample(&m, &format!("sfn_wasm_host_workers{{{a}}}")), 2.0);
    assert_eq!(
        sample(
            &m,
            &format!("sfn_wasm_host_polls_total{{{a},result=\"task\"}}")
        ),
        6.0
    );
    assert_eq!(
        sample(
            &m,
            "sfn_wasm_host_sfn_requests_total{api=\"SendTaskSuccess\",result=\"ok\"}"
        ),
        4.0
    );
    assert_eq!(
        sample(
            &m,
            "sfn_wasm_host_sfn_requests_total{api=\"SendTaskFailure\",result=\"ok\"}"
        ),
        2.0
    );
    assert!(
        sample(
            &m,
            "sfn_wasm_host_sfn_request_duration_seconds_count{api=\"GetActivityTask\"}"
        ) >= 6.0
    );
    for histogram in [
        "task_duration_seconds",
        "task_cpu_seconds",
        "task_memory_peak_bytes",
    ] {
        assert_eq!(
            sample(&m, &format!("sfn_wasm_host_{histogram}_count{{{a}}}")),
            6.0,
            "{histogram}"
        );
    }
    assert!(
        sample(&m, &format!("sfn_wasm_host_task_cpu_seconds_sum{{{a}}}")) >= 0.15,
        "the computer's CPU is in the histogram"
    );
    let digest = done[0]["handler_digest"].as_str().unwrap();
    assert_eq!(
        sample(
            &m,
            &format!("sfn_wasm_host_handler_info{{{a},digest=\"{digest}\"}}")
        ),
        1.0
    );

    // /status with a task in flight, then SIGTERM: /readyz says 503 while the task is
    // still finishing inside the grace, before the process exits.
    runtime.block_on(emulator::start(
        &client,
        &machine,
        json!({"hello": "Sleep", "ms": 3000}),
    ));
    let start = served.wait_for("task:start");
    let (status, body) = get(addr, "/status");
    assert_eq!(status, 200);
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["version"], env!("CARGO_PKG_VERSION"));
    assert!(page["uptime_seconds"].as_f64().unwrap() > 0.0, "{page}");
    let entry = &page["activities"][0];
    assert_eq!(entry["arn"], activity.as_str(), "{page}");
    assert_eq!(entry["handler_digest"], digest, "{page}");
    // No rollout, no canary.
    assert!(entry["canary"].is_null(), "{page}");
    assert_eq!(entry["desired_workers"], 2, "{page}");
    assert_eq!(entry["running_workers"], 2, "{page}");
    assert_eq!(entry["tasks_in_flight"], 1, "{page}");
    let in_flight = &entry["tasks"][0];
    assert_eq!(in_flight["task_id"], start["task_id"], "{page}");
    assert_eq!(in_flight["handler_digest"], digest, "{page}");
    assert!(
        in_flight["started"].is_string() && in_flight["elapsed_ms"].is_u64(),
        "{page}"
    );

    served.signal(Signal::TERM);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let (status, body) = get(addr, "/readyz");
        if status == 503 {
            assert!(body.contains("shutting down"), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still {status} after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    served.wait_until("task:done", |d| d["task_id"] == start["task_id"]);
    assert_eq!(served.wait_exit(), 0);
    assert!(
        TcpStream::connect(addr).is_err(),
        "the admin server stops with the host"
    );
}

#[test]
fn a_taken_admin_port_fails_serve_naming_the_key() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"http://127.0.0.1:9\"\n[host]\ncache = false\n\
             [[activity]]\narn = \"arn:aws:states:us-east-1:000000000000:activity:a\"\nhandler = \"{}\"\n",
            guest("greet").display()
        ),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_sfn-wasm-host"))
        .arg("serve")
        .arg(&config)
        .args(["--admin-listen", &addr.to_string()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("config.toml") && stderr.contains("host.admin_listen"),
        "{stderr}"
    );
    // A malformed address is refused by the flag parser, naming the form.
    let output = Command::new(env!("CARGO_BIN_EXE_sfn-wasm-host"))
        .arg("serve")
        .arg(&config)
        .args(["--admin-listen", "localhost:9464"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("IP:PORT"), "{stderr}");
}
