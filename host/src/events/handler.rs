//! `handler:*`: the versions an activity's tasks run.

use std::sync::Arc;

use tracing::Level;

use super::log::Fields;

/// What happened to an activity's handler versions.
#[derive(Debug, Clone, PartialEq)]
pub enum HandlerEvent {
    /// `handler:loaded`: the activity's handler was loaded at startup.
    Loaded {
        /// The module's digest.
        digest: Arc<str>,
        /// `hit`, `miss`, `rebuilt` or `disabled`: whether it came from the cache.
        cache: &'static str,
        /// How long loading took, in milliseconds.
        load_ms: u64,
    },
    /// `handler:swapped`: new tasks now run a new version; running ones keep theirs.
    Swapped {
        /// The version replaced.
        old_digest: Arc<str>,
        /// The version now serving.
        new_digest: Arc<str>,
        /// How long making the new version ready took (compile or cache), in ms.
        compile_ms: u64,
        /// `hit`, `miss`, `rebuilt` or `disabled`.
        cache: &'static str,
    },
    /// `handler:rejected`: a new version was not used (unreadable, unreachable, too
    /// large, another digest than the pin, not a valid handler); the current version
    /// keeps serving.
    Rejected {
        /// The rejected module's digest (empty when it could not be read).
        digest: Arc<str>,
        /// Why.
        reason: String,
    },
    /// `handler:canary`: a new version takes `percent` of new tasks; the old one, stable,
    /// the rest.
    Canary {
        /// The stable version.
        old_digest: Arc<str>,
        /// The canary.
        new_digest: Arc<str>,
        /// The canary's share of new tasks.
        percent: u32,
    },
    /// `handler:promoted`: the canary answered `promote_after_tasks` tasks without a
    /// regression and is the stable version now.
    Promoted {
        /// The version it replaces.
        old_digest: Arc<str>,
        /// The version now stable.
        new_digest: Arc<str>,
        /// How the two versions did during the canary.
        judged: CanaryJudgement,
    },
    /// `handler:rolledback`: the canary's host-failure rate exceeded stable's by more than
    /// `max_failure_rate_increase`; every new task runs the stable version again.
    RolledBack {
        /// The stable version, serving again.
        old_digest: Arc<str>,
        /// The canary rolled back.
        new_digest: Arc<str>,
        /// How the two versions did during the canary.
        judged: CanaryJudgement,
        /// The increase allowed.
        max_failure_rate_increase: f64,
    },
}

/// How a canary and the stable version did over the same window: what a promotion or a
/// rollback was decided on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CanaryJudgement {
    /// Canary tasks answered.
    pub canary_tasks: u64,
    /// The canary's host-failure rate.
    pub canary_failure_rate: f64,
    /// Stable tasks answered during the canary.
    pub stable_tasks: u64,
    /// Stable's host-failure rate during the canary.
    pub stable_failure_rate: f64,
}

impl HandlerEvent {
    /// The event's name, as in the seed (`handler:swapped`).
    pub fn name(&self) -> &'static str {
        match self {
            HandlerEvent::Loaded { .. } => "handler:loaded",
            HandlerEvent::Swapped { .. } => "handler:swapped",
            HandlerEvent::Rejected { .. } => "handler:rejected",
            HandlerEvent::Canary { .. } => "handler:canary",
            HandlerEvent::Promoted { .. } => "handler:promoted",
            HandlerEvent::RolledBack { .. } => "handler:rolledback",
        }
    }

    /// What went wrong, for the log message, if anything did.
    pub(super) fn detail(&self) -> Option<String> {
        match self {
            HandlerEvent::Rejected { reason, .. } => Some(reason.clone()),
            HandlerEvent::RolledBack {
                judged,
                max_failure_rate_increase,
                ..
            } => Some(format!(
                "the canary's host-failure rate {:.3} exceeds stable's {:.3} by more than {max_failure_rate_increase}",
                judged.canary_failure_rate, judged.stable_failure_rate
            )),
            _ => None,
        }
    }

    /// Its log level and fields: a rejected or rolled-back version is WARN.
    pub(super) fn log<'a>(&'a self, fields: &mut Fields<'a>) -> Level {
        match self {
            HandlerEvent::Loaded {
                digest,
                cache,
                load_ms,
            } => {
                fields.handler_digest = Some(digest);
                fields.cache = Some(cache);
                fields.load_ms = Some(*load_ms);
                Level::INFO
            }
            HandlerEvent::Swapped {
                old_digest,
                new_digest,
                compile_ms,
                cache,
            } => {
                versions(fields, old_digest, new_digest);
                fields.compile_ms = Some(*compile_ms);
                fields.cache = Some(cache);
                Level::INFO
            }
            HandlerEvent::Rejected { digest, reason } => {
                fields.digest = Some(digest);
                fields.reason = Some(reason);
                Level::WARN
            }
            HandlerEvent::Canary {
                old_digest,
                new_digest,
                percent,
            } => {
                versions(fields, old_digest, new_digest);
                fields.percent = Some(*percent);
                Level::INFO
            }
            HandlerEvent::Promoted {
                old_digest,
                new_digest,
                judged,
            } => {
                versions(fields, old_digest, new_digest);
                judgement(fields, judged);
                Level::INFO
            }
            HandlerEvent::RolledBack {
                old_digest,
                new_digest,
                judged,
                max_failure_rate_increase,
            } => {
                versions(fields, old_digest, new_digest);
                judgement(fields, judged);
                fields.max_failure_rate_increase = Some(*max_failure_rate_increase);
                Level::WARN
            }
        }
    }
}

fn versions<'a>(fields: &mut Fields<'a>, old: &'a str, new: &'a str) {
    fields.old_digest = Some(old);
    fields.new_digest = Some(new);
}

fn judgement(fields: &mut Fields<'_>, judged: &CanaryJudgement) {
    fields.canary_tasks = Some(judged.canary_tasks);
    fields.canary_failure_rate = Some(judged.canary_failure_rate);
    fields.stable_tasks = Some(judged.stable_tasks);
    fields.stable_failure_rate = Some(judged.stable_failure_rate);
}
