//! `config.toml`: parsing, defaults and validation.
//!
//! Every error names the file and the key (`activity[1].workers`) and says what to do, and
//! all of them are found before anything starts polling. Unknown keys are errors, not
//! silently ignored: a typo in `memory_limit_mb` must not quietly run with the default.

use std::fmt;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::grants::{DirGrant, EnvSource, EnvVar, GrantsConfig, check_guest_path};
use crate::outbound::{AllowedHost, OutboundLimits};
use crate::rollout::RolloutConfig;
use crate::source::{HandlerSource, parse_pin};

/// The largest memory cap a task may have: the whole 32-bit address space.
pub const MAX_MEMORY_LIMIT_MB: u64 = 4096;
/// The most pollers one activity may have (Step Functions allows 1,000 per ARN).
pub const MAX_WORKERS: u32 = 1000;

/// A validated configuration, with paths resolved against the config file's folder.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it came from.
    pub file: PathBuf,
    /// How to reach Step Functions.
    pub aws: AwsConfig,
    /// Process-wide settings.
    pub host: HostConfig,
    /// One entry per activity; never empty, ARNs unique.
    pub activities: Vec<ActivityConfig>,
}

/// The `[aws]` table.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    /// The region; the default chain (`AWS_REGION`, profile) otherwise.
    pub region: Option<String>,
    /// Another endpoint, such as a local emulator.
    pub endpoint_url: Option<String>,
    /// `[aws.max_requests_per_second]`: the host's own cap per API; the account's
    /// default quota for the region otherwise.
    #[serde(default)]
    pub max_requests_per_second: RateOverrides,
}

/// `[aws.max_requests_per_second]`, keyed by API name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateOverrides {
    /// Polls.
    #[serde(rename = "GetActivityTask")]
    pub get_activity_task: Option<f64>,
    /// Successes.
    #[serde(rename = "SendTaskSuccess")]
    pub send_task_success: Option<f64>,
    /// Failures.
    #[serde(rename = "SendTaskFailure")]
    pub send_task_failure: Option<f64>,
    /// Heartbeats.
    #[serde(rename = "SendTaskHeartbeat")]
    pub send_task_heartbeat: Option<f64>,
}

/// Requests per second the host allows itself, per API.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ApiRates {
    /// `GetActivityTask`.
    pub get_activity_task: f64,
    /// `SendTaskSuccess`.
    pub send_task_success: f64,
    /// `SendTaskFailure`.
    pub send_task_failure: f64,
    /// `SendTaskHeartbeat`.
    pub send_task_heartbeat: f64,
}

/// Regions where Step Functions' default API quotas are the larger ones (a bucket of
/// 3,000 refilled at 500 per second); elsewhere 1,500 and 300.
const LARGE_QUOTA_REGIONS: [&str; 3] = ["us-east-1", "us-west-2", "eu-west-1"];
/// A client-side bucket holds this many seconds of its rate, as the service's do (3,000
/// for 500 per second; 1,500 for 300).
pub const BURST_SECONDS: f64 = 5.0;

impl AwsConfig {
    /// The rate per API: the configured one, else the region's default quota.
    pub fn rates(&self, region: Option<&str>) -> ApiRates {
        let default = if region.is_some_and(|r| LARGE_QUOTA_REGIONS.contains(&r)) {
            500.0
        } else {
            300.0
        };
        let set = &self.max_requests_per_second;
        ApiRates {
            get_activity_task: set.get_activity_task.unwrap_or(default),
            send_task_success: set.send_task_success.unwrap_or(default),
            send_task_failure: set.send_task_failure.unwrap_or(default),
            send_task_heartbeat: set.send_task_heartbeat.unwrap_or(default),
        }
    }
}

/// The log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For people.
    #[default]
    Text,
    /// One JSON object per line, on stdout.
    Json,
}

/// The `[host]` table, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct HostConfig {
    /// Worker names are `PREFIX:RANDOM`.
    pub worker_prefix: String,
    /// After SIGTERM, how long running tasks may take before they are aborted.
    pub shutdown_grace: Duration,
    /// The log format, unless `--log-format` overrides it.
    pub log_format: LogFormat,
    /// Where compiled handlers are kept between runs; `None` when `cache = false` or no
    /// folder could be found.
    pub cache_dir: Option<PathBuf>,
    /// The most the compile cache may hold, in bytes; the least recently used entries
    /// are evicted past it.
    pub cache_max_bytes: u64,
    /// How long the host keeps retrying an answer Step Functions could not be reached
    /// for (network, 5xx, throttling) before it gives up on it.
    pub answer_retry: Duration,
    /// Where the admin server (`/metrics`, `/healthz`, `/readyz`, `/status`) listens;
    /// `None`: no admin server.
    pub admin_listen: Option<std::net::SocketAddr>,
    /// `[host.otel] endpoint`: the OTLP/HTTP collector traces go to (`/v1/traces` is
    /// appended). `None`: the `OTEL_EXPORTER_OTLP_ENDPOINT` variable decides, at start.
    pub otel_endpoint: Option<String>,
}

/// Parses an admin server address, `IP:PORT` (`127.0.0.1:9464`, `[::1]:9464`,
/// `0.0.0.0:9464` to listen on every interface).
///
/// # Errors
/// What is wrong, in words for a config error or a `--admin-listen` message.
pub fn parse_listen(text: &str) -> Result<std::net::SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        format!(
            "must be IP:PORT, like \"127.0.0.1:9464\" (a host name is not accepted); got {text:?}"
        )
    })
}

/// Checks an OTLP/HTTP endpoint: an `http://` or `https://` URL with a host.
///
/// # Errors
/// What is wrong, in words.
pub fn check_otel_endpoint(text: &str) -> Result<String, String> {
    let text = text.trim();
    let rest = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(text.to_owned()),
        _ => Err(format!(
            "must be an http:// or https:// URL of an OTLP/HTTP collector, like \"http://127.0.0.1:4318\"; got {text:?}"
        )),
    }
}

/// One `[[activity]]`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityConfig {
    /// The activity ARN.
    pub arn: String,
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
    pub workers: u32,
    /// The most tasks of this activity that run at once (`max_concurrent_tasks`, else
    /// `workers`): its task slots.
    pub max_concurrent_tasks: u32,
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
}

/// A config problem: which file, which key, what is wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// The key, as a TOML path (`activity[0].workers`); empty for the file as a whole.
    pub key: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}: `{}`: {}",
                self.file.display(),
                self.key,
                self.message
            )
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    aws: AwsConfig,
    #[serde(default)]
    host: RawHost,
    #[serde(default)]
    activity: Vec<RawActivity>,
}

// Every field is optional, so that a missing `[host]` table and an empty one mean the
// same: serde's `#[serde(default = ...)]` applies only to keys of a table that exists,
// and a derived `Default` would turn `cache` off for a config with no `[host]` at all.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHost {
    worker_prefix: Option<String>,
    shutdown_grace_seconds: Option<f64>,
    #[serde(default)]
    log_format: LogFormat,
    cache_dir: Option<PathBuf>,
    cache: Option<bool>,
    cache_max_mb: Option<u64>,
    answer_retry_seconds: Option<f64>,
    admin_listen: Option<String>,
    otel: Option<RawOtel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOtel {
    endpoint: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawActivity {
    arn: String,
    handler: String,
    sha256: Option<String>,
    source_poll_seconds: Option<f64>,
    handler_max_mb: Option<u64>,
    rollout: Option<RawRollout>,
    record: Option<PathBuf>,
    record_max_mb: Option<u64>,
    #[serde(default = "default_workers")]
    workers: u32,
    pollers: Option<u32>,
    max_concurrent_tasks: Option<u32>,
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
    outbound: OutboundLimits,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRollout {
    canary_percent: Option<u32>,
    promote_after_tasks: Option<u64>,
    max_failure_rate_increase: Option<f64>,
    rollback_min_tasks: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDir {
    host: PathBuf,
    guest: String,
    #[serde(default)]
    writable: bool,
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

impl Config {
    /// Reads and validates `file`.
    ///
    /// # Errors
    /// A [`ConfigError`] for the first problem found: unreadable file, TOML syntax, unknown
    /// or missing keys, bad values. Handlers are only checked to exist here; loading them
    /// is the engine's job.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|err| ConfigError {
            file: file.to_owned(),
            key: String::new(),
            message: format!("cannot read the config file: {err}"),
        })?;
        Self::parse(file, &text)
    }

    /// Validates `text` as if read from `file` (whose folder relative handler paths
    /// resolve against).
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn parse(file: &Path, text: &str) -> Result<Self, ConfigError> {
        let error = |key: String, message: String| ConfigError {
            file: file.to_owned(),
            key,
            message,
        };
        let raw: RawConfig = toml::from_str(text)
            .map_err(|err| error(String::new(), err.to_string().trim_end().to_owned()))?;
        if raw.activity.is_empty() {
            return Err(error(
                "activity".into(),
                "no activities: add at least one [[activity]] table with `arn` and `handler`"
                    .into(),
            ));
        }
        if let Some(url) = &raw.aws.endpoint_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(error(
                "aws.endpoint_url".into(),
                format!("must be an http:// or https:// URL, not {url:?}"),
            ));
        }

        let rates = &raw.aws.max_requests_per_second;
        for (name, rate) in [
            ("GetActivityTask", rates.get_activity_task),
            ("SendTaskSuccess", rates.send_task_success),
            ("SendTaskFailure", rates.send_task_failure),
            ("SendTaskHeartbeat", rates.send_task_heartbeat),
        ] {
            if let Some(rate) = rate
                && !(rate.is_finite() && rate > 0.0 && rate <= 100_000.0)
            {
                return Err(error(
                    format!("aws.max_requests_per_second.{name}"),
                    format!(
                        "must be more than 0 and at most 100000 requests per second; got {rate}"
                    ),
                ));
            }
        }
        let grace = raw.host.shutdown_grace_seconds.unwrap_or(30.0);
        let shutdown_grace = seconds_within(grace, 0.0, 86_400.0)
            .map_err(|message| error("host.shutdown_grace_seconds".into(), message))?;
        let worker_prefix = match raw.host.worker_prefix {
            Some(prefix) if prefix.trim().is_empty() || prefix.len() > 64 => {
                return Err(error(
                    "host.worker_prefix".into(),
                    "must be 1 to 64 characters".into(),
                ));
            }
            Some(prefix) => prefix,
            None => gethostname::gethostname().to_string_lossy().into_owned(),
        };
        // Relative paths resolve against the config file's folder, made absolute so that
        // the file watcher and logs see the same path whatever the working directory.
        let folder = file.parent().unwrap_or(Path::new("."));
        let base = std::path::absolute(folder).unwrap_or_else(|_| folder.to_owned());
        let cache_dir = match (raw.host.cache.unwrap_or(true), raw.host.cache_dir) {
            (false, _) => None,
            (true, Some(dir)) => Some(base.join(dir)),
            (true, None) => default_cache_dir(),
        };
        let cache_max_mb = within(raw.host.cache_max_mb.unwrap_or(1024), 1..=1 << 20)
            .map_err(|message| error("host.cache_max_mb".into(), message))?;
        let retry = raw.host.answer_retry_seconds.unwrap_or(600.0);
        let answer_retry = seconds_within(retry, 0.0, 86_400.0)
            .map_err(|message| error("host.answer_retry_seconds".into(), message))?;
        let admin_listen = raw
            .host
            .admin_listen
            .as_deref()
            .map(parse_listen)
            .transpose()
            .map_err(|message| error("host.admin_listen".into(), message))?;
        let otel_endpoint = match raw.host.otel {
            Some(otel) => Some(
                check_otel_endpoint(&otel.endpoint)
                    .map_err(|message| error("host.otel.endpoint".into(), message))?,
            ),
            None => None,
        };
        let host = HostConfig {
            otel_endpoint,
            worker_prefix,
            shutdown_grace,
            log_format: raw.host.log_format,
            cache_dir,
            cache_max_bytes: cache_max_mb << 20,
            answer_retry,
            admin_listen,
        };

        let mut activities: Vec<ActivityConfig> = Vec::with_capacity(raw.activity.len());
        for (index, activity) in raw.activity.into_iter().enumerate() {
            let key = |name: &str| format!("activity[{index}].{name}");
            check_arn(&activity.arn).map_err(|message| error(key("arn"), message))?;
            if let Some(first) = activities.iter().position(|a| a.arn == activity.arn) {
                return Err(error(
                    key("arn"),
                    format!(
                        "the same ARN as activity[{first}]: give each activity one [[activity]] table"
                    ),
                ));
            }
            within(activity.workers, 1..=MAX_WORKERS)
                .map_err(|message| error(key("workers"), message))?;
            let pollers = activity.pollers.unwrap_or(activity.workers);
            within(pollers, 1..=MAX_WORKERS).map_err(|message| {
                error(
                    key("pollers"),
                    format!("{message} (Step Functions allows at most 1000 pollers per activity)"),
                )
            })?;
            let max_concurrent_tasks = activity.max_concurrent_tasks.unwrap_or(activity.workers);
            within(max_concurrent_tasks, 1..=1_000_000)
                .map_err(|message| error(key("max_concurrent_tasks"), message))?;
            let task_timeout = seconds(activity.task_timeout_seconds, 0.001, 31_536_000.0)
                .ok_or_else(|| {
                    error(
                        key("task_timeout_seconds"),
                        format!(
                            "must be more than 0 and at most 31536000 (a year); got {}",
                            activity.task_timeout_seconds
                        ),
                    )
                })?;
            within(activity.memory_limit_mb, 1..=MAX_MEMORY_LIMIT_MB)
                .map_err(|message| error(key("memory_limit_mb"), message))?;
            let polling = activity.polling;
            if polling.max_attempts == 0 {
                return Err(error(
                    key("polling.max_attempts"),
                    "must be at least 1".into(),
                ));
            }
            within(polling.interval_seconds, 0.0..=3600.0)
                .map_err(|message| error(key("polling.interval_seconds"), message))?;
            within(polling.backoff_rate, 1.0..=10.0)
                .map_err(|message| error(key("polling.backoff_rate"), message))?;
            let heartbeat_interval = activity
                .heartbeat_seconds
                .map(|value| {
                    seconds(value, 0.001, 86_400.0).ok_or_else(|| {
                        error(
                            key("heartbeat_seconds"),
                            format!(
                                "must be more than 0 and at most 86400; got {value}. Leave it out for no automatic heartbeats"
                            ),
                        )
                    })
                })
                .transpose()?;
            let cancel_grace = seconds_within(activity.cancel_grace_seconds, 0.0, 3600.0)
                .map_err(|message| error(key("cancel_grace_seconds"), message))?;
            let handler = HandlerSource::parse(&activity.handler, &base)
                .map_err(|message| error(key("handler"), message))?;
            let sha256 = activity
                .sha256
                .as_deref()
                .map(parse_pin)
                .transpose()
                .map_err(|message| error(key("sha256"), message))?;
            let source_poll =
                seconds_within(activity.source_poll_seconds.unwrap_or(30.0), 1.0, 86_400.0)
                    .map_err(|message| error(key("source_poll_seconds"), message))?;
            let handler_max_mb = within(activity.handler_max_mb.unwrap_or(256), 1..=4096)
                .map_err(|message| error(key("handler_max_mb"), message))?;
            let rollout = activity
                .rollout
                .as_ref()
                .map(rollout)
                .transpose()
                .map_err(|(name, message)| error(key(&format!("rollout.{name}")), message))?;
            let record = match &activity.record {
                Some(dir) => {
                    let dir = base.join(dir);
                    if dir.exists() && !dir.is_dir() {
                        return Err(error(
                            key("record"),
                            format!(
                                "{} is not a folder: name a folder (it is created if missing)",
                                dir.display()
                            ),
                        ));
                    }
                    let max_mb = within(activity.record_max_mb.unwrap_or(100), 1..=1 << 20)
                        .map_err(|message| error(key("record_max_mb"), message))?;
                    Some(RecordConfig {
                        dir,
                        max_bytes: max_mb << 20,
                    })
                }
                None if activity.record_max_mb.is_some() => {
                    return Err(error(
                        key("record_max_mb"),
                        "bounds `record`, which is not set: add `record = \"DIR\"` or remove it"
                            .into(),
                    ));
                }
                None => None,
            };
            let grants =
                grants(&activity, &base).map_err(|(name, message)| error(key(&name), message))?;
            activities.push(ActivityConfig {
                arn: activity.arn,
                handler,
                sha256,
                source_poll,
                handler_max_bytes: handler_max_mb << 20,
                rollout,
                record,
                workers: pollers,
                max_concurrent_tasks,
                task_timeout,
                memory_limit_bytes: activity.memory_limit_mb << 20,
                restart_interval: Duration::from_millis(activity.restart_interval_ms),
                polling,
                watch: activity.watch,
                heartbeat_interval,
                cancel_grace,
                grants,
            });
        }
        Ok(Self {
            file: file.to_owned(),
            aws: raw.aws,
            host,
            activities,
        })
    }

    /// The sum of all activities' task slots: the most tasks that run at once, which
    /// sizes the engine's pool.
    pub fn total_workers(&self) -> u32 {
        self.activities
            .iter()
            .map(|a| a.max_concurrent_tasks)
            .fold(0, u32::saturating_add)
    }

    /// The largest memory cap of any activity, in bytes.
    pub fn max_memory_bytes(&self) -> u64 {
        self.activities
            .iter()
            .map(|a| a.memory_limit_bytes)
            .max()
            .unwrap_or(0)
    }
}

/// Checks `[activity.rollout]`; on error, the key under it and the message.
fn rollout(raw: &RawRollout) -> Result<RolloutConfig, (String, String)> {
    let default = RolloutConfig::default();
    let canary_percent = within(
        raw.canary_percent.unwrap_or(default.canary_percent),
        1..=100,
    )
    .map_err(|message| ("canary_percent".to_owned(), message))?;
    let promote_after_tasks = within(
        raw.promote_after_tasks
            .unwrap_or(default.promote_after_tasks),
        1..=100_000_000,
    )
    .map_err(|message| ("promote_after_tasks".to_owned(), message))?;
    let max_failure_rate_increase = within(
        raw.max_failure_rate_increase
            .unwrap_or(default.max_failure_rate_increase),
        0.0..=1.0,
    )
    .map_err(|message| ("max_failure_rate_increase".to_owned(), message))?;
    let rollback_min_tasks = within(
        raw.rollback_min_tasks.unwrap_or(default.rollback_min_tasks),
        1..=100_000_000,
    )
    .map_err(|message| ("rollback_min_tasks".to_owned(), message))?;
    Ok(RolloutConfig {
        canary_percent,
        promote_after_tasks,
        max_failure_rate_increase,
        rollback_min_tasks,
    })
}

/// Checks and resolves an activity's grants; on error, the key under the activity and
/// the message.
fn grants(activity: &RawActivity, base: &Path) -> Result<GrantsConfig, (String, String)> {
    let mut allowed_outbound_hosts = Vec::with_capacity(activity.allowed_outbound_hosts.len());
    for (index, entry) in activity.allowed_outbound_hosts.iter().enumerate() {
        let entry = AllowedHost::parse(entry)
            .map_err(|message| (format!("allowed_outbound_hosts[{index}]"), message))?;
        allowed_outbound_hosts.push(entry);
    }

    let mut env = Vec::with_capacity(activity.env.len());
    for (name, value) in &activity.env {
        let key = format!("env.{name}");
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err((
                key,
                "a variable name must be non-empty, without `=` or NUL".into(),
            ));
        }
        let source = match value {
            toml::Value::String(literal) => EnvSource::Literal(literal.clone()),
            toml::Value::Table(table)
                if table.len() == 1 && table.get("from_env").is_some_and(toml::Value::is_str) =>
            {
                let from = table["from_env"].as_str().unwrap_or_default().to_owned();
                EnvSource::FromEnv(from)
            }
            _ => {
                return Err((
                    key,
                    "must be a string (`NAME = \"value\"`) or `{ from_env = \"HOST_VARIABLE\" }`"
                        .into(),
                ));
            }
        };
        if let EnvSource::Literal(value) = &source
            && value.contains('\0')
        {
            return Err((key, "a value cannot contain NUL".into()));
        }
        let var = EnvVar {
            name: name.clone(),
            source,
        };
        // Read now, so that a missing variable stops the host before it polls.
        var.value().map_err(|message| (key, message))?;
        env.push(var);
    }

    let mut dirs: Vec<DirGrant> = Vec::with_capacity(activity.dir.len());
    for (index, dir) in activity.dir.iter().enumerate() {
        let key = |name: &str| format!("dir[{index}].{name}");
        let host = base.join(&dir.host);
        if !host.is_dir() {
            return Err((
                key("host"),
                format!(
                    "{} is not a folder: create it or fix the path, which is relative to the config file's folder",
                    host.display()
                ),
            ));
        }
        let guest = &dir.guest;
        check_guest_path(guest).map_err(|message| (key("guest"), message))?;
        if let Some(other) = dirs.iter().position(|d| d.guest == *guest) {
            return Err((
                key("guest"),
                format!(
                    "{guest} is already granted by dir[{other}]: give each folder its own guest path"
                ),
            ));
        }
        dirs.push(DirGrant {
            host,
            guest: guest.clone(),
            writable: dir.writable,
        });
    }

    let limits = activity.outbound;
    within(limits.max_requests, 0..=1_000_000)
        .map_err(|message| ("outbound.max_requests".to_owned(), message))?;
    within(limits.max_response_bytes, 0..=1 << 40)
        .map_err(|message| ("outbound.max_response_bytes".to_owned(), message))?;
    within(limits.connect_timeout_ms, 1..=3_600_000)
        .map_err(|message| ("outbound.connect_timeout_ms".to_owned(), message))?;
    within(limits.first_byte_timeout_ms, 1..=86_400_000)
        .map_err(|message| ("outbound.first_byte_timeout_ms".to_owned(), message))?;

    Ok(GrantsConfig {
        allowed_outbound_hosts,
        env,
        dirs,
        outbound: limits,
    })
}

/// `$XDG_CACHE_HOME/sfn-wasm-host`, else `$HOME/.cache/sfn-wasm-host`: where compiled
/// handlers are kept unless configured otherwise.
pub fn default_cache_dir() -> Option<PathBuf> {
    let from_env = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    from_env("XDG_CACHE_HOME")
        .or_else(|| from_env("HOME").map(|home| home.join(".cache")))
        .map(|dir| dir.join("sfn-wasm-host"))
}

/// `value` if it lies in `range` (NaN never does), else the message that says so.
fn within<T: PartialOrd + fmt::Debug>(value: T, range: RangeInclusive<T>) -> Result<T, String> {
    if range.contains(&value) {
        Ok(value)
    } else {
        // Debug, so that floats keep their point: `1.0`, not `1`.
        Err(format!(
            "must be between {:?} and {:?}; got {value:?}",
            range.start(),
            range.end()
        ))
    }
}

/// [`seconds`], or the message that says what range is allowed.
fn seconds_within(value: f64, min: f64, max: f64) -> Result<Duration, String> {
    seconds(value, min, max)
        .ok_or_else(|| format!("must be between {min} and {max} seconds; got {value}"))
}

fn seconds(value: f64, min: f64, max: f64) -> Option<Duration> {
    (value.is_finite() && value >= min && value <= max).then(|| Duration::from_secs_f64(value))
}

/// `arn:PARTITION:states:REGION:ACCOUNT:activity:NAME`.
fn check_arn(arn: &str) -> Result<(), String> {
    let parts: Vec<&str> = arn.split(':').collect();
    let ok = parts.len() == 7
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "states"
        && !parts[3].is_empty()
        && parts[4].len() == 12
        && parts[4].bytes().all(|b| b.is_ascii_digit())
        && parts[5] == "activity"
        && !parts[6].is_empty();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{arn:?} is not an activity ARN; expected arn:aws:states:REGION:ACCOUNT:activity:NAME"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:states:us-east-1:000000000000:activity:greet";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("greet.wasm"), b"\0asm").unwrap();
        std::fs::create_dir(dir.path().join("reference-data")).unwrap();
        Config::parse(&dir.path().join("config.toml"), text)
    }

    fn error_of(text: &str) -> ConfigError {
        parse(text).expect_err("the config should be rejected")
    }

    #[test]
    fn a_minimal_config_gets_the_defaults() {
        let config = parse(&format!(
            "[[activity]]\narn = \"{ARN}\"\nhandler = \"greet.wasm\"\n"
        ))
        .unwrap();
        let activity = &config.activities[0];
        assert_eq!(activity.workers, 1);
        assert_eq!(activity.max_concurrent_tasks, 1);
        assert_eq!(activity.task_timeout, Duration::from_secs(300));
        assert_eq!(activity.memory_limit_bytes, 128 << 20);
        assert_eq!(activity.polling, PollingConfig::default());
        assert!(activity.handler.file().is_some_and(Path::is_absolute));
        // Sources, pins, rollouts and records are off unless configured.
        assert_eq!(activity.sha256, None);
        assert_eq!(activity.source_poll, Duration::from_secs(30));
        assert_eq!(activity.handler_max_bytes, 256 << 20);
        assert_eq!(activity.rollout, None);
        assert_eq!(activity.record, None);
        assert_eq!(config.host.shutdown_grace, Duration::from_secs(30));
        assert!(!config.host.worker_prefix.is_empty());
        // The README's defaults, from a config with no [host] table at all.
        assert_eq!(config.host.cache_dir, default_cache_dir());
        assert!(
            config.host.cache_dir.is_some(),
            "the compile cache is on by default"
        );
        assert_eq!(config.host.cache_max_bytes, 1024 << 20);
        assert_eq!(config.host.answer_retry, Duration::from_secs(600));
        assert_eq!(activity.heartbeat_interval, None);
        assert_eq!(activity.cancel_grace, Duration::from_secs(5));
        // Operations are off unless asked for: no admin server, no traces exporter (the
        // OTEL_EXPORTER_OTLP_ENDPOINT variable is read at start, not here).
        assert_eq!(config.host.admin_listen, None);
        assert_eq!(config.host.otel_endpoint, None);
        // The API rates: the region's quota, without an [aws] table.
        let rates = config.aws.rates(Some("us-east-1"));
        assert_eq!(
            rates,
            ApiRates {
                get_activity_task: 500.0,
                send_task_success: 500.0,
                send_task_failure: 500.0,
                send_task_heartbeat: 500.0,
            }
        );
        // No grants: no network, environment or folders.
        assert_eq!(activity.grants, GrantsConfig::default());
        assert_eq!(
            activity.grants.outbound,
            OutboundLimits {
                max_requests: 100,
                max_response_bytes: 16_777_216,
                connect_timeout_ms: 5000,
                first_byte_timeout_ms: 30_000,
            }
        );
        // An empty [host] table means the same.
        let empty = parse(&format!(
            "[host]\n[[activity]]\narn = \"{ARN}\"\nhandler = \"greet.wasm\"\n"
        ))
        .unwrap();
        assert_eq!(empty.host, config.host);
        let off = parse(&format!(
            "[host]\ncache = false\n[[activity]]\narn = \"{ARN}\"\nhandler = \"greet.wasm\"\n"
        ))
        .unwrap();
        assert_eq!(off.host.cache_dir, None);
    }

    #[test]
    fn the_full_example_parses() {
        let text = format!(
            r#"
            [aws]
            region = "us-east-1"
            endpoint_url = "http://127.0.0.1:4599"
            [host]
            worker_prefix = "my-host"
            shutdown_grace_seconds = 30
            log_format = "json"
            cache_max_mb = 512
            answer_retry_seconds = 120
            [[activity]]
            arn = "{ARN}"
            handler = "greet.wasm"
            workers = 4
            task_timeout_seconds = 300
            memory_limit_mb = 128
            restart_interval_ms = 2000
            heartbeat_seconds = 20
            cancel_grace_seconds = 2.5
            [activity.polling]
            max_attempts = 5
            interval_seconds = 1.0
            backoff_rate = 1.2
            "#
        );
        let config = parse(&text).unwrap();
        assert_eq!(config.host.log_format, LogFormat::Json);
        assert_eq!(
            config.aws.endpoint_url.as_deref(),
            Some("http://127.0.0.1:4599")
        );
        assert_eq!(config.total_workers(), 4);
        assert_eq!(config.activities[0].max_concurrent_tasks, 4);
        // Pollers and task slots apart.
        let split = parse(&format!(
            "[[activity]]\narn = \"{ARN}\"\nhandler = \"greet.wasm\"\nworkers = 4\nmax_concurrent_tasks = 50\n"
        ))
        .unwrap();
        assert_eq!(split.activities[0].workers, 4);
        assert_eq!(split.total_workers(), 50);
        let split = parse(&format!(
            "[[activity]]\narn = \"{ARN}\"\nhandler = \"greet.wasm\"\npollers = 2\nmax_concurrent_tasks = 8\n"
        ))
        .unwrap();
        assert_eq!(split.activities[0].workers, 2);
        assert_eq!(split.total_workers(), 8);
        let err = error_of(&format!(
            "[[activity]]\narn = \"{ARN}\"\nhandler = \"greet.wasm\"\npollers = 1001\n"
        ));
        assert_eq!(err.key, "activity[0].pollers");
        assert_eq!(config.host.cache_max_bytes, 512 << 20);
        assert_eq!(config.host.answer_retry, Duration::from_secs(120));
        let activity = &config.activities[0];
        assert_eq!(activity.heartbeat_interval, Some(Duration::from_secs(20)));
        assert_eq!(activity.cancel_grace, Duration::from_millis(2500));
    }

    #[test]
    fn rollout_keys_parse_with_defaults_and_their_errors_name_them() {
        let pin = "ab".repeat(32);
        let config = parse(&format!(
            "[[activity]]\narn = \"{ARN}\"\nhandler = \"s3://bucket/handlers/greet.wasm\"\n\
             sha256 = \"{}\"\nsource_poll_seconds = 2\nrecord = \"records\"\n[activity.rollout]\n",
            pin.to_uppercase()
        ))
        .unwrap();
        let activity = &config.activities[0];
        assert_eq!(
            activity.handler,
            HandlerSource::S3 {
                bucket: "bucket".into(),
                key: "handlers/greet.wasm".into()
            }
        );
        assert_eq!(activity.sha256.as_deref(), Some(pin.as_str()));
        assert_eq!(activity.source_poll, Duration::from_secs(2));
        // An empty [activity.rollout] is the documented defaults.
        assert_eq!(activity.rollout, Some(RolloutConfig::default()));
        let record = activity.record.as_ref().unwrap();
        assert!(record.dir.is_absolute() && record.dir.ends_with("records"));
        assert_eq!(record.max_bytes, 100 << 20);

        let activity = |extra: &str| {
            format!("[[activity]]\narn = \"{ARN}\"\nhandler = \"greet.wasm\"\n{extra}\n")
        };
        for (extra, key) in [
            ("sha256 = \"abc\"", "activity[0].sha256"),
            ("source_poll_seconds = 0", "activity[0].source_poll_seconds"),
            ("handler_max_mb = 0", "activity[0].handler_max_mb"),
            ("record_max_mb = 5", "activity[0].record_max_mb"),
            ("record = \"greet.wasm\"", "activity[0].record"),
            (
                "[activity.rollout]\ncanary_percent = 0",
                "activity[0].rollout.canary_percent",
            ),
            (
                "[activity.rollout]\ncanary_percent = 101",
                "activity[0].rollout.canary_percent",
            ),
            (
                "[activity.rollout]\npromote_after_tasks = 0",
                "activity[0].rollout.promote_after_tasks",
            ),
            (
                "[activity.rollout]\nmax_failure_rate_increase = 1.5",
                "activity[0].rollout.max_failure_rate_increase",
            ),
        ] {
            assert_eq!(error_of(&activity(extra)).key, key, "{extra}");
        }
        for (handler, says) in [
            ("s3://bucket", "s3://BUCKET/KEY"),
            ("http://example.com/h.wasm", "use https://"),
            (
                "ftp://example.com/h.wasm",
                "file path, s3://BUCKET/KEY or https://URL",
            ),
        ] {
            let err = error_of(&format!(
                "[[activity]]\narn = \"{ARN}\"\nhandler = \"{handler}\"\n"
            ));
            assert_eq!(err.key, "activity[0].handler");
            assert!(err.message.contains(says), "{err}");
        }
        assert!(
            error_of(&activity("[activity.rollout]\ncanary = 5"))
                .message
                .contains("canary")
        );
    }

    #[test]
    fn errors_name_the_key_and_what_to_do() {
        let activity = |extra: &str| {
            format!("[[activity]]\narn = \"{ARN}\"\nhandler = \"greet.wasm\"\n{extra}\n")
        };
        let cases = [
            (
                activity("workers = 0"),
                "activity[0].workers",
                "between 1 and 1000",
            ),
            (
                activity("memory_limit_mb = 5000"),
                "activity[0].memory_limit_mb",
                "between 1 and 4096",
            ),
            (
                activity("task_timeout_seconds = 0"),
                "activity[0].task_timeout_seconds",
                "more than 0",
            ),
            (
                activity("[activity.polling]\nbackoff_rate = 0.5"),
                "activity[0].polling.backoff_rate",
                "between 1.0",
            ),
            (
                activity("[activity.polling]\nmax_attempts = 0"),
                "activity[0].polling.max_attempts",
                "at least 1",
            ),
            (
                "[[activity]]\narn = \"nope\"\nhandler = \"greet.wasm\"".to_owned(),
                "activity[0].arn",
                "not an activity ARN",
            ),
            (
                format!("[[activity]]\narn = \"{ARN}\"\nhandler = \"missing.wasm\""),
                "activity[0].handler",
                "missing.wasm is not a file",
            ),
            (
                format!("{}{}", activity(""), activity("")),
                "activity[1].arn",
                "the same ARN as activity[0]",
            ),
            (
                "[host]\nworker_prefix = \"x\"".into(),
                "activity",
                "add at least one [[activity]]",
            ),
            (
                format!("[aws]\nendpoint_url = \"127.0.0.1\"\n{}", activity("")),
                "aws.endpoint_url",
                "http://",
            ),
            (
                format!("[host]\nshutdown_grace_seconds = -1\n{}", activity("")),
                "host.shutdown_grace_seconds",
                "between 0",
            ),
            (
                format!("[host]\nanswer_retry_seconds = -1\n{}", activity("")),
                "host.answer_retry_seconds",
                "between 0",
            ),
            (
                format!("[host]\ncache_max_mb = 0\n{}", activity("")),
                "host.cache_max_mb",
                "between 1",
            ),
            (
                format!(
                    "[host]\nadmin_listen = \"localhost:9464\"\n{}",
                    activity("")
                ),
                "host.admin_listen",
                "IP:PORT",
            ),
            (
                format!(
                    "[host.otel]\nendpoint = \"127.0.0.1:4318\"\n{}",
                    activity("")
                ),
                "host.otel.endpoint",
                "http:// or https://",
            ),
            (
                activity("heartbeat_seconds = 0"),
                "activity[0].heartbeat_seconds",
                "more than 0",
            ),
            (
                activity("cancel_grace_seconds = -2"),
                "activity[0].cancel_grace_seconds",
                "between 0",
            ),
        ];
        for (text, key, message) in cases {
            let err = error_of(&text);
            assert_eq!(err.key, key, "{text}: {err}");
            assert!(err.message.contains(message), "{text}: {err}");
            assert!(err.to_string().contains("config.toml"), "{err}");
        }
    }

    #[test]
    fn operations_keys_alone_turn_the_admin_server_and_traces_on() {
        let config = parse(&format!(
            "[host]\nadmin_listen = \"0.0.0.0:9464\"\n[host.otel]\nendpoint = \"http://collector:4318\"\n\
             [[activity]]\narn = \"{ARN}\"\nhandler = \"greet.wasm\"\n"
        ))
        .unwrap();
        assert_eq!(
            config.host.admin_listen,
            Some("0.0.0.0:9464".parse().unwrap())
        );
        assert_eq!(
            config.host.otel_endpoint.as_deref(),
            Some("http://collector:4318")
        );
        // The rest of [host] keeps its defaults.
        assert_eq!(config.host.shutdown_grace, Duration::from_secs(30));
        assert!(config.host.cache_dir.is_some());
    }

    #[test]
    fn api_rates_default_to_the_regions_quota_and_can_be_lowered() {
        let config = parse(&format!(
            "[aws.max_requests_per_second]\nGetActivityTask = 50\n[[activity]]\narn = \"{ARN}\"\nhandler = \"greet.wasm\"\n"
        ))
        .unwrap();
        let large = config.aws.rates(Some("us-east-1"));
        assert_eq!(large.get_activity_task, 50.0);
        assert_eq!(large.send_task_success, 500.0);
        assert_eq!(
            config.aws.rates(Some("eu-central-1")).send_task_heartbeat,
            300.0
        );
        assert_eq!(config.aws.rates(None).send_task_failure, 300.0);
        let err = error_of(&format!(
            "[aws.max_requests_per_second]\nSendTaskSuccess = 0\n[[activity]]\narn = \"{ARN}\"\nhandler = \"greet.wasm\"\n"
        ));
        assert_eq!(err.key, "aws.max_requests_per_second.SendTaskSuccess");
        let err = error_of(&format!(
            "[aws.max_requests_per_second]\nGetTask = 1\n[[activity]]\narn = \"{ARN}\"\nhandler = \"greet.wasm\"\n"
        ));
        assert!(err.message.contains("GetTask"), "{err}");
    }

    #[test]
    fn the_grants_example_parses() {
        let variable = "SFN_WASM_HOST_TEST_CONFIG_API_KEY";
        // SAFETY: only this test uses this variable.
        unsafe { std::env::set_var(variable, "secret") };
        let config = parse(&format!(
            r#"
            [[activity]]
            arn = "{ARN}"
            handler = "greet.wasm"
            allowed_outbound_hosts = ["https://api.example.com", "https://*.s3.amazonaws.com", "http://127.0.0.1:8080"]
            [activity.env]
            GREETING = "hello"
            API_KEY = {{ from_env = "{variable}" }}
            [[activity.dir]]
            host = "reference-data"
            guest = "/data"
            [[activity.dir]]
            host = "reference-data"
            guest = "/scratch"
            writable = true
            [activity.outbound]
            max_requests = 3
            max_response_bytes = 1000
            connect_timeout_ms = 100
            first_byte_timeout_ms = 200
            "#
        ))
        .unwrap();
        let grants = &config.activities[0].grants;
        let hosts: Vec<String> = grants
            .allowed_outbound_hosts
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            hosts,
            [
                "https://api.example.com:443",
                "https://*.s3.amazonaws.com:443",
                "http://127.0.0.1:8080"
            ]
        );
        assert!(grants.env.contains(&EnvVar {
            name: "API_KEY".into(),
            source: EnvSource::FromEnv(variable.into())
        }));
        assert!(grants.env.contains(&EnvVar {
            name: "GREETING".into(),
            source: EnvSource::Literal("hello".into())
        }));
        assert_eq!(grants.dirs.len(), 2);
        assert!(grants.dirs[0].host.is_absolute());
        assert!(grants.dirs[0].host.ends_with("reference-data"));
        assert_eq!(
            (grants.dirs[0].guest.as_str(), grants.dirs[0].writable),
            ("/data", false)
        );
        assert_eq!(
            (grants.dirs[1].guest.as_str(), grants.dirs[1].writable),
            ("/scratch", true)
        );
        assert_eq!(grants.outbound.max_requests, 3);
        assert_eq!(grants.outbound.first_byte_timeout_ms, 200);
    }

    #[test]
    fn grant_errors_name_the_key_and_what_to_do() {
        let activity = |extra: &str| {
            format!("[[activity]]\narn = \"{ARN}\"\nhandler = \"greet.wasm\"\n{extra}\n")
        };
        let cases = [
            (
                activity(
                    r#"allowed_outbound_hosts = ["https://ok.example.com", "api.example.com"]"#,
                ),
                "activity[0].allowed_outbound_hosts[1]",
                "no scheme",
            ),
            (
                activity(
                    "[activity.env]\nAPI_KEY = { from_env = \"SFN_WASM_HOST_TEST_SURELY_UNSET\" }",
                ),
                "activity[0].env.API_KEY",
                "export SFN_WASM_HOST_TEST_SURELY_UNSET",
            ),
            (
                activity("[activity.env]\nPORT = 8080"),
                "activity[0].env.PORT",
                "must be a string",
            ),
            (
                activity("[activity.env]\nKEY = { from_env = \"A\", default = \"b\" }"),
                "activity[0].env.KEY",
                "from_env",
            ),
            (
                activity("[[activity.dir]]\nhost = \"missing\"\nguest = \"/data\""),
                "activity[0].dir[0].host",
                "is not a folder",
            ),
            (
                activity("[[activity.dir]]\nhost = \"reference-data\"\nguest = \"data\""),
                "activity[0].dir[0].guest",
                "absolute guest path",
            ),
            (
                activity("[[activity.dir]]\nhost = \"reference-data\"\nguest = \"/data/../etc\""),
                "activity[0].dir[0].guest",
                "absolute guest path",
            ),
            (
                activity(
                    "[[activity.dir]]\nhost = \"reference-data\"\nguest = \"/d\"\n[[activity.dir]]\nhost = \"reference-data\"\nguest = \"/d\"",
                ),
                "activity[0].dir[1].guest",
                "already granted by dir[0]",
            ),
            (
                activity("[activity.outbound]\nconnect_timeout_ms = 0"),
                "activity[0].outbound.connect_timeout_ms",
                "between 1",
            ),
        ];
        for (text, key, says) in cases {
            let err = error_of(&text);
            assert_eq!(err.key, key, "{text}: {err}");
            assert!(err.message.contains(says), "{text}: {err}");
        }
        let err = error_of(&activity(
            "[[activity.dir]]\nhost = \"reference-data\"\nguest = \"/d\"\nwrite = true",
        ));
        assert!(err.to_string().contains("write"), "{err}");
    }

    #[test]
    fn unknown_and_missing_keys_are_errors_with_their_names() {
        let err = error_of(&format!(
            "[[activity]]\narn = \"{ARN}\"\nhandler = \"greet.wasm\"\nmemory_limit = 5\n"
        ));
        assert!(
            err.message.contains("unknown field `memory_limit`"),
            "{err}"
        );
        assert!(err.message.contains("line 4"), "{err}");
        let err = error_of("[[activity]]\nhandler = \"greet.wasm\"\n");
        assert!(err.message.contains("missing field `arn`"), "{err}");
        let err = error_of("[host]\nlog_format = \"xml\"\n");
        assert!(err.message.contains("xml"), "{err}");
    }

    #[test]
    fn backoff_grows_by_the_rate() {
        let polling = PollingConfig {
            max_attempts: 5,
            interval_seconds: 1.0,
            backoff_rate: 2.0,
        };
        assert_eq!(polling.delay(1), Duration::from_secs(1));
        assert_eq!(polling.delay(3), Duration::from_secs(4));
        assert_eq!(polling.delay(500), Duration::from_secs(3600));
    }
}
