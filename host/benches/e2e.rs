//! Host CPU per task, end to end against LocalStack (poll + guest + answer), against a
//! bare aws-sdk-sfn poll/answer loop with no sandbox, and CPU while idle with a long poll
//! pending. Prints a table.
//!
//! Run: `scripts/bench-e2e.sh` (starts LocalStack, then runs this). Each worker is its own
//! process with one poller, measured from /proc between the moment its first poll is
//! pending and the moment Step Functions reports every execution SUCCEEDED; the bench's
//! own client calls (start, list) are in this process and not counted.
//!
//! - bare: this binary re-run as `--bare-worker`: the same tuned `AwsStepFunctions`
//!   client, `GetActivityTask` → parse JSON → greeting → `SendTaskSuccess`.
//! - host: `sfn-wasm-host serve` with the `greet` component, one worker, JSON logs at the
//!   default level (info) to a pipe, as in production.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_sfn::Client;
use aws_sdk_sfn::types::ExecutionStatus;
use serde_json::json;
use sfn_wasm_host::config::AwsConfig;
use sfn_wasm_host::sfn::{AwsStepFunctions, StepFunctions};

mod common;

const TASKS: usize = 300;
const IDLE: Duration = Duration::from_secs(5);
const ROUNDS: usize = 3;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--bare-worker") {
        return bare_worker(&args[at + 1], &args[at + 2]);
    }
    let endpoint = std::env::var("LOCALSTACK_ENDPOINT")
        .expect("run through scripts/bench-e2e.sh, which starts LocalStack");
    common::build_guests(&[]);
    let greet = common::guest("greet");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = runtime.block_on(async {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .load()
            .await;
        Client::new(&config)
    });
    let ticks = clock_ticks();

    // Rounds alternate the modes so that drift on a noisy machine hits both alike.
    let mut samples: Vec<(&str, f64, f64)> = Vec::new();
    for mode in (0..ROUNDS).flat_map(|_| ["bare", "host"]) {
        let (activity, machine) = runtime.block_on(setup(&client, mode));
        let dir = tempfile::tempdir().unwrap();
        let mut worker = match mode {
            "bare" => Command::new(std::env::current_exe().unwrap())
                .args(["--bare-worker", &activity, &endpoint])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
            _ => {
                let config = dir.path().join("config.toml");
                std::fs::write(
                    &config,
                    format!(
                        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{endpoint}\"\n[host]\nlog_format = \"json\"\ncache = false\n\
                         [[activity]]\narn = \"{activity}\"\nhandler = \"{}\"\nworkers = 1\n",
                        greet.display()
                    ),
                )
                .unwrap();
                Command::new(env!("CARGO_BIN_EXE_sfn-wasm-host"))
                    .arg("serve")
                    .arg(&config)
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap()
            }
        };
        wait_ready(&mut worker);
        std::thread::sleep(Duration::from_secs(1));

        let idle_start = cpu_seconds(worker.id(), ticks);
        std::thread::sleep(IDLE);
        let idle = cpu_seconds(worker.id(), ticks) - idle_start;

        let busy_start = cpu_seconds(worker.id(), ticks);
        let started = Instant::now();
        runtime.block_on(run_executions(&client, &machine));
        let wall = started.elapsed();
        let busy = cpu_seconds(worker.id(), ticks) - busy_start;
        let _ = worker.kill();
        let _ = worker.wait();
        println!(
            "{mode}: {:.2} ms per task ({:.1} s)",
            busy / TASKS as f64 * 1000.0,
            wall.as_secs_f64()
        );
        samples.push((mode, busy / TASKS as f64, idle / IDLE.as_secs_f64()));
    }

    let median = |mode: &str, pick: fn(&(&str, f64, f64)) -> f64| {
        let mut values: Vec<f64> = samples.iter().filter(|s| s.0 == mode).map(pick).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let bare = median("bare", |s| s.1);
    println!(
        "\n{TASKS} tasks per run, {ROUNDS} runs per worker, medians; CPU from /proc (10 ms ticks)\n"
    );
    println!("| worker | CPU per task | vs bare | idle CPU, one long poll pending |");
    println!("|---|---:|---:|---:|");
    for mode in ["bare", "host"] {
        let per_task = median(mode, |s| s.1);
        println!(
            "| {mode} | {:.2} ms | {:.2}x | {:.2}% of a core |",
            per_task * 1000.0,
            per_task / bare,
            median(mode, |s| s.2) * 100.0,
        );
    }
}

/// The baseline: poll, parse, answer; nothing else.
fn bare_worker(activity: &str, endpoint: &str) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let aws = AwsConfig {
            region: Some("us-east-1".into()),
            endpoint_url: Some(endpoint.into()),
            ..AwsConfig::default()
        };
        let sfn = AwsStepFunctions::new(&aws).await;
        println!("ready");
        loop {
            let Ok(Some(task)) = sfn.poll(activity, "bare:1").await else {
                continue;
            };
            let input: serde_json::Value = serde_json::from_str(&task.input).unwrap_or_default();
            let output =
                json!({"greeting": format!("Hello, {}", input["hello"].as_str().unwrap_or(""))});
            let _ = sfn.send_success(&task.token, &output.to_string()).await;
        }
    });
}

async fn setup(client: &Client, mode: &str) -> (String, String) {
    let suffix = format!("{mode}-{:08x}", fastrand::u32(..));
    let activity = client
        .create_activity()
        .name(format!("e2e-{suffix}"))
        .send()
        .await
        .unwrap()
        .activity_arn;
    let definition = json!({"StartAt": "Work", "States": {"Work": {
        "Type": "Task", "Resource": activity, "TimeoutSeconds": 300, "HeartbeatSeconds": 60, "End": true}}});
    let machine = client
        .create_state_machine()
        .name(format!("e2e-{suffix}"))
        .definition(definition.to_string())
        .role_arn("arn:aws:iam::000000000000:role/bench")
        .send()
        .await
        .unwrap()
        .state_machine_arn;
    (activity, machine)
}

async fn run_executions(client: &Client, machine: &str) {
    for i in 0..TASKS {
        client
            .start_execution()
            .state_machine_arn(machine)
            .input(json!({"hello": format!("n{i}")}).to_string())
            .send()
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let mut succeeded = 0;
        let mut pages = client
            .list_executions()
            .state_machine_arn(machine)
            .status_filter(ExecutionStatus::Succeeded)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            succeeded += page.unwrap().executions.len();
        }
        if succeeded == TASKS {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {succeeded} of {TASKS} executions succeeded"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the worker says it is polling (at most 10 s: with `RUST_LOG=warn` the
/// host says nothing), draining its stdout in the background.
fn wait_ready(worker: &mut Child) {
    let stdout = worker.stdout.take().unwrap();
    let (ready, is_ready) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line == "ready" || line.contains("\"worker:running\"") {
                let _ = ready.send(());
            }
        }
    });
    let _ = is_ready.recv_timeout(Duration::from_secs(10));
}

fn cpu_seconds(pid: u32, ticks: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    let (utime, stime): (f64, f64) = (fields[11].parse().unwrap(), fields[12].parse().unwrap());
    (utime + stime) / ticks
}

fn clock_ticks() -> f64 {
    let output = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or(100.0)
}
