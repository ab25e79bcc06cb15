//! Host CPU per task, end to end against LocalStack (poll + guest + answer), against a
//! bare aws-sdk-sfn poll/answer loop with no sandbox, at 1 and 4 concurrent tasks, with
//! start-up included; and CPU while idle with long polls pending. Prints a table.
//!
//! Run: `scripts/bench-e2e.sh` (starts LocalStack, then runs this). Each run queues
//! [`TASKS`] executions first, then starts the worker process; its CPU is read from /proc
//! from its start to the moment Step Functions reports every execution SUCCEEDED, so
//! start-up counts, as it does for a user who starts a host. Then, with nothing left to
//! do, its CPU over [`IDLE`]. The bench's own client calls are in this process and not
//! counted.
//!
//! - bare: this binary re-run as `--bare-worker`: the same tuned `AwsStepFunctions`
//!   client, N concurrent loops of `GetActivityTask` → parse JSON → greeting →
//!   `SendTaskSuccess`.
//! - host, admin + OTLP: the same with `[host] admin_listen` and `[host.otel] endpoint`
//!   set (a stand-in collector in this process answers the exports): what metrics, the
//!   status board and traces cost per task.
//! - host: `sfn-wasm-host serve` with the `greet` component, `workers = N`, its compile
//!   cache filled beforehand (`sfn-wasm-host compile`, as a deploy would), JSON logs at the
//!   default level (info) to a pipe, as in production.
//!
//! A second table splits the host's CPU by thread (`/proc/PID/task/*/stat`, grouped by
//! thread name) so that the gap to the bare loop can be attributed: the control plane
//! (tokio workers: polls, answers, the SDK) does what the whole bare process does; the
//! guests' runtime, log writer and epoch clock are what the sandbox and its events add.

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
const CONCURRENCY: [usize; 2] = [1, 4];
/// The host with its admin server on and traces exported to an OTLP collector (a
/// stand-in in this process that answers 200).
const OPS: &str = "host, admin + OTLP";
const MODES: [&str; 3] = ["bare", "host", OPS];

struct Sample {
    mode: &'static str,
    concurrency: usize,
    per_task: f64,
    idle: f64,
    /// Host only: CPU per task of each thread group in [`THREAD_GROUPS`], then the rest
    /// (main thread, threads that exited; ± the 10 ms tick of the process total).
    threads: Vec<f64>,
}

/// Thread-name prefixes of the host's threads, as the second table names them.
const THREAD_GROUPS: [(&str, &str); 4] = [
    ("tokio-rt-worker", "control plane"),
    ("sfn-wasm-guest", "guests"),
    ("sfn-wasm-log", "log writer"),
    ("sfn-wasm-epoch", "epoch clock"),
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--bare-worker") {
        let loops = args[at + 3].parse().unwrap_or(1);
        return bare_worker(&args[at + 1], &args[at + 2], loops);
    }
    let endpoint = std::env::var("LOCALSTACK_ENDPOINT")
        .expect("run through scripts/bench-e2e.sh, which starts LocalStack");
    common::build_guests(&[]);
    let greet = common::guest("greet");
    let cache = common::root().join("target/bench-e2e-cache");
    let compiled = Command::new(env!("CARGO_BIN_EXE_sfn-wasm-host"))
        .arg("compile")
        .arg(&greet)
        .arg("--cache-dir")
        .arg(&cache)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(compiled.success(), "sfn-wasm-host compile failed");
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
    let collector = common::collector();

    // Rounds alternate the modes so that drift on a noisy machine hits both alike.
    let mut samples: Vec<Sample> = Vec::new();
    for _ in 0..ROUNDS {
        for concurrency in CONCURRENCY {
            for mode in MODES {
                let (activity, machine) = runtime.block_on(setup(&client, mode));
                runtime.block_on(start_executions(&client, &machine));
                let dir = tempfile::tempdir().unwrap();
                let mut worker = match mode {
                    "bare" => Command::new(std::env::current_exe().unwrap())
                        .args(["--bare-worker", &activity, &endpoint])
                        .arg(concurrency.to_string())
                        .stdout(Stdio::piped())
                        .spawn()
                        .unwrap(),
                    _ => {
                        let config = dir.path().join("config.toml");
                        let ops = if mode == OPS {
                            format!(
                                "admin_listen = \"127.0.0.1:0\"\n[host.otel]\nendpoint = \"{collector}\"\n"
                            )
                        } else {
                            String::new()
                        };
                        std::fs::write(
                            &config,
                            format!(
                                "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{endpoint}\"\n[host]\nlog_format = \"json\"\ncache_dir = \"{}\"\n{ops}\
                                 [[activity]]\narn = \"{activity}\"\nhandler = \"{}\"\nworkers = {concurrency}\n",
                                cache.display(),
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
                drain(&mut worker);
                let started = Instant::now();
                runtime.block_on(wait_all_succeeded(&client, &machine));
                let wall = started.elapsed();
                let busy = cpu_seconds(worker.id(), ticks);
                let mut threads = thread_seconds(worker.id());
                threads.push(busy - threads.iter().sum::<f64>());
                let idle_start = cpu_seconds(worker.id(), ticks);
                std::thread::sleep(IDLE);
                let idle = cpu_seconds(worker.id(), ticks) - idle_start;
                let _ = worker.kill();
                let _ = worker.wait();
                println!(
                    "{mode} x{concurrency}: {:.2} ms per task ({:.1} s)",
                    busy / TASKS as f64 * 1000.0,
                    wall.as_secs_f64()
                );
                samples.push(Sample {
                    mode,
                    concurrency,
                    per_task: busy / TASKS as f64,
                    idle: idle / IDLE.as_secs_f64(),
                    threads: threads.iter().map(|s| s / TASKS as f64).collect(),
                });
            }
        }
    }

    let median = |mode: &str, concurrency: usize, pick: fn(&Sample) -> f64| {
        let mut values: Vec<f64> = samples
            .iter()
            .filter(|s| s.mode == mode && s.concurrency == concurrency)
            .map(pick)
            .collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    println!(
        "\n{TASKS} queued tasks per run, start-up included, {ROUNDS} runs per row, medians; CPU from /proc (10 ms ticks)\n"
    );
    println!("| worker | concurrency | CPU per task | vs bare | idle CPU, polls pending |");
    println!("|---|---:|---:|---:|---:|");
    for concurrency in CONCURRENCY {
        let bare = median("bare", concurrency, |s| s.per_task);
        for mode in MODES {
            let per_task = median(mode, concurrency, |s| s.per_task);
            println!(
                "| {mode} | {concurrency} | {:.2} ms | {:.2}x | {:.2}% of a core |",
                per_task * 1000.0,
                per_task / bare,
                median(mode, concurrency, |s| s.idle) * 100.0,
            );
        }
    }

    for concurrency in CONCURRENCY {
        let host = median("host", concurrency, |s| s.per_task);
        let ops = median(OPS, concurrency, |s| s.per_task);
        println!(
            "\nadmin server and OTLP export on, {concurrency} worker(s): {:+.1} % CPU per task",
            (ops / host - 1.0) * 100.0
        );
    }

    println!("\nWhere the host's CPU goes, per task, medians (ms):\n");
    let names: Vec<&str> = THREAD_GROUPS.iter().map(|(_, name)| *name).collect();
    println!(
        "| concurrency | bare, whole process | host: {} | other |",
        names.join(" | ")
    );
    println!("|---:|---:|{}---:|", "---:|".repeat(names.len()));
    for concurrency in CONCURRENCY {
        let groups: Vec<String> = (0..=names.len())
            .map(|group| {
                let mut values: Vec<f64> = samples
                    .iter()
                    .filter(|s| s.mode == "host" && s.concurrency == concurrency)
                    .map(|s| s.threads[group])
                    .collect();
                values.sort_by(f64::total_cmp);
                format!("{:.2}", values[values.len() / 2] * 1000.0)
            })
            .collect();
        println!(
            "| {concurrency} | {:.2} | {} |",
            median("bare", concurrency, |s| s.per_task) * 1000.0,
            groups.join(" | ")
        );
    }
}

/// The baseline: `loops` concurrent loops of poll, parse, answer; nothing else.
fn bare_worker(activity: &str, endpoint: &str, loops: usize) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let aws = AwsConfig {
            region: Some("us-east-1".into()),
            endpoint_url: Some(endpoint.into()),
            ..AwsConfig::default()
        };
        let sfn = std::sync::Arc::new(AwsStepFunctions::new(&aws).await);
        println!("ready");
        let loops: Vec<_> = (0..loops)
            .map(|n| {
                let (sfn, activity) = (sfn.clone(), activity.to_owned());
                tokio::spawn(async move {
                    let name = format!("bare:{n}");
                    loop {
                        let Ok(Some(task)) = sfn.poll(&activity, &name).await else {
                            continue;
                        };
                        let input: serde_json::Value =
                            serde_json::from_str(&task.input).unwrap_or_default();
                        let output = json!({"greeting": format!("Hello, {}", input["hello"].as_str().unwrap_or(""))});
                        // A few tries, so that an emulator hiccup does not lose a task
                        // (the run waits for every execution to succeed).
                        for _ in 0..5 {
                            if sfn.send_success(&task.token, &output.to_string()).await.is_ok() {
                                break;
                            }
                        }
                    }
                })
            })
            .collect();
        futures::future::join_all(loops).await;
    });
}

async fn setup(client: &Client, mode: &str) -> (String, String) {
    let mode: String = mode.chars().filter(char::is_ascii_alphanumeric).collect();
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

async fn start_executions(client: &Client, machine: &str) {
    for i in 0..TASKS {
        client
            .start_execution()
            .state_machine_arn(machine)
            .input(json!({"hello": format!("n{i}")}).to_string())
            .send()
            .await
            .unwrap();
    }
}

async fn wait_all_succeeded(client: &Client, machine: &str) {
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
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Drains the worker's stdout in the background, so that its logs never block it.
fn drain(worker: &mut Child) {
    let stdout = worker.stdout.take().unwrap();
    std::thread::spawn(move || for _ in BufReader::new(stdout).lines().map_while(Result::ok) {});
}

fn cpu_seconds(pid: u32, ticks: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    let (utime, stime): (f64, f64) = (fields[11].parse().unwrap(), fields[12].parse().unwrap());
    (utime + stime) / ticks
}

/// CPU seconds of the live threads of `pid`, summed per [`THREAD_GROUPS`] entry, from
/// each thread's `schedstat` (nanoseconds: per-thread `stat` ticks would lose up to
/// 20 ms per thread to rounding, more than a small group's whole share).
fn thread_seconds(pid: u32) -> Vec<f64> {
    let mut groups = vec![0.0; THREAD_GROUPS.len()];
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return groups;
    };
    for thread in threads.flatten() {
        let (Ok(name), Ok(schedstat)) = (
            std::fs::read_to_string(thread.path().join("comm")),
            std::fs::read_to_string(thread.path().join("schedstat")),
        ) else {
            continue;
        };
        let name = name.trim_end();
        let nanos: f64 = schedstat
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse().ok())
            .unwrap_or(0.0);
        let cpu = nanos / 1e9;
        if let Some(group) = THREAD_GROUPS
            .iter()
            .position(|(prefix, _)| name.starts_with(prefix))
        {
            groups[group] += cpu;
        }
    }
    groups
}

fn clock_ticks() -> f64 {
    let output = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or(100.0)
}
