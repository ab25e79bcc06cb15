//! The TOML as written: every table and key the config accepts, with serde's defaults.
//! Unknown keys are errors (`deny_unknown_fields`), so a typo never runs silently with a
//! default. The sections turn these into checked types (`host.rs`, `activity.rs`, ...).

use std::path::PathBuf;

use serde::Deserialize;

use super::activity::PollingConfig;
use super::host::LogFormat;
use crate::aws::AwsConfig;
use crate::outbound::OutboundLimits;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub aws: AwsConfig,
    #[serde(default)]
    pub host: RawHost,
    #[serde(default)]
    pub activity: Vec<RawActivity>,
}

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
    pub admin_listen: Option<String>,
    pub otel: Option<RawOtel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOtel {
    pub endpoint: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawActivity {
    pub arn: String,
    pub handler: String,
    pub sha256: Option<String>,
    pub source_poll_seconds: Option<f64>,
    pub handler_max_mb: Option<u64>,
    pub rollout: Option<RawRollout>,
    pub record: Option<PathBuf>,
    pub record_max_mb: Option<u64>,
    #[serde(default = "default_workers")]
    pub workers: u32,
    pub pollers: Option<u32>,
    pub max_concurrent_tasks: Option<u32>,
    #[serde(default = "default_task_timeout")]
    pub task_timeout_seconds: f64,
    #[serde(default = "default_memory_limit")]
    pub memory_limit_mb: u64,
    #[serde(default = "default_restart_interval")]
    pub restart_interval_ms: u64,
    #[serde(default)]
    pub polling: PollingConfig,
    #[serde(default = "default_true")]
    pub watch: bool,
    pub heartbeat_seconds: Option<f64>,
    #[serde(default = "default_cancel_grace")]
    pub cancel_grace_seconds: f64,
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    pub env: toml::Table,
    #[serde(default)]
    pub dir: Vec<RawDir>,
    #[serde(default)]
    pub outbound: OutboundLimits,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRollout {
    pub canary_percent: Option<u32>,
    pub promote_after_tasks: Option<u64>,
    pub max_failure_rate_increase: Option<f64>,
    pub rollback_min_tasks: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDir {
    pub host: PathBuf,
    pub guest: String,
    #[serde(default)]
    pub writable: bool,
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
