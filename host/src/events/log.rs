//! How events are logged, as a table: each family fills the [`Fields`] an event carries
//! and names its level; one `tracing` call per level writes every event with the same
//! field list, in which a field an event does not carry is left out.

use std::fmt;

use tracing::Level;

use super::{Event, EventKind};

/// The fields of a log line beyond `event`, `activity` and `task_source`, in the order they are
/// written. `None`: the event does not carry it, and it is not written.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Fields<'a> {
    /// The worker, for worker and task events.
    pub worker: Option<&'a str>,
    /// The task's short id.
    pub task_id: Option<&'a str>,
    /// The digest of the version a task runs, or the one loaded.
    pub handler_digest: Option<&'a str>,
    /// A throttled poll or answer attempt.
    pub throttled: Option<bool>,
    /// A poll refused until the activity's setup changes.
    pub blocked: Option<bool>,
    /// Who asked for a heartbeat.
    pub source: Option<&'a str>,
    /// Attempts an answer took.
    pub attempts: Option<u32>,
    /// An answer most likely delivered on a timed-out attempt.
    pub probably_delivered: Option<bool>,
    /// A rejected module's digest.
    pub digest: Option<&'a str>,
    /// Why (a cancellation, a rejection).
    pub reason: Option<&'a str>,
    /// The service's error code of a refused answer.
    pub code: Option<&'a str>,
    /// What a task came to.
    pub outcome: Option<&'static str>,
    /// `task:done`'s error label.
    pub error: Option<&'static str>,
    /// A task's time, in milliseconds.
    pub elapsed_ms: Option<u64>,
    /// A task's wait from its poll's return to its start, in milliseconds (microsecond
    /// precision).
    pub wait_ms: Option<f64>,
    /// A task's guest CPU, in milliseconds (microsecond precision).
    pub cpu_ms: Option<f64>,
    /// A task's most linear memory, in bytes.
    pub memory_peak_bytes: Option<u64>,
    /// A task's log lines its rate limit dropped (only when some were).
    pub log_lines_dropped: Option<u64>,
    /// `task:done` of a task answered from its idempotency key's stored answer.
    pub deduplicated: Option<bool>,
    /// Every event of a task whose answer came from the outbox at start.
    pub recovered: Option<bool>,
    /// A callback message's SQS id.
    pub message_id: Option<&'a str>,
    /// How many times SQS has handed a callback message out.
    pub receive_count: Option<u32>,
    /// The version replaced or judged against.
    pub old_digest: Option<&'a str>,
    /// The new version.
    pub new_digest: Option<&'a str>,
    /// How long a new version took to be ready, in ms.
    pub compile_ms: Option<u64>,
    /// Whether a version came from the compile cache.
    pub cache: Option<&'static str>,
    /// How long loading took, in ms.
    pub load_ms: Option<u64>,
    /// A canary's share of new tasks.
    pub percent: Option<u32>,
    /// Canary tasks answered.
    pub canary_tasks: Option<u64>,
    /// The canary's host-failure rate.
    pub canary_failure_rate: Option<f64>,
    /// Stable tasks answered during the canary.
    pub stable_tasks: Option<u64>,
    /// Stable's host-failure rate during the canary.
    pub stable_failure_rate: Option<f64>,
    /// The increase allowed.
    pub max_failure_rate_increase: Option<f64>,
}

/// An event's level and fields: what [`log`] writes for it.
pub(super) fn line(event: &Event) -> (Level, Fields<'_>) {
    let mut fields = Fields::default();
    let level = match &event.kind {
        EventKind::Worker { worker, event } => {
            fields.worker = Some(worker);
            event.log(&mut fields)
        }
        EventKind::Task {
            worker,
            task,
            event,
        } => {
            fields.worker = Some(worker);
            fields.task_id = Some(&task.task_id);
            fields.handler_digest = Some(&task.handler_digest);
            fields.recovered = task.recovered.then_some(true);
            event.log(&mut fields)
        }
        EventKind::Handler(event) => event.log(&mut fields),
    };
    (level, fields)
}

/// An event's log message: its name, and what went wrong for the error events.
struct Message<'a>(&'a EventKind);

impl fmt::Display for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let detail = match self.0 {
            EventKind::Worker { event, .. } => event.detail(),
            EventKind::Task { event, .. } => event.detail(),
            EventKind::Handler(event) => event.detail(),
        };
        match detail {
            Some(detail) => write!(f, "{}: {detail}", self.0.name()),
            None => f.write_str(self.0.name()),
        }
    }
}

/// The target every event is logged under, whichever file writes it: `RUST_LOG`
/// filters and log readers name it.
const TARGET: &str = "sfn_wasm_host::events";

/// Logs an event at its level with its fields. Logging is a large share of the host's
/// CPU per task, so the message is formatted only if a subscriber takes the event.
pub(super) fn log(event: &Event) {
    let (level, fields) = line(event);
    let name = event.kind.name();
    let activity = &*event.activity;
    let task_source = event.task_source;
    let message = Message(&event.kind);
    // tracing needs the level at compile time: one call per level, the same fields.
    macro_rules! write_at {
        ($level:expr) => {
            tracing::event!(
                target: TARGET,
                $level,
                event = name,
                activity,
                task_source,
                worker = fields.worker,
                task_id = fields.task_id,
                handler_digest = fields.handler_digest,
                throttled = fields.throttled,
                blocked = fields.blocked,
                source = fields.source,
                attempts = fields.attempts,
                probably_delivered = fields.probably_delivered,
                digest = fields.digest,
                reason = fields.reason,
                code = fields.code,
                outcome = fields.outcome,
                error = fields.error,
                elapsed_ms = fields.elapsed_ms,
                wait_ms = fields.wait_ms,
                cpu_ms = fields.cpu_ms,
                memory_peak_bytes = fields.memory_peak_bytes,
                log_lines_dropped = fields.log_lines_dropped,
                deduplicated = fields.deduplicated,
                recovered = fields.recovered,
                message_id = fields.message_id,
                receive_count = fields.receive_count,
                old_digest = fields.old_digest,
                new_digest = fields.new_digest,
                compile_ms = fields.compile_ms,
                cache = fields.cache,
                load_ms = fields.load_ms,
                percent = fields.percent,
                canary_tasks = fields.canary_tasks,
                canary_failure_rate = fields.canary_failure_rate,
                stable_tasks = fields.stable_tasks,
                stable_failure_rate = fields.stable_failure_rate,
                max_failure_rate_increase = fields.max_failure_rate_increase,
                "{message}"
            )
        };
    }
    match level {
        Level::ERROR => write_at!(Level::ERROR),
        Level::WARN => write_at!(Level::WARN),
        Level::INFO => write_at!(Level::INFO),
        Level::DEBUG => write_at!(Level::DEBUG),
        _ => write_at!(Level::TRACE),
    }
}
