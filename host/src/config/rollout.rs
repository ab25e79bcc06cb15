//! `[activity.rollout]`: how a new handler version comes in.

use super::checks::{Problem, at, within};
use serde::Deserialize;

/// `[activity.rollout]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRollout {
    pub canary_percent: Option<u32>,
    pub promote_after_tasks: Option<u64>,
    pub max_failure_rate_increase: Option<f64>,
    pub rollback_min_tasks: Option<u64>,
}

/// `[activity.rollout]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RolloutConfig {
    /// The share of new tasks the canary gets, 1–100.
    pub canary_percent: u32,
    /// Canary tasks answered without a regression before the canary becomes stable.
    pub promote_after_tasks: u64,
    /// How much higher than stable's the canary's host-failure rate may be (0–1).
    pub max_failure_rate_increase: f64,
    /// Canary tasks answered before a rollback is judged (so that one early failure
    /// does not condemn a version); at most `promote_after_tasks`.
    pub rollback_min_tasks: u64,
}

impl Default for RolloutConfig {
    fn default() -> Self {
        Self {
            canary_percent: 10,
            promote_after_tasks: 200,
            max_failure_rate_increase: 0.05,
            rollback_min_tasks: 10,
        }
    }
}

impl RolloutConfig {
    /// Checks `[activity.rollout]`; a key left out takes its default.
    pub(super) fn resolve(raw: &RawRollout) -> Result<Self, Problem> {
        let default = Self::default();
        let canary_percent = within(
            raw.canary_percent.unwrap_or(default.canary_percent),
            1..=100,
        )
        .map_err(at("canary_percent"))?;
        let promote_after_tasks = within(
            raw.promote_after_tasks
                .unwrap_or(default.promote_after_tasks),
            1..=100_000_000,
        )
        .map_err(at("promote_after_tasks"))?;
        let max_failure_rate_increase = within(
            raw.max_failure_rate_increase
                .unwrap_or(default.max_failure_rate_increase),
            0.0..=1.0,
        )
        .map_err(at("max_failure_rate_increase"))?;
        let rollback_min_tasks = within(
            raw.rollback_min_tasks.unwrap_or(default.rollback_min_tasks),
            1..=100_000_000,
        )
        .map_err(at("rollback_min_tasks"))?;
        Ok(Self {
            canary_percent,
            promote_after_tasks,
            max_failure_rate_increase,
            rollback_min_tasks,
        })
    }
}
