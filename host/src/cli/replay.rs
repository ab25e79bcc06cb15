//! `sfn-wasm-host replay DIR --handler NEW.wasm`: runs every recorded task input through
//! a new handler version, in the sandbox with a local transport (nothing reaches Step
//! Functions), and says what would change. Exit 1 when anything did: a deploy pipeline
//! gates on it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use serde_json::Value;
use sfn_wasm_host::config::{Config, default_cache_dir};
use sfn_wasm_host::delivery::{Delivery, DeliveryOptions, LocalTransport, Unobserved};
use sfn_wasm_host::engine::{
    Capabilities, EngineConfig, Handler, TaskControl, TaskLimits, TaskRequest, WasmEngine,
};
use sfn_wasm_host::grants::{Grants, GrantsConfig};
use sfn_wasm_host::load::open_cache;
use sfn_wasm_host::record::{Record, RecordedAnswer, read_all};

use super::EXIT_USAGE;

/// The longest diff shown in the table; the rest is cut with `…`.
const DIFF_CHARS: usize = 160;

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The record folder (an activity's `record = "DIR"`).
    dir: PathBuf,
    /// The handler version to run the recorded inputs through (`.wasm`).
    #[arg(long)]
    handler: PathBuf,
    /// Run with the grants (outbound hosts, environment, folders), memory limit and
    /// timeout of the recorded activity in this config file; without it the handler
    /// gets no grants, `--memory-limit-mb` and `--timeout-seconds`.
    #[arg(long, value_name = "CONFIG")]
    same_grants: Option<PathBuf>,
    /// The cap on the handler's memory, in MiB, without `--same-grants`.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=4096))]
    memory_limit_mb: u64,
    /// How long each task may run, in seconds, without `--same-grants`.
    #[arg(long, default_value_t = 60.0)]
    timeout_seconds: f64,
}

/// How a replayed task compares with its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Same,
    Changed,
    NowFailing,
    NowPassing,
}

impl Verdict {
    fn name(self) -> &'static str {
        match self {
            Verdict::Same => "same",
            Verdict::Changed => "changed",
            Verdict::NowFailing => "now failing",
            Verdict::NowPassing => "now passing",
        }
    }
}

/// Prints one row per record and a summary; exits 0 when every answer is the same, 1
/// when any changed, 2 when replay could not run.
pub fn run(args: ReplayArgs) -> ExitCode {
    let _logs = super::init_logging(sfn_wasm_host::config::LogFormat::Text, false);
    match replay(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// What one activity's tasks run with.
struct Setting {
    grants: Arc<Grants>,
    limits: TaskLimits,
}

fn replay(args: &ReplayArgs) -> anyhow::Result<bool> {
    let records = read_all(&args.dir).map_err(anyhow::Error::msg)?;
    if records.is_empty() {
        anyhow::bail!(
            "{} holds no task records: point at an activity's `record` folder once it has recorded tasks",
            args.dir.display()
        );
    }
    let settings = settings(args, &records)?;
    let max_memory = settings
        .values()
        .map(|s| s.limits.memory_bytes)
        .max()
        .unwrap_or(args.memory_limit_mb << 20);
    let engine = WasmEngine::new(EngineConfig::sized(1, max_memory))?;
    let cache = open_cache(default_cache_dir().as_deref(), &engine);
    let handler = Handler::load(&engine, &args.handler, cache.as_ref())
        .with_context(|| format!("--handler {}", args.handler.display()))?
        .handler;
    let runtime = super::runtime(tokio::runtime::Builder::new_current_thread())
        .map_err(|_| anyhow::anyhow!("cannot start the async runtime"))?;

    println!(
        "replaying {} recorded tasks through {} (sha256 {})",
        records.len(),
        args.handler.display(),
        handler.digest()
    );
    println!(
        "{:<18} {:<34} {:<34} {:<12} DIFF",
        "TASK", "RECORDED", "NOW", "VERDICT"
    );
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    for (_, record) in &records {
        let setting = &settings[record.activity.as_str()];
        let now = runtime.block_on(run_one(&engine, &handler, record, setting));
        let (verdict, diff) = compare(&record.answer, &now);
        *counts.entry(verdict.name()).or_default() += 1;
        let row = format!(
            "{:<18} {:<34} {:<34} {:<12} {}",
            record.task_id,
            summary(&record.answer),
            summary(&now),
            verdict.name(),
            diff
        );
        println!("{}", row.trim_end());
    }
    let same = counts.get("same").copied().unwrap_or(0);
    println!(
        "{} tasks: {same} same, {} changed, {} now failing, {} now passing",
        records.len(),
        counts.get("changed").copied().unwrap_or(0),
        counts.get("now failing").copied().unwrap_or(0),
        counts.get("now passing").copied().unwrap_or(0),
    );
    Ok(same == records.len())
}

/// The grants and limits per recorded activity.
fn settings<'a>(
    args: &ReplayArgs,
    records: &'a [(PathBuf, Record)],
) -> anyhow::Result<BTreeMap<&'a str, Setting>> {
    let config = args
        .same_grants
        .as_deref()
        .map(Config::load)
        .transpose()
        .context("--same-grants")?;
    let timeout = super::timeout_arg(args.timeout_seconds)?;
    let mut settings = BTreeMap::new();
    for (path, record) in records {
        let arn = record.activity.as_str();
        if settings.contains_key(arn) {
            continue;
        }
        let setting = match &config {
            None => Setting {
                grants: Arc::new(Grants::resolve(&GrantsConfig::default())?),
                limits: TaskLimits {
                    memory_bytes: args.memory_limit_mb << 20,
                    timeout,
                    heartbeat_every: None,
                },
            },
            Some(config) => {
                let activity = config.activities.iter().find(|a| *a.name == *arn).with_context(|| {
                    format!(
                        "--same-grants {}: no [[activity]] has arn = {arn:?} (nor [[callback]] queue_url), the activity of {}",
                        config.file.display(),
                        path.display()
                    )
                })?;
                Setting {
                    grants: Arc::new(Grants::resolve(&activity.grants).with_context(|| {
                        format!("--same-grants {}: activity {arn}", config.file.display())
                    })?),
                    limits: TaskLimits {
                        memory_bytes: activity.memory_limit_bytes,
                        timeout: activity.task_timeout,
                        heartbeat_every: None,
                    },
                }
            }
        };
        settings.insert(arn, setting);
    }
    Ok(settings)
}

/// Runs one recorded input; the answer it gets now.
async fn run_one(
    engine: &WasmEngine,
    handler: &Handler,
    record: &Record,
    setting: &Setting,
) -> RecordedAnswer {
    let delivery = Delivery::new(
        Arc::new(LocalTransport),
        Arc::new(Unobserved),
        TaskControl::default(),
        DeliveryOptions::default(),
    );
    let request = TaskRequest {
        input: record.input.clone(),
        activity_arn: record.activity.as_str().into(),
        worker_name: "replay".into(),
        task_id: record.task_id.as_str().into(),
        limits: setting.limits,
        control: TaskControl::default(),
        capabilities: Capabilities::none().with(setting.grants.clone()),
    };
    handler.run(engine, request, delivery.clone()).await;
    delivery.settled().await;
    match delivery.state().answer() {
        Some(answer) => RecordedAnswer::new(answer, delivery.answered_by()),
        None => RecordedAnswer::HostFailure {
            error: "SfnWasmHost.NoResponse".to_owned(),
            cause: "no answer was recorded".to_owned(),
        },
    }
}

/// The verdict, and a short diff for a change.
fn compare(recorded: &RecordedAnswer, now: &RecordedAnswer) -> (Verdict, String) {
    use RecordedAnswer::{Failure, HostFailure, Success};
    match (recorded, now) {
        (Success { output: before }, Success { output: after }) => {
            let (before, after) = (json(before), json(after));
            if before == after {
                (Verdict::Same, String::new())
            } else {
                (Verdict::Changed, diff(&before, &after))
            }
        }
        (Success { .. }, Failure { error, .. } | HostFailure { error, .. }) => {
            (Verdict::NowFailing, error.clone())
        }
        (Failure { .. } | HostFailure { .. }, Success { .. }) => {
            (Verdict::NowPassing, String::new())
        }
        // The handler's own failures compare by name and cause; the host's by name (its
        // causes carry backtraces and timings).
        (Failure { error: a, cause: x }, Failure { error: b, cause: y }) if a == b && x == y => {
            (Verdict::Same, String::new())
        }
        (HostFailure { error: a, .. }, HostFailure { error: b, .. }) if a == b => {
            (Verdict::Same, String::new())
        }
        (before, after) => (
            Verdict::Changed,
            cut(format!("{} -> {}", summary(before), summary(after))),
        ),
    }
}

/// An output as JSON (a string if it is not JSON, which Step Functions would refuse).
fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// What changed, as the operations of an RFC 6902 JSON Patch: `replace /greeting "Hi"`.
fn diff(before: &Value, after: &Value) -> String {
    let patch = json_patch::diff(before, after);
    let ops: Vec<String> = patch
        .0
        .iter()
        .map(|op| match op {
            json_patch::PatchOperation::Add(op) => format!("add {} {}", op.path, op.value),
            json_patch::PatchOperation::Remove(op) => format!("remove {}", op.path),
            json_patch::PatchOperation::Replace(op) => {
                format!("replace {} {}", op.path, op.value)
            }
            other => serde_json::to_string(other).unwrap_or_default(),
        })
        .collect();
    cut(ops.join("; "))
}

fn cut(mut text: String) -> String {
    if let Some((at, _)) = text.char_indices().nth(DIFF_CHARS) {
        text.truncate(at);
        text.push('…');
    }
    text
}

/// `success`, `failure:Name`, `host_failure:SfnWasmHost.Name`.
fn summary(answer: &RecordedAnswer) -> String {
    match answer {
        RecordedAnswer::Success { .. } => "success".to_owned(),
        RecordedAnswer::Failure { error, .. } => format!("failure:{error}"),
        RecordedAnswer::HostFailure { error, .. } => format!("host_failure:{error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn success(output: &str) -> RecordedAnswer {
        RecordedAnswer::Success {
            output: output.into(),
        }
    }

    #[test]
    fn verdicts_and_diffs() {
        assert_eq!(
            compare(
                &success(r#"{"a":1,"b":[1]}"#),
                &success(r#"{"b":[1], "a":1}"#)
            )
            .0,
            Verdict::Same
        );
        let (verdict, diff) = compare(
            &success(r#"{"greeting":"Hello"}"#),
            &success(r#"{"greeting":"Hi"}"#),
        );
        assert_eq!(verdict, Verdict::Changed);
        assert_eq!(diff, r#"replace /greeting "Hi""#);
        let trap = RecordedAnswer::HostFailure {
            error: "SfnWasmHost.Trap".into(),
            cause: "at 0x1".into(),
        };
        assert_eq!(
            compare(&success("{}"), &trap),
            (Verdict::NowFailing, "SfnWasmHost.Trap".into())
        );
        assert_eq!(compare(&trap, &success("{}")).0, Verdict::NowPassing);
        let other_trap = RecordedAnswer::HostFailure {
            error: "SfnWasmHost.Trap".into(),
            cause: "at 0x2".into(),
        };
        assert_eq!(compare(&trap, &other_trap).0, Verdict::Same);
        let failure = |cause: &str| RecordedAnswer::Failure {
            error: "Invalid".into(),
            cause: cause.into(),
        };
        assert_eq!(compare(&failure("x"), &failure("x")).0, Verdict::Same);
        assert_eq!(compare(&failure("x"), &failure("y")).0, Verdict::Changed);
        assert!(cut("é".repeat(500)).chars().count() == DIFF_CHARS + 1);
    }
}
