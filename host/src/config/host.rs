//! `[host]`: process-wide settings.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::admin::AdminConfig;
use super::checks::{Problem, at, seconds_within, within};
use super::otel::{OtelConfig, RawOtel};
use crate::store::Durability;

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

/// `[host]` as written.
// Every field is optional, so that a missing `[host]` table and an empty one mean the
// same: serde's `#[serde(default = ...)]` applies only to keys of a table that exists,
// and a derived `Default` would turn `cache` off for a config with no `[host]` at all.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHost {
    pub worker_prefix: Option<String>,
    pub shutdown_grace_seconds: Option<f64>,
    #[serde(default)]
    pub log_format: LogFormat,
    pub cache_dir: Option<PathBuf>,
    pub cache: Option<bool>,
    pub cache_max_mb: Option<u64>,
    pub answer_retry_seconds: Option<f64>,
    pub outbox_dir: Option<PathBuf>,
    pub outbox_max_mb: Option<u64>,
    pub outbox_durability: Option<Durability>,
    pub admin_listen: Option<String>,
    pub admin_max_connections: Option<u64>,
    pub admin_token_file: Option<PathBuf>,
    pub otel: Option<RawOtel>,
    pub runtime_threads: Option<u32>,
    pub guest_threads: Option<u32>,
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
    /// `outbox_dir` and `outbox_max_mb`: where answers are kept until Step Functions
    /// takes them (see [`crate::outbox`]); `None`: no outbox.
    pub outbox: Option<OutboxConfig>,
    /// The admin server's keys.
    pub admin: AdminConfig,
    /// `[host.otel]`; `None`: the `OTEL_EXPORTER_OTLP_ENDPOINT` variable decides, at
    /// start, whether traces are exported.
    pub otel: Option<OtelConfig>,
    /// `runtime_threads`: the async runtime's threads, as written; `None`: one beside
    /// guest threads, else one per core but never more than the tasks that can run at
    /// once (see [`Config::runtime_threads`](super::Config::runtime_threads)).
    pub runtime_threads: Option<u32>,
    /// `guest_threads`: the threads guests that compute move to, as written (`0`: none);
    /// `None`: one per core when more than one task can run at once (see
    /// [`Config::guest_threads`](super::Config::guest_threads)).
    pub guest_threads: Option<u32>,
}

impl HostConfig {
    /// Checks `[host]`; relative paths resolve against `base`, the config's folder.
    pub(super) fn resolve(raw: RawHost, base: &Path) -> Result<Self, Problem> {
        let grace = raw.shutdown_grace_seconds.unwrap_or(30.0);
        let shutdown_grace =
            seconds_within(grace, 0.0, 86_400.0).map_err(at("shutdown_grace_seconds"))?;
        let worker_prefix = resolve_worker_prefix(raw.worker_prefix)?;
        let cache_dir = match (raw.cache.unwrap_or(true), raw.cache_dir) {
            (false, _) => None,
            (true, Some(dir)) => Some(base.join(dir)),
            (true, None) => default_cache_dir(),
        };
        let cache_max_mb =
            within(raw.cache_max_mb.unwrap_or(1024), 1..=1 << 20).map_err(at("cache_max_mb"))?;
        let retry = raw.answer_retry_seconds.unwrap_or(600.0);
        let answer_retry =
            seconds_within(retry, 0.0, 86_400.0).map_err(at("answer_retry_seconds"))?;
        let outbox = resolve_outbox(
            raw.outbox_dir,
            raw.outbox_max_mb,
            raw.outbox_durability,
            base,
        )?;
        let admin = AdminConfig::resolve(
            raw.admin_listen.as_deref(),
            raw.admin_max_connections,
            raw.admin_token_file,
            base,
        )?;
        let otel = raw
            .otel
            .map(|otel| OtelConfig::resolve(otel, base))
            .transpose()?;
        let runtime_threads = raw
            .runtime_threads
            .map(|n| within(n, 1..=1024).map_err(at("runtime_threads")))
            .transpose()?;
        let guest_threads = raw
            .guest_threads
            .map(|n| within(n, 0..=1024).map_err(at("guest_threads")))
            .transpose()?;
        Ok(Self {
            worker_prefix,
            shutdown_grace,
            log_format: raw.log_format,
            cache_dir,
            cache_max_bytes: cache_max_mb << 20,
            answer_retry,
            outbox,
            admin,
            otel,
            runtime_threads,
            guest_threads,
        })
    }
}

/// `worker_prefix` as written, checked; by default the machine's host name.
fn resolve_worker_prefix(prefix: Option<String>) -> Result<String, Problem> {
    match prefix {
        Some(prefix) if prefix.trim().is_empty() || prefix.len() > 64 => {
            Err(at("worker_prefix")("must be 1 to 64 characters".into()))
        }
        Some(prefix) => Ok(prefix),
        None => Ok(gethostname::gethostname().to_string_lossy().into_owned()),
    }
}

/// The outbox, resolved: `outbox_dir` and its bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxConfig {
    /// `outbox_dir`, absolute: a folder on a durable volume, created if missing.
    pub dir: PathBuf,
    /// `outbox_max_mb`, in bytes: the most the outbox holds; past it answers are sent
    /// without an entry.
    pub max_bytes: u64,
    /// `outbox_durability`: what an entry survives once written (default: power loss).
    pub durability: Durability,
}

/// Checks `outbox_dir` (relative to `base`) and `outbox_max_mb`, which bounds it.
fn resolve_outbox(
    dir: Option<PathBuf>,
    max_mb: Option<u64>,
    durability: Option<Durability>,
    base: &Path,
) -> Result<Option<OutboxConfig>, Problem> {
    let Some(dir) = dir.map(|dir| base.join(dir)) else {
        return match (max_mb, durability) {
            (Some(_), _) => Err(at("outbox_max_mb")(
                "bounds `outbox_dir`, which is not set: add `outbox_dir = \"DIR\"` or remove it"
                    .into(),
            )),
            (None, Some(_)) => Err(at("outbox_durability")(
                "is for `outbox_dir`, which is not set: add `outbox_dir = \"DIR\"` or remove it"
                    .into(),
            )),
            (None, None) => Ok(None),
        };
    };
    if dir.exists() && !dir.is_dir() {
        return Err(at("outbox_dir")(format!(
            "{} is not a folder: name a folder on a durable volume (it is created if missing)",
            dir.display()
        )));
    }
    let max_mb = within(max_mb.unwrap_or(100), 1..=1 << 20).map_err(at("outbox_max_mb"))?;
    Ok(Some(OutboxConfig {
        dir,
        max_bytes: max_mb << 20,
        durability: durability.unwrap_or_default(),
    }))
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
