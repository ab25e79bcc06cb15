//! Host CPU per task, end to end (poll + guest + answer), against a bare aws-sdk-sfn
//! poll/answer loop with no sandbox, at 1 and 4 concurrent tasks, start-up included, on
//! two Step Functions:
//!
//! - **LocalStack**, tasks queued: a new TCP connection per request, which is most of
//!   every client's cost; also CPU while idle with long polls pending.
//! - **A keep-alive stand-in** (`common::standin`, in this process on a thread of its
//!   own): HTTP/1.1 with persistent connections, so the SDK pools them as it does against
//!   AWS and what is left is the client's own cost. Two shapes: [`QUEUED`] tasks queued
//!   up front (the host's API token buckets raised out of the way, as the bare loop's
//!   are), and [`PACED`] tasks arriving at a steady [`RATE`] per second under the default
//!   quota, the shape of real traffic, where each task finds the host idle.
//!
//! Run: `scripts/bench-e2e.sh` (starts LocalStack, then runs this);
//! `E2E_TARGETS=keepalive` runs the stand-in rows only, without LocalStack (`queued` or
//! `paced` one shape of them);
//! `E2E_MODES=host E2E_CONCURRENCY=1 E2E_ROUNDS=1` one case, to profile (no table). Each run
//! queues its tasks, then starts the worker process; its CPU is read from /proc from its
//! start to the moment every task is answered, so start-up counts, as it does for a user
//! who starts a host. Its context switches (`ru_nvcsw + ru_nivcsw`, every thread, from
//! `getrusage(RUSAGE_CHILDREN)` around its exit) are printed per task beside. The bench's
//! own calls and the stand-in are in this process and not counted.
//!
//! - bare: this binary re-run as `--bare-worker`: the same tuned `AwsStepFunctions`
//!   client, N concurrent loops of `GetActivityTask` → parse JSON → greeting →
//!   `SendTaskSuccess`.
//! - host serving a callback (SQS) (LocalStack only): the same tasks as callback tasks: each
//!   execution's state sends its token and input to an SQS queue, which the host's
//!   `[[callback]]` receives from (a receive, a token check, the answer, a delete); a
//!   line compares its CPU per task with the activity's (target ≤ 1.2x).
//! - host, admin + OTLP (LocalStack only): the host with `[host] admin_listen` and
//!   `[host.otel] endpoint` set (a stand-in collector in this process answers the
//!   exports): what metrics, the status board and traces cost per task.
//! - host: `sfn-wasm-host serve` with the `greet` component, `workers = N`, its compile
//!   cache filled beforehand (`sfn-wasm-host compile`, as a deploy would), JSON logs at the
//!   default level (info) to a pipe, as in production.
//! - host with outbox / with idempotency (keep-alive stand-in, queued and paced): the same with
//!   `[host] outbox_dir`, or `[activity.idempotency]` on a folder with every task's key
//!   new (`"id": "{n}"` in the input), each also with `durability = "process-crash"`; a
//!   table prints what each adds per task over the host without it.
//!
//! To count rather than time (syscalls, instructions), `E2E_WRAP` holds a command prefix
//! put in front of every worker's command line, split at whitespace (no quoting), e.g.
//! `E2E_WRAP='strace -c -f -o /tmp/host.txt'` or `E2E_WRAP='valgrind --tool=callgrind
//! --callgrind-out-file=/tmp/cg.%p'`; `E2E_TASKS=N` sets the tasks per run (of every
//! target) so that a slow wrapper finishes. CPU and threads are then read from the
//! innermost process the wrapper started (the worker), and the run ends with SIGTERM to
//! it instead of SIGKILL, so that the wrapper sees it exit and writes its report; the
//! host's shutdown is then counted too; the context switches include the wrapper's.
//! Start-up is in every count: the difference of two runs with different `E2E_TASKS`
//! leaves the per-task part. valgrind refuses the host's instance pool (tens of GiB of
//! address space): under it, set `SFN_WASM_HOST_INSTANCE_ALLOCATION=on-demand`, as
//! `scripts/bench-callgrind.sh` does.
//!
//! `E2E_HOST_LINES` adds lines to every host's `[host]` table (`\n` between them), to
//! swap one part at a time, e.g. `E2E_HOST_LINES='runtime_threads = 1'`.
//!
//! A last table splits the host's CPU by thread (`/proc/PID/task/*/schedstat`, grouped by
//! thread name): the tokio workers (polls, answers, the SDK, the guests), the log writer
//! and the epoch clock. Each run's line also says how often each group was scheduled in
//! per task (`schedstat`'s time slices): whose wake-ups the context switches are.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_sfn::Client;
use aws_sdk_sfn::types::ExecutionStatus;
use serde_json::json;
use sfn_wasm_host::aws::AwsConfig;
use sfn_wasm_host::sfn::{AwsStepFunctions, StepFunctions};

mod common;

use common::standin::KeepAliveStandIn;

/// Tasks per LocalStack run (each is an execution there).
const TASKS: usize = 300;
/// Tasks queued up front per keep-alive run.
const QUEUED: usize = 5_000;
/// Tasks arriving at [`RATE`] per keep-alive run.
const PACED: usize = 2_000;
/// Tasks per second in the paced runs: under the default quota (500 per second).
const RATE: f64 = 300.0;
const IDLE: Duration = Duration::from_secs(5);
const ROUNDS: usize = 3;
const CONCURRENCY: [usize; 2] = [1, 4];
/// The host with its admin server on and traces exported to an OTLP collector (a
/// stand-in in this process that answers 200).
const OPS: &str = "host, admin + OTLP";
/// The host serving the same tasks as a callback: the state machine sends each to an SQS
/// queue (`sqs:sendMessage.waitForTaskToken`), the host's `[[callback]]` receives it.
const CALLBACK: &str = "host serving a callback (SQS)";
/// The host with `[host] outbox_dir` (a folder in the run's temporary folder): every
/// answer written before its first attempt and removed once accepted.
const OUTBOX: &str = "host with outbox";
/// The same with `outbox_durability = "process-crash"`: written, not fsync'd.
const OUTBOX_PROCESS_CRASH: &str = "host with outbox (process-crash)";
/// The host with `[activity.idempotency]` on a folder, every task's key new: a claim
/// (held in memory), a read of the key and the stored answer per task.
const IDEMPOTENCY: &str = "host with idempotency";
/// The same with `durability = "process-crash"`.
const IDEMPOTENCY_PROCESS_CRASH: &str = "host with idempotency (process-crash)";
/// The durability features' modes: each costed against the host without it.
const DURABLE: [&str; 4] = [
    OUTBOX,
    OUTBOX_PROCESS_CRASH,
    IDEMPOTENCY,
    IDEMPOTENCY_PROCESS_CRASH,
];
/// Raises the host's API token buckets out of the way of a stand-in running flat out.
const RAISED_QUOTAS: &str = "[aws.max_requests_per_second]\nGetActivityTask = 100000\nSendTaskSuccess = 100000\nSendTaskFailure = 100000\nSendTaskHeartbeat = 100000\n";

/// Where the tasks come from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    LocalStack,
    Queued,
    Paced,
}

impl Target {
    fn name(self) -> String {
        let tasks = self.tasks();
        match self {
            Target::LocalStack => format!("LocalStack, {tasks} queued"),
            Target::Queued => format!("keep-alive stand-in, {tasks} queued"),
            Target::Paced => format!("keep-alive stand-in, {tasks} at {RATE}/s"),
        }
    }

    /// Its task count, or `E2E_TASKS` when set.
    fn tasks(self) -> usize {
        let default = match self {
            Target::LocalStack => TASKS,
            Target::Queued => QUEUED,
            Target::Paced => PACED,
        };
        std::env::var("E2E_TASKS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(default)
    }

    fn modes(self) -> &'static [&'static str] {
        match self {
            Target::LocalStack => &["bare", "host", OPS, CALLBACK],
            Target::Queued | Target::Paced => &[
                "bare", "host", DURABLE[0], DURABLE[1], DURABLE[2], DURABLE[3],
            ],
        }
    }
}

struct Sample {
    target: Target,
    mode: &'static str,
    concurrency: usize,
    per_task: f64,
    switches: f64,
    idle: Option<f64>,
    /// Against the stand-in: the `GetActivityTask` and answer requests it received.
    requests: Option<(usize, usize)>,
    /// Host only: CPU per task of each thread group in [`THREAD_GROUPS`], then the rest
    /// (main thread, threads that exited; ± the 10 ms tick of the process total).
    threads: Vec<f64>,
    /// Times scheduled in per task (`schedstat`'s time slices, so what each group's
    /// wake-ups cost in context switches), per [`THREAD_GROUPS`] entry, then the other
    /// live threads.
    slices: Vec<f64>,
}

/// Thread-name prefixes of the host's threads, as the last table names them.
const THREAD_GROUPS: [(&str, &str); 4] = [
    ("tokio-rt-worker", "runtime (polls, answers, quick guests)"),
    (
        sfn_wasm_host::engine::GUEST_THREAD_NAME,
        "guest threads (guests that compute)",
    ),
    ("sfn-wasm-log", "log writer"),
    ("sfn-wasm-epoch", "epoch clock"),
];

/// What every worker process of a run is started from.
struct Bench {
    runtime: tokio::runtime::Runtime,
    greet: std::path::PathBuf,
    cache: std::path::PathBuf,
    collector: String,
    ticks: f64,
    localstack: Option<(String, Client)>,
    /// `E2E_WRAP`: a command prefix for every worker (empty: none).
    wrap: Vec<String>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--bare-worker") {
        let loops = args[at + 3].parse().unwrap_or(1);
        let raised = args.get(at + 4).is_some_and(|a| a == "raised");
        return bare_worker(&args[at + 1], &args[at + 2], loops, raised);
    }
    let targets = std::env::var("E2E_TARGETS").unwrap_or_else(|_| "localstack,keepalive".into());
    let mut chosen = Vec::new();
    if targets.contains("localstack") {
        chosen.push(Target::LocalStack);
    }
    for (name, target) in [("queued", Target::Queued), ("paced", Target::Paced)] {
        if targets.contains("keepalive") || targets.contains(name) {
            chosen.push(target);
        }
    }
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
    let localstack = chosen.contains(&Target::LocalStack).then(|| {
        let endpoint = std::env::var("LOCALSTACK_ENDPOINT").expect(
            "run through scripts/bench-e2e.sh, which starts LocalStack (or set E2E_TARGETS=keepalive)",
        );
        let client = runtime.block_on(async {
            let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .endpoint_url(&endpoint)
                .region(aws_config::Region::new("us-east-1"))
                .load()
                .await;
            Client::new(&config)
        });
        (endpoint, client)
    });
    let bench = Bench {
        runtime,
        greet,
        cache,
        collector: common::collector(),
        ticks: clock_ticks(),
        localstack,
        wrap: std::env::var("E2E_WRAP")
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    };

    // For a profile of one case: E2E_MODES=host E2E_CONCURRENCY=1 E2E_ROUNDS=1.
    let only_modes = std::env::var("E2E_MODES").ok();
    let only_concurrency: Option<usize> = std::env::var("E2E_CONCURRENCY")
        .ok()
        .and_then(|c| c.parse().ok());
    let rounds = std::env::var("E2E_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(ROUNDS);
    // Rounds alternate the modes so that drift on a noisy machine hits all alike.
    let mut samples: Vec<Sample> = Vec::new();
    for _ in 0..rounds {
        for &target in &chosen {
            for concurrency in CONCURRENCY {
                if only_concurrency.is_some_and(|c| c != concurrency) {
                    continue;
                }
                for &mode in target.modes() {
                    if only_modes
                        .as_ref()
                        .is_some_and(|m| !m.split(',').any(|m| m == mode))
                    {
                        continue;
                    }
                    let sample = bench.run(target, mode, concurrency);
                    // The stand-in's request counts: a worker that made more requests
                    // than the other for the same tasks would show here.
                    let requests = sample.requests.map_or(String::new(), |(polls, answers)| {
                        format!(", {polls} polls and {answers} answers received")
                    });
                    // Who is scheduled in, per task: the runtime, log writer, epoch
                    // clock and other threads.
                    let slices = sample
                        .slices
                        .iter()
                        .map(|n| format!("{n:.2}"))
                        .collect::<Vec<_>>()
                        .join(" / ");
                    let cpu = sample
                        .threads
                        .iter()
                        .map(|s| format!("{:.0}", s * 1e6))
                        .collect::<Vec<_>>()
                        .join(" / ");
                    println!(
                        "{} | {mode} x{concurrency}: {:.1} µs per task (by thread, runtime / guest / log / epoch / other: {cpu}), {:.2} context switches per task (scheduled in by thread: {slices}){requests}",
                        target.name(),
                        sample.per_task * 1e6,
                        sample.switches
                    );
                    samples.push(sample);
                }
            }
        }
    }
    if only_modes.is_none() && only_concurrency.is_none() {
        report(&chosen, &samples);
    }
}

impl Bench {
    /// A worker's command: `program`, behind the `E2E_WRAP` prefix when there is one.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match self.wrap.split_first() {
            Some((wrapper, args)) => {
                let mut command = Command::new(wrapper);
                command.args(args).arg(program);
                command
            }
            None => Command::new(program),
        }
    }

    /// One run: `mode` at `concurrency` against `target`.
    fn run(&self, target: Target, mode: &'static str, concurrency: usize) -> Sample {
        let tasks = target.tasks();
        let mut standin = None;
        let mut machine = None;
        let (endpoint, activity) = match &self.localstack {
            Some((endpoint, client)) if target == Target::LocalStack => {
                let (activity, state_machine) = if mode == CALLBACK {
                    self.runtime.block_on(setup_callback(client, endpoint))
                } else {
                    self.runtime.block_on(setup(client, mode))
                };
                self.runtime
                    .block_on(start_executions(client, &state_machine, tasks));
                machine = Some(state_machine);
                (endpoint.clone(), activity)
            }
            _ => {
                let server = KeepAliveStandIn::start(tasks, r#"{"hello": "x", "id": "{n}"}"#);
                if target == Target::Queued {
                    server.queue_all();
                }
                let endpoint = server.endpoint().to_owned();
                standin = Some(server);
                (
                    endpoint,
                    "arn:aws:states:us-east-1:000000000000:activity:bench".to_owned(),
                )
            }
        };
        let raised = target == Target::Queued;
        let dir = tempfile::tempdir().unwrap();
        let before = children_switches();
        let mut worker = match mode {
            "bare" => self
                .command(std::env::current_exe().unwrap())
                .args(["--bare-worker", &activity, &endpoint])
                .arg(concurrency.to_string())
                .arg(if raised { "raised" } else { "default" })
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
            _ => {
                let config = dir.path().join("config.toml");
                let ops = if mode == OPS {
                    format!(
                        "admin_listen = \"127.0.0.1:0\"\n[host.otel]\nendpoint = \"{}\"\n",
                        self.collector
                    )
                } else {
                    String::new()
                };
                let (outbox, idempotency) = durable_features(mode, dir.path());
                let quotas = if raised { RAISED_QUOTAS } else { "" };
                // Swaps one part of the host for a run (`E2E_HOST_LINES`).
                let extra = std::env::var("E2E_HOST_LINES")
                    .map(|lines| format!("{}\n", lines.replace("\\n", "\n")))
                    .unwrap_or_default();
                // `activity` is the queue's URL for a callback.
                let source = if mode == CALLBACK {
                    format!("[[callback]]\nqueue_url = \"{activity}\"")
                } else {
                    format!("[[activity]]\narn = \"{activity}\"")
                };
                std::fs::write(
                    &config,
                    format!(
                        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{endpoint}\"\n{quotas}[host]\nlog_format = \"json\"\ncache_dir = \"{}\"\n{extra}{outbox}{ops}\
                         {source}\nhandler = \"{}\"\nworkers = {concurrency}\n{idempotency}",
                        self.cache.display(),
                        self.greet.display()
                    ),
                )
                .unwrap();
                self.command(env!("CARGO_BIN_EXE_sfn-wasm-host"))
                    .arg("serve")
                    .arg(&config)
                    .env("AWS_ACCESS_KEY_ID", "bench")
                    .env("AWS_SECRET_ACCESS_KEY", "bench")
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap()
            }
        };
        drain(&mut worker);
        if target == Target::Paced {
            standin.as_ref().unwrap().queue_at(RATE);
        }
        match (&standin, &machine, &self.localstack) {
            (Some(server), _, _) => {
                let deadline = Instant::now() + Duration::from_secs(600);
                while server.answered() < tasks {
                    if let Ok(Some(status)) = worker.try_wait() {
                        panic!(
                            "the {mode} worker exited ({status}) with {} of {tasks} tasks answered",
                            server.answered()
                        );
                    }
                    assert!(
                        Instant::now() < deadline,
                        "only {} of {tasks} tasks were answered",
                        server.answered()
                    );
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            (None, Some(machine), Some((_, client))) => {
                self.runtime
                    .block_on(wait_all_succeeded(client, machine, tasks));
            }
            _ => unreachable!("a run has a stand-in or a state machine"),
        }
        let pid = if self.wrap.is_empty() {
            worker.id()
        } else {
            innermost(worker.id())
        };
        let busy = cpu_seconds(pid, self.ticks);
        let mut threads: Vec<f64> = per_thread_group(pid, 0)[..THREAD_GROUPS.len()]
            .iter()
            .map(|nanos| nanos / 1e9)
            .collect();
        threads.push(busy - threads.iter().sum::<f64>());
        let slices = per_thread_group(pid, 2);
        let idle = (target == Target::LocalStack).then(|| {
            let idle_start = cpu_seconds(pid, self.ticks);
            std::thread::sleep(IDLE);
            (cpu_seconds(pid, self.ticks) - idle_start) / IDLE.as_secs_f64()
        });
        if self.wrap.is_empty() {
            let _ = worker.kill();
        } else {
            // The wrapper writes its report when the worker exits, not when killed.
            let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let _ = worker.wait();
        let switches = children_switches() - before;
        let requests = standin.as_ref().map(KeepAliveStandIn::requests);
        if let Some(server) = &standin {
            assert_eq!(server.failed(), 0, "{mode}: tasks failed");
            assert_eq!(server.answered_twice(), 0, "{mode}: tasks answered twice");
        }
        Sample {
            target,
            mode,
            concurrency,
            per_task: busy / tasks as f64,
            switches: switches as f64 / tasks as f64,
            idle,
            requests,
            threads: threads.iter().map(|s| s / tasks as f64).collect(),
            slices: slices.iter().map(|n| n / tasks as f64).collect(),
        }
    }
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn report(targets: &[Target], samples: &[Sample]) {
    let pick = |target: Target, mode: &str, concurrency: usize, value: fn(&Sample) -> f64| {
        median(
            samples
                .iter()
                .filter(|s| s.target == target && s.mode == mode && s.concurrency == concurrency)
                .map(value),
        )
    };
    println!(
        "\nStart-up included, {ROUNDS} runs per row, medians; CPU from /proc (10 ms ticks), context switches of every thread\n"
    );
    println!(
        "| tasks | worker | concurrency | CPU per task | vs bare | context switches per task | vs bare | idle CPU, polls pending |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for &target in targets {
        for concurrency in CONCURRENCY {
            let bare = pick(target, "bare", concurrency, |s| s.per_task);
            let bare_switches = pick(target, "bare", concurrency, |s| s.switches);
            for &mode in target.modes() {
                let per_task = pick(target, mode, concurrency, |s| s.per_task);
                let switches = pick(target, mode, concurrency, |s| s.switches);
                let idle = if target == Target::LocalStack {
                    format!(
                        "{:.2}% of a core",
                        pick(target, mode, concurrency, |s| s.idle.unwrap_or(0.0)) * 100.0
                    )
                } else {
                    "—".to_owned()
                };
                println!(
                    "| {} | {mode} | {concurrency} | {:.0} µs | {:.2}x | {switches:.2} | {:.2}x | {idle} |",
                    target.name(),
                    per_task * 1e6,
                    per_task / bare,
                    switches / bare_switches,
                );
            }
        }
    }

    if targets.contains(&Target::LocalStack) {
        for concurrency in CONCURRENCY {
            let host = pick(Target::LocalStack, "host", concurrency, |s| s.per_task);
            let ops = pick(Target::LocalStack, OPS, concurrency, |s| s.per_task);
            println!(
                "\nadmin server and OTLP export on, {concurrency} worker(s): {:+.1} % CPU per task",
                (ops / host - 1.0) * 100.0
            );
            let callback = pick(Target::LocalStack, CALLBACK, concurrency, |s| s.per_task);
            println!(
                "a callback task (SQS) against an activity task, {concurrency} worker(s): {:.2}x CPU per task (target ≤ 1.2x)",
                callback / host
            );
        }
    }

    for target in [Target::Queued, Target::Paced] {
        if !targets.contains(&target) {
            continue;
        }
        println!(
            "\nWhat keeping answers costs, {} (target ≤ +25 %; process-crash ≤ +10 %):\n",
            target.name()
        );
        println!("| feature | concurrency | CPU per task | over the host without it |");
        println!("|---|---:|---:|---:|");
        for concurrency in CONCURRENCY {
            let host = pick(target, "host", concurrency, |s| s.per_task);
            for mode in DURABLE {
                let with = pick(target, mode, concurrency, |s| s.per_task);
                println!(
                    "| {mode} | {concurrency} | {:.0} µs | {:+.1} % |",
                    with * 1e6,
                    (with / host - 1.0) * 100.0
                );
            }
        }
    }

    println!("\nWhere the host's CPU goes, per task, medians (µs):\n");
    let names: Vec<&str> = THREAD_GROUPS.iter().map(|(_, name)| *name).collect();
    println!(
        "| tasks | concurrency | bare, whole process | host: {} | other |",
        names.join(" | ")
    );
    println!("|---|---:|---:|{}---:|", "---:|".repeat(names.len()));
    for &target in targets {
        for concurrency in CONCURRENCY {
            let groups: Vec<String> = (0..=names.len())
                .map(|group| {
                    let value = median(
                        samples
                            .iter()
                            .filter(|s| {
                                s.target == target
                                    && s.mode == "host"
                                    && s.concurrency == concurrency
                            })
                            .map(|s| s.threads[group]),
                    );
                    format!("{:.0}", value * 1e6)
                })
                .collect();
            println!(
                "| {} | {concurrency} | {:.0} | {} |",
                target.name(),
                pick(target, "bare", concurrency, |s| s.per_task) * 1e6,
                groups.join(" | ")
            );
        }
    }
}

/// Context switches (voluntary and not) of every child this process has waited for,
/// every thread of each, over its whole life.
fn children_switches() -> i64 {
    // SAFETY: `getrusage` only writes the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    usage.ru_nvcsw + usage.ru_nivcsw
}

/// The `[host]` keys and the `[activity.idempotency]` table of `mode`, stores in `dir`.
fn durable_features(mode: &str, dir: &std::path::Path) -> (String, String) {
    let crash = "\"process-crash\"";
    let outbox = |durability: &str| {
        format!(
            "outbox_dir = \"{}\"\noutbox_durability = {durability}\n",
            dir.join("outbox").display()
        )
    };
    let idempotency = |durability: &str| {
        format!(
            "[activity.idempotency]\nkey = \"/id\"\nstore = \"{}\"\ndurability = {durability}\n",
            dir.join("answers").display()
        )
    };
    match mode {
        OUTBOX => (outbox("\"power-loss\""), String::new()),
        OUTBOX_PROCESS_CRASH => (outbox(crash), String::new()),
        IDEMPOTENCY => (String::new(), idempotency("\"power-loss\"")),
        IDEMPOTENCY_PROCESS_CRASH => (String::new(), idempotency(crash)),
        _ => (String::new(), String::new()),
    }
}

/// The baseline: `loops` concurrent loops of poll, parse, answer; nothing else. With
/// `raised`, its API token buckets are raised as the host's are.
fn bare_worker(activity: &str, endpoint: &str, loops: usize, raised: bool) {
    // SAFETY: set before any thread starts.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "bench");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "bench");
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let quotas = if raised { RAISED_QUOTAS } else { "" };
        let aws: AwsConfig = toml::from_str(&format!(
            "region = \"us-east-1\"\nendpoint_url = \"{endpoint}\"\n{}",
            quotas.replace("[aws.max_requests_per_second]", "[max_requests_per_second]")
        ))
        .expect("an [aws] table");
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
    let task = json!({"Type": "Task", "Resource": activity});
    let machine = state_machine(client, &format!("e2e-{suffix}"), task).await;
    (activity, machine)
}

/// A state machine `name` whose one state is `task` (its `Type`, `Resource` and
/// `Parameters`), with the bench's timeouts.
async fn state_machine(client: &Client, name: &str, mut task: serde_json::Value) -> String {
    task["TimeoutSeconds"] = json!(300);
    task["HeartbeatSeconds"] = json!(60);
    task["End"] = json!(true);
    let definition = json!({"StartAt": "Work", "States": {"Work": task}});
    client
        .create_state_machine()
        .name(name)
        .definition(definition.to_string())
        .role_arn("arn:aws:iam::000000000000:role/bench")
        .send()
        .await
        .unwrap()
        .state_machine_arn
}

/// A fresh queue (with a dead-letter queue) and a state machine whose one state sends
/// each task to it and waits for its token: (queue URL, state machine ARN).
async fn setup_callback(client: &Client, endpoint: &str) -> (String, String) {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .load()
        .await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let suffix = format!("{:08x}", fastrand::u32(..));
    let dlq = sqs
        .create_queue()
        .queue_name(format!("e2e-{suffix}-dlq"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    let queue = sqs
        .create_queue()
        .queue_name(format!("e2e-{suffix}"))
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy,
            json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 3}).to_string(),
        )
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let task = json!({
        "Type": "Task", "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
        "Parameters": {"QueueUrl": queue, "MessageBody": {"TaskToken.$": "$$.Task.Token", "hello.$": "$.hello"}}});
    let machine = state_machine(client, &format!("e2e-callback-{suffix}"), task).await;
    (queue, machine)
}

async fn start_executions(client: &Client, machine: &str, tasks: usize) {
    for i in 0..tasks {
        client
            .start_execution()
            .state_machine_arn(machine)
            .input(json!({"hello": format!("n{i}")}).to_string())
            .send()
            .await
            .unwrap();
    }
}

async fn wait_all_succeeded(client: &Client, machine: &str, tasks: usize) {
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
        if succeeded == tasks {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {succeeded} of {tasks} executions succeeded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Drains the worker's stdout in the background, so that its logs never block it.
fn drain(worker: &mut Child) {
    let stdout = worker.stdout.take().unwrap();
    std::thread::spawn(move || for _ in BufReader::new(stdout).lines().map_while(Result::ok) {});
}

/// The last process in the chain of first children under `pid` (`pid` itself when it
/// has none): the worker under a wrapper that forks it (strace), or the wrapper itself
/// when it runs the worker in its own process (valgrind).
fn innermost(mut pid: u32) -> u32 {
    while let Some(child) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()
        .and_then(|c| c.split_whitespace().next()?.parse().ok())
    {
        pid = child;
    }
    pid
}

fn cpu_seconds(pid: u32, ticks: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    let (utime, stime): (f64, f64) = (fields[11].parse().unwrap(), fields[12].parse().unwrap());
    (utime + stime) / ticks
}

/// Field `field` of the live threads' `schedstat` of `pid`, summed per [`THREAD_GROUPS`]
/// entry, then for the other threads: 0 is nanoseconds on a CPU (per-thread `stat`
/// ticks would lose up to 20 ms per thread to rounding, more than a small group's whole
/// share), 2 the time slices run (times scheduled in).
fn per_thread_group(pid: u32, field: usize) -> Vec<f64> {
    let mut groups = vec![0.0; THREAD_GROUPS.len() + 1];
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
        let value: f64 = schedstat
            .split_whitespace()
            .nth(field)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0.0);
        let group = THREAD_GROUPS
            .iter()
            .position(|(prefix, _)| name.starts_with(prefix))
            .unwrap_or(THREAD_GROUPS.len());
        groups[group] += value;
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
