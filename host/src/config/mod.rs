//! `config.toml`: parsing, defaults and validation.
//!
//! Every error names the file and the key (`activity[1].workers`) and says what to do, and
//! all of them are found before anything starts polling. Unknown keys are errors, not
//! silently ignored: a typo in `memory_limit_mb` must not quietly run with the default.
//!
//! Each section keeps its TOML as written (`Raw*`, with serde's defaults and
//! `deny_unknown_fields`) beside the checked type it builds ([`HostConfig`],
//! [`ActivityConfig`], [`RolloutConfig`], the grants keys), and [`Config::parse`] only
//! walks the file, in order, naming the key of the first problem.

mod activity;
mod admin;
mod callback;
mod checks;
mod grants;
mod host;
mod host_folders;
mod key;
mod otel;
mod progress;
mod rollout;
#[cfg(test)]
mod tests;
mod toml_error;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use activity::{
    ActivityConfig, MAX_MEMORY_LIMIT_MB, MAX_POLLERS, PollingConfig, RecordConfig, TaskSource,
};
pub use admin::{AdminConfig, AdminToken, parse_listen};
pub use callback::{CallbackConfig, MAX_VISIBILITY_TIMEOUT_SECONDS, MAX_WAIT_SECONDS};
pub use checks::canonical;
pub use host::{HostConfig, LogFormat, OutboxConfig, default_cache_dir};
pub use key::KeyPath;
pub use otel::{OtelConfig, OtelHeaders, check_otel_endpoint};
pub use progress::{IdempotencyConfig, ProgressConfig};
pub use rollout::RolloutConfig;

/// Re-exported: `[aws]` is read here and used by every AWS client.
pub use crate::aws::AwsConfig;
use crate::aws::{Api, MAX_RATE};
use crate::ids::ActivityArn;
use activity::{RawActivity, RawCallback};
use host::RawHost;

/// The file as written: its tables.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    aws: AwsConfig,
    #[serde(default)]
    host: RawHost,
    #[serde(default)]
    activity: Vec<RawActivity>,
    #[serde(default)]
    callback: Vec<RawCallback>,
}

/// A validated configuration, with paths resolved against the config file's folder.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it came from.
    pub file: PathBuf,
    /// How to reach Step Functions.
    pub aws: AwsConfig,
    /// Process-wide settings.
    pub host: HostConfig,
    /// One entry per `[[activity]]`, then one per `[[callback]]`; never empty, ARNs and
    /// queue URLs unique (each entry's [`ActivityConfig::name`]). Everything the host
    /// does per activity (pools, events, metrics, `/status`) it does per entry.
    pub activities: Vec<ActivityConfig>,
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
    /// For a TOML syntax or type error, where it is: line and column, from 1.
    pub position: Option<(usize, usize)>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((line, column)) = self.position {
            write!(
                f,
                "{}:{line}:{column}: {}",
                self.file.display(),
                self.message
            )?;
            if !self.key.is_empty() {
                write!(f, " (key `{}`)", self.key)?;
            }
            Ok(())
        } else if self.key.is_empty() {
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
            position: None,
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
            position: None,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|err| ConfigError {
            file: file.to_owned(),
            ..toml_error::describe(err, text)
        })?;
        if raw.activity.is_empty() && raw.callback.is_empty() {
            return Err(error(
                "activity".into(),
                "no activities: add at least one [[activity]] table with `arn` and `handler` (or a [[callback]] table with `queue_url` and `handler`)"
                    .into(),
            ));
        }
        check_aws(&raw.aws).map_err(|(key, message)| error(format!("aws.{key}"), message))?;
        // Relative paths resolve against the config file's folder, made absolute once,
        // here, so that nothing later depends on the working directory or on how the
        // config was named: the file watcher compares the paths the kernel reports with
        // these. A bare `config.toml` has an empty parent, which is the working folder.
        let base = config_folder(file);
        let host = HostConfig::resolve(raw.host, &base)
            .map_err(|(key, message)| error(format!("host.{key}"), message))?;

        let mut activities: Vec<ActivityConfig> =
            Vec::with_capacity(raw.activity.len() + raw.callback.len());
        for (index, activity) in raw.activity.into_iter().enumerate() {
            let table = KeyPath::activity(index);
            let key = |name: &str| String::from(table.key(name));
            let arn =
                ActivityArn::parse(&activity.arn).map_err(|message| error(key("arn"), message))?;
            if let Some(first) = activities.iter().position(|a| *a.name == *arn) {
                return Err(error(
                    key("arn"),
                    format!(
                        "the same ARN as activity[{first}]: give each activity one [[activity]] table"
                    ),
                ));
            }
            let activity = ActivityConfig::resolve(
                TaskSource::Activity(arn),
                table.clone(),
                activity,
                &base,
                &raw.aws,
            )
            .map_err(|(name, message)| error(key(&name), message))?;
            activities.push(activity);
        }
        for (index, callback) in raw.callback.into_iter().enumerate() {
            let table = KeyPath::callback(index);
            let key = |name: &str| String::from(table.key(name));
            let (own, rest) = callback.split();
            let queue = CallbackConfig::resolve(own)
                .map_err(|(name, message)| error(key(&name), message))?;
            if let Some(first) = activities.iter().find(|a| *a.name == *queue.queue_url) {
                return Err(error(
                    key("queue_url"),
                    format!(
                        "the same queue as {}: give each queue one [[callback]] table",
                        first.key
                    ),
                ));
            }
            let callback = ActivityConfig::resolve(
                TaskSource::Callback(queue),
                table.clone(),
                rest,
                &base,
                &raw.aws,
            )
            .map_err(|(name, message)| error(key(&name), message))?;
            activities.push(callback);
        }
        host_folders::check_host_folders(&host, &activities)
            .map_err(|(key, message)| error(key, message))?;
        Ok(Self {
            file: file.to_owned(),
            aws: raw.aws,
            host,
            activities,
        })
    }

    /// The sum of all activities' task slots: the most tasks that run at once, which
    /// sizes the engine's pool.
    pub fn total_task_slots(&self) -> u32 {
        self.activities
            .iter()
            .map(|a| a.max_concurrent_tasks)
            .fold(0, u32::saturating_add)
    }

    /// The async runtime's threads: `[host] runtime_threads`, else one when guests that
    /// compute have threads of their own ([`guest_threads`](Self::guest_threads)), else
    /// one per core but never more than [`total_task_slots`](Self::total_task_slots).
    /// Everything but a guest's own computing is I/O, which one thread keeps up with; a
    /// second thread that has no work only parks, and every task or timer the busy one
    /// wakes may wake it to steal the work (an `eventfd` write, a context switch each
    /// way): measured in the e2e bench, ~100 µs of CPU per task at 4 task slots on 2
    /// cores.
    pub fn runtime_threads(&self) -> usize {
        if let Some(threads) = self.host.runtime_threads {
            return threads as usize;
        }
        if self.guest_threads() > 0 {
            return 1;
        }
        cores().min(self.total_task_slots() as usize).max(1)
    }

    /// The threads a guest moves to once an epoch tick finds it computing: `[host]
    /// guest_threads`, else one per core when more than one task can run at once, else
    /// none (a host of one task slot runs all on one thread).
    pub fn guest_threads(&self) -> usize {
        match self.host.guest_threads {
            Some(threads) => threads as usize,
            None if self.total_task_slots() > 1 => cores(),
            None => 0,
        }
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

/// The cores this process may run on.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// The absolute folder of the config `file`, which relative paths in it resolve against.
fn config_folder(file: &Path) -> PathBuf {
    let folder = match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::path::absolute(folder).unwrap_or_else(|_| folder.to_owned())
}

/// Checks `[aws]`: the endpoint's scheme and each API's rate.
fn check_aws(aws: &AwsConfig) -> Result<(), checks::Problem> {
    if let Some(url) = &aws.endpoint_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err((
            "endpoint_url".into(),
            format!(
                "must be an http:// or https:// URL, not {:?}",
                crate::source::redact_url(url)
            ),
        ));
    }
    for api in Api::ALL {
        if let Some(rate) = aws.max_requests_per_second.get(api)
            && !(rate.is_finite() && rate > 0.0 && rate <= MAX_RATE)
        {
            return Err((
                format!("max_requests_per_second.{}", api.name()),
                format!("must be more than 0 and at most 100000 requests per second; got {rate}"),
            ));
        }
    }
    Ok(())
}
