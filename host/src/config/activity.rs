//! `[[activity]]`: one activity's handler, pollers, task slots, limits and retries.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::KeyPath;
pub use super::callback::CallbackConfig;
use super::callback::CallbackKeys;
use super::checks::{Problem, at, optional, seconds, seconds_within, within};
use super::grants::{RawAws, RawDir, RawGrants, RawOutbound};
use super::progress::{IdempotencyConfig, ProgressConfig, RawIdempotency, RawProgress};
use super::rollout::{RawRollout, RolloutConfig};
use crate::aws::AwsConfig;
use crate::grants::GrantsConfig;
use crate::ids::ActivityArn;
use crate::source::{HandlerSource, VerifyKey, parse_pin};

/// The largest memory cap a task may have: the whole 32-bit address space.
pub const MAX_MEMORY_LIMIT_MB: u64 = 4096;
/// The most pollers one activity may have (Step Functions allows 1,000 per ARN).
pub const MAX_POLLERS: u32 = 1000;

/// Declares the two task-source tables as written, from one list of the keys an
/// activity and a callback share: `RawActivity` (`arn`, then the shared keys) and
/// `RawCallback` (its queue keys, then the shared keys), so that an unknown key's error
/// lists each table's own keys, and `RawCallback::split`, which hands the shared keys to
/// the one `resolve` both use. (serde's `flatten` cannot be used with
/// `deny_unknown_fields`.)
macro_rules! raw_task_tables {
    ($($(#[$meta:meta])* $field:ident: $ty:ty,)*) => {
        /// One `[[activity]]` as written.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(super) struct RawActivity {
            pub arn: String,
            $($(#[$meta])* pub $field: $ty,)*
        }

        /// One `[[callback]]` as written: the queue keys, then an activity's.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(super) struct RawCallback {
            pub queue_url: String,
            pub token: Option<String>,
            pub input: Option<String>,
            pub wait_seconds: Option<u32>,
            pub visibility_timeout_seconds: Option<u32>,
            $($(#[$meta])* pub $field: $ty,)*
        }

        impl RawCallback {
            /// The callback's own keys, and the rest as an activity's (with no ARN),
            /// for the one `resolve` both share.
            pub(super) fn split(self) -> (CallbackKeys, RawActivity) {
                let keys = CallbackKeys {
                    queue_url: self.queue_url,
                    token: self.token,
                    input: self.input,
                    wait_seconds: self.wait_seconds,
                    visibility_timeout_seconds: self.visibility_timeout_seconds,
                };
                let rest = RawActivity {
                    arn: String::new(),
                    $($field: self.$field,)*
                };
                (keys, rest)
            }
        }
    };
}

raw_task_tables! {
        handler: String,
        sha256: Option<String>,
        verify_key: Option<PathBuf>,
        source_poll_seconds: Option<f64>,
        handler_max_mb: Option<u64>,
        rollout: Option<RawRollout>,
        record: Option<PathBuf>,
        record_max_mb: Option<u64>,
        #[serde(default = "default_workers")]
        workers: u32,
        pollers: Option<u32>,
        max_concurrent_tasks: Option<u32>,
        max_tasks_per_second: Option<f64>,
        #[serde(default = "default_task_timeout")]
        task_timeout_seconds: f64,
        #[serde(default = "default_memory_limit")]
        memory_limit_mb: u64,
        #[serde(default = "default_restart_interval")]
        restart_interval_ms: u64,
        #[serde(default)]
        polling: PollingConfig,
        #[serde(default = "default_true")]
        watch: bool,
        heartbeat_seconds: Option<f64>,
        #[serde(default = "default_cancel_grace")]
        cancel_grace_seconds: f64,
        #[serde(default)]
        allowed_outbound_hosts: Vec<String>,
        #[serde(default)]
        env: toml::Table,
        #[serde(default)]
        dir: Vec<RawDir>,
        #[serde(default)]
        outbound: RawOutbound,
        aws: Option<RawAws>,
        progress: Option<RawProgress>,
        idempotency: Option<RawIdempotency>,
}

fn default_cancel_grace() -> f64 {
    5.0
}

fn default_true() -> bool {
    true
}

fn default_workers() -> u32 {
    1
}

fn default_task_timeout() -> f64 {
    300.0
}

fn default_memory_limit() -> u64 {
    128
}

fn default_restart_interval() -> u64 {
    2000
}

/// One `[[activity]]` or `[[callback]]`, resolved: the two share every key but where
/// their tasks come from.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityConfig {
    /// Its name in events, metrics labels, `/status` and records: the activity's ARN, or
    /// the callback's queue URL.
    pub name: Arc<str>,
    /// Where its tasks come from.
    pub source: TaskSource,
    /// Its table, as errors name it: `activity[0]`, `callback[1]`.
    pub key: KeyPath,
    /// Where the handler component comes from: a file (its path made absolute), an S3
    /// object or an HTTPS URL.
    pub handler: HandlerSource,
    /// `sha256`: the only module digest accepted, at start and for every new version.
    pub sha256: Option<String>,
    /// `source_poll_seconds`: how often an S3 or HTTPS source is asked whether it changed.
    pub source_poll: Duration,
    /// `handler_max_mb`, in bytes: the largest module read from a source.
    pub handler_max_bytes: u64,
    /// `[activity.rollout]`: how a new version comes in; `None`: it replaces the old at once.
    pub rollout: Option<RolloutConfig>,
    /// `record = "DIR"`: where each task's input and answer are written.
    pub record: Option<RecordConfig>,
    /// Concurrent pollers (`pollers`, else `workers`). A poller polls only when one of
    /// the activity's task slots is free.
    pub pollers: u32,
    /// The most tasks of this activity that run at once (`max_concurrent_tasks`, else
    /// `workers`): its task slots.
    pub max_concurrent_tasks: u32,
    /// `max_tasks_per_second`: the most tasks this host starts per second for the
    /// activity (a token bucket holding a second's worth; a poller takes a token before
    /// it polls); `None`: no limit.
    pub max_tasks_per_second: Option<f64>,
    /// The deadline of one task.
    pub task_timeout: Duration,
    /// The memory cap of one task, in bytes.
    pub memory_limit_bytes: u64,
    /// How long the pool waits before replacing a worker that stopped on errors.
    pub restart_interval: Duration,
    /// Poll retries.
    pub polling: PollingConfig,
    /// Whether a change to the handler (its file, or a remote source's, polled) brings the
    /// new version in; SIGHUP always does.
    pub watch: bool,
    /// When set, the host sends `SendTaskHeartbeat` this often while a task runs,
    /// whatever the guest does.
    pub heartbeat_interval: Option<Duration>,
    /// How long a guest whose task Step Functions closed may take to return after its
    /// `cancelled()` turned true, before it is aborted.
    pub cancel_grace: Duration,
    /// What the guests may reach: outbound HTTP, environment, folders. None by default.
    pub grants: GrantsConfig,
    /// `[activity.progress]`: where checkpoints are kept; `None`: they are unavailable.
    pub progress: Option<ProgressConfig>,
    /// `[activity.idempotency]`: answers kept by key; `None`: every task runs.
    pub idempotency: Option<IdempotencyConfig>,
}

/// Where a task source's tasks come from.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskSource {
    /// `[[activity]]`: polled with `GetActivityTask`.
    Activity(ActivityArn),
    /// `[[callback]]`: `.waitForTaskToken` tasks received from an SQS queue.
    Callback(CallbackConfig),
}

impl TaskSource {
    /// `activity` or `callback`: the `task_source` of events, and the table's name.
    pub fn kind(&self) -> &'static str {
        match self {
            TaskSource::Activity(_) => "activity",
            TaskSource::Callback(_) => "callback",
        }
    }

    /// The callback's queue settings, for a callback.
    pub fn callback(&self) -> Option<&CallbackConfig> {
        match self {
            TaskSource::Activity(_) => None,
            TaskSource::Callback(callback) => Some(callback),
        }
    }
}

/// `record` and `record_max_mb`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordConfig {
    /// The folder (created, private, if missing).
    pub dir: PathBuf,
    /// The most its records may take, in bytes; the oldest are dropped past it.
    pub max_bytes: u64,
}

/// `[activity.polling]`: how a worker retries failed polls before it gives up.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PollingConfig {
    /// Failed polls in a row after which the worker stops (and the pool restarts it).
    pub max_attempts: u32,
    /// The wait after the first failed poll, in seconds.
    pub interval_seconds: f64,
    /// Each further wait is the previous one times this.
    pub backoff_rate: f64,
}

impl Default for PollingConfig {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            interval_seconds: 1.0,
            backoff_rate: 1.2,
        }
    }
}

impl PollingConfig {
    /// The wait after the `attempt`-th failed poll in a row (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let seconds = self.interval_seconds * self.backoff_rate.powi(exponent);
        Duration::try_from_secs_f64(seconds)
            .unwrap_or(Duration::from_secs(3600))
            .min(Duration::from_secs(3600))
    }

    /// Checks `[activity.polling]`.
    fn check(self) -> Result<Self, Problem> {
        if self.max_attempts == 0 {
            return Err(at("polling.max_attempts")("must be at least 1".into()));
        }
        within(self.interval_seconds, 0.0..=3600.0).map_err(at("polling.interval_seconds"))?;
        within(self.backoff_rate, 1.0..=10.0).map_err(at("polling.backoff_rate"))?;
        Ok(self)
    }
}

impl ActivityConfig {
    /// Checks one `[[activity]]` whose ARN is already checked; relative paths resolve
    /// against `base`, the config's folder. Keys are checked in the order a reader
    /// meets them: workers, limits, polling, handler, rollout, record, grants, progress, idempotency.
    pub(super) fn resolve(
        source: TaskSource,
        key: KeyPath,
        raw: RawActivity,
        base: &Path,
        host_aws: &AwsConfig,
    ) -> Result<Self, Problem> {
        let (pollers, max_concurrent_tasks) = resolve_slots(&raw)?;
        let task_timeout = resolve_task_timeout(raw.task_timeout_seconds)?;
        within(raw.memory_limit_mb, 1..=MAX_MEMORY_LIMIT_MB).map_err(at("memory_limit_mb"))?;
        let polling = raw.polling.check()?;
        let heartbeat_interval = resolve_heartbeat(raw.heartbeat_seconds)?;
        let cancel_grace = seconds_within(raw.cancel_grace_seconds, 0.0, 3600.0)
            .map_err(at("cancel_grace_seconds"))?;
        let handler = HandlerKeys::resolve(&raw, base)?;
        let record = RecordConfig::resolve(&raw, base)?;
        let grants = resolve_grants(&raw, base, host_aws)?;
        let progress = raw
            .progress
            .as_ref()
            .map(|progress| ProgressConfig::resolve(progress, base))
            .transpose()?;
        let idempotency = raw
            .idempotency
            .as_ref()
            .map(|idempotency| IdempotencyConfig::resolve(idempotency, base))
            .transpose()?;
        Ok(Self {
            name: match &source {
                TaskSource::Activity(arn) => arn.shared(),
                TaskSource::Callback(callback) => Arc::from(callback.queue_url.as_str()),
            },
            source,
            key,
            handler: handler.handler,
            sha256: handler.sha256,
            source_poll: handler.source_poll,
            handler_max_bytes: handler.handler_max_bytes,
            rollout: handler.rollout,
            record,
            pollers,
            max_concurrent_tasks,
            max_tasks_per_second: raw.max_tasks_per_second,
            task_timeout,
            memory_limit_bytes: raw.memory_limit_mb << 20,
            restart_interval: Duration::from_millis(raw.restart_interval_ms),
            polling,
            watch: raw.watch,
            heartbeat_interval,
            cancel_grace,
            grants,
            progress,
            idempotency,
        })
    }
}

/// Checks `workers`, `pollers`, `max_concurrent_tasks` and `max_tasks_per_second`: the
/// pollers and the task slots, each `workers` unless set.
fn resolve_slots(raw: &RawActivity) -> Result<(u32, u32), Problem> {
    within(raw.workers, 1..=MAX_POLLERS).map_err(at("workers"))?;
    let pollers = raw.pollers.unwrap_or(raw.workers);
    within(pollers, 1..=MAX_POLLERS).map_err(|message| {
        at("pollers")(format!(
            "{message} (Step Functions allows at most 1000 pollers per activity)"
        ))
    })?;
    let max_concurrent_tasks = raw.max_concurrent_tasks.unwrap_or(raw.workers);
    within(max_concurrent_tasks, 1..=1_000_000).map_err(at("max_concurrent_tasks"))?;
    if let Some(rate) = raw.max_tasks_per_second {
        within(rate, 0.01..=100_000.0).map_err(at("max_tasks_per_second"))?;
    }
    Ok((pollers, max_concurrent_tasks))
}

/// Checks `task_timeout_seconds`: more than 0, at most a year.
fn resolve_task_timeout(value: f64) -> Result<Duration, Problem> {
    seconds(value, 0.001, 31_536_000.0).ok_or_else(|| {
        at("task_timeout_seconds")(format!(
            "must be more than 0 and at most 31536000 (a year); got {value}"
        ))
    })
}

/// Checks `heartbeat_seconds`; `None` when it is left out (no automatic heartbeats).
fn resolve_heartbeat(value: Option<f64>) -> Result<Option<Duration>, Problem> {
    value
        .map(|value| {
            seconds(value, 0.001, 86_400.0).ok_or_else(|| {
                at("heartbeat_seconds")(format!(
                    "must be more than 0 and at most 86400; got {value}. Leave it out for no automatic heartbeats"
                ))
            })
        })
        .transpose()
}

/// Checks the grants keys of an `[[activity]]` (see [`super::grants`]).
fn resolve_grants(
    raw: &RawActivity,
    base: &Path,
    host_aws: &AwsConfig,
) -> Result<GrantsConfig, Problem> {
    super::grants::resolve(
        &RawGrants {
            allowed_outbound_hosts: &raw.allowed_outbound_hosts,
            env: &raw.env,
            dir: &raw.dir,
            outbound: &raw.outbound,
            aws: raw.aws.as_ref(),
            host_aws,
        },
        base,
    )
}

/// The keys that say where the handler comes from and how a new version comes in.
struct HandlerKeys {
    handler: HandlerSource,
    sha256: Option<String>,
    source_poll: Duration,
    handler_max_bytes: u64,
    rollout: Option<RolloutConfig>,
}

impl HandlerKeys {
    /// Checks `handler`, `verify_key`, `sha256`, `source_poll_seconds`, `handler_max_mb`
    /// and `[activity.rollout]`, in that order.
    fn resolve(raw: &RawActivity, base: &Path) -> Result<Self, Problem> {
        let mut handler = HandlerSource::parse(&raw.handler, base).map_err(at("handler"))?;
        if let Some(path) = &raw.verify_key {
            handler = handler
                .with_verify_key(|| VerifyKey::read(&base.join(path)))
                .map_err(at("verify_key"))?;
        }
        let sha256 = optional(raw.sha256.as_deref(), "sha256", parse_pin)?;
        let source_poll = seconds_within(raw.source_poll_seconds.unwrap_or(30.0), 1.0, 86_400.0)
            .map_err(at("source_poll_seconds"))?;
        let handler_max_mb =
            within(raw.handler_max_mb.unwrap_or(256), 1..=4096).map_err(at("handler_max_mb"))?;
        let rollout = raw
            .rollout
            .as_ref()
            .map(RolloutConfig::resolve)
            .transpose()
            .map_err(|(name, message)| (format!("rollout.{name}"), message))?;
        Ok(Self {
            handler,
            sha256,
            source_poll,
            handler_max_bytes: handler_max_mb << 20,
            rollout,
        })
    }
}

impl RecordConfig {
    /// Checks `record` and `record_max_mb`; `None` when nothing is recorded.
    fn resolve(raw: &RawActivity, base: &Path) -> Result<Option<Self>, Problem> {
        let Some(dir) = &raw.record else {
            if raw.record_max_mb.is_some() {
                return Err(at("record_max_mb")(
                    "bounds `record`, which is not set: add `record = \"DIR\"` or remove it".into(),
                ));
            }
            return Ok(None);
        };
        let dir = base.join(dir);
        if dir.exists() && !dir.is_dir() {
            return Err(at("record")(format!(
                "{} is not a folder: name a folder (it is created if missing)",
                dir.display()
            )));
        }
        let max_mb =
            within(raw.record_max_mb.unwrap_or(100), 1..=1 << 20).map_err(at("record_max_mb"))?;
        Ok(Some(Self {
            dir,
            max_bytes: max_mb << 20,
        }))
    }
}
