//! `task:*`: one task, from its arrival to `task:done`.

use std::sync::Arc;
use std::time::Duration;

use tracing::Level;

use super::log::Fields;
use crate::outcome::{Answerer, FailureKind, HeartbeatSource};

/// What happened to a task.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskEvent {
    /// `task:received`
    Received,
    /// `task:start`: the handler is about to run.
    Start {
        /// From the poll's return to this start: the host's own schedule-to-start
        /// (idempotency lookups, an instance slot, the runtime's queue).
        wait: Duration,
    },
    /// `task:heartbeat`: a heartbeat was delivered.
    Heartbeat {
        /// `guest` (the handler called `heartbeat()`) or `auto` (`heartbeat_seconds`).
        source: HeartbeatSource,
    },
    /// `task:success`: a success was delivered.
    Success {
        /// Attempts it took.
        attempts: u32,
        /// A timed-out attempt was followed by a refusal as closed: it most likely went
        /// through on the timed-out attempt.
        probably_delivered: bool,
    },
    /// `task:failure`: a failure was delivered (the guest's or the host's).
    Failure {
        /// The error name.
        error: String,
        /// Attempts it took.
        attempts: u32,
        /// As for `task:success`.
        probably_delivered: bool,
    },
    /// `task:retrying`: an answer attempt failed transiently; another follows.
    Retrying {
        /// The attempt that failed (1 for the first).
        attempt: u32,
        /// Step Functions throttled it (the account's quota).
        throttled: bool,
        /// Why it failed.
        error: String,
        /// The wait before the next attempt, in milliseconds.
        delay_ms: u64,
    },
    /// `task:refused`: Step Functions refused an answer for good (a final error code). A
    /// guest's refused answer is no answer: the guest may answer again, else the host
    /// answers `SfnWasmHost.AnswerRefused`; a refused answer of the host's is followed by
    /// a failure with neither error nor cause.
    Refused {
        /// The service's error code (`InvalidOutput`, `KmsAccessDeniedException`...).
        code: String,
        /// What it said.
        message: String,
    },
    /// `task:undelivered`: the answer will not reach Step Functions (refused to the last,
    /// the task closed, out of retries).
    Undelivered {
        /// Why.
        reason: String,
        /// A recovered answer found closed: most likely Step Functions took it before the
        /// host restarted (logged at INFO, not ERROR).
        probably_delivered: bool,
    },
    /// `task:cancelled`: Step Functions closed the task while the guest ran (a
    /// heartbeat was refused); the guest is cancelled and no answer is sent.
    Cancelled {
        /// What Step Functions said.
        reason: String,
    },
    /// `task:errored`: the handler went wrong (trap, no answer, a second answer, ...).
    Errored {
        /// The error name (`SfnWasmHost.Trap`, `already-responded`); the cause is logged
        /// at debug only, since it may carry task data.
        error: String,
    },
    /// `task:done`: the task is finished with; nothing more happens to it. Carries what
    /// the task came to and what it cost, for logs, metrics and traces.
    Done(TaskDone),
}

/// What a task came to, by who answered it: a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskOutcome {
    /// The handler answered success.
    Success,
    /// The handler answered failure.
    Failure,
    /// The host answered a `SfnWasmHost.*` failure (trap, timeout, no answer, shutdown...).
    HostFailure,
    /// Step Functions closed the task (timed out, execution stopped) before it accepted
    /// an answer.
    Closed,
    /// No answer reached Step Functions: the host gave up on it (out of retries, or
    /// stopping) or every answer was refused.
    Undelivered,
}

impl TaskOutcome {
    /// `success`, `failure`, `host_failure`, `closed` or `undelivered`.
    pub fn name(self) -> &'static str {
        match self {
            TaskOutcome::Success => "success",
            TaskOutcome::Failure => "failure",
            TaskOutcome::HostFailure => "host_failure",
            TaskOutcome::Closed => "closed",
            TaskOutcome::Undelivered => "undelivered",
        }
    }

    /// Whether the outcome says anything of the handler version that ran the task: a
    /// task Step Functions closed, or whose answer never reached it, does not.
    pub fn judges_the_handler(self) -> bool {
        !matches!(self, TaskOutcome::Closed | TaskOutcome::Undelivered)
    }
}

/// What `task:done`'s `error` field (and the metrics' `error` label) says: who answered
/// the task, or why no answer was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DoneError {
    /// The handler answered (success or failure): `guest`.
    Guest,
    /// The host answered with a failure of this kind: its `SfnWasmHost.*` name.
    Host(FailureKind),
    /// An answer a host before this one kept in its outbox, of no kind this host made:
    /// `outbox`.
    Recovered,
    /// Step Functions closed the task before it took an answer: `closed`.
    Closed,
    /// No answer reached Step Functions: `undelivered`.
    Undelivered,
}

impl DoneError {
    /// The field's value: `guest`, an `SfnWasmHost.*` name, `outbox`, `closed` or
    /// `undelivered`.
    pub fn name(self) -> &'static str {
        match self {
            DoneError::Guest => "guest",
            DoneError::Host(kind) => kind.name(),
            DoneError::Recovered => "outbox",
            DoneError::Closed => "closed",
            DoneError::Undelivered => "undelivered",
        }
    }

    /// For a delivered answer, by who gave it (`None`: the guest's, as it is when the
    /// guest answered before anyone recorded who).
    pub fn answered_by(by: Option<Answerer>) -> Self {
        match by {
            Some(Answerer::Host(kind)) => DoneError::Host(kind),
            Some(Answerer::Recovered) => DoneError::Recovered,
            Some(Answerer::Guest) | None => DoneError::Guest,
        }
    }
}

/// The fields of `task:done`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDone {
    /// What the task came to.
    pub outcome: TaskOutcome,
    /// Who answered, or why no answer was taken: the `error` field and label.
    pub error: DoneError,
    /// From the task's arrival to its end (answer settled).
    pub elapsed: Duration,
    /// The guest's CPU time: the polling threads' CPU clocks around each poll of its
    /// future, instantiation included.
    pub cpu: Duration,
    /// The most linear memory the guest held at once, in bytes.
    pub memory_peak_bytes: u64,
    /// Log lines the task caused (its output, and the host's lines about its requests)
    /// that its rate limit dropped; logged only when not zero.
    pub log_lines_dropped: u64,
    /// The answer was one stored for the task's idempotency key; no guest ran.
    pub deduplicated: bool,
}

impl TaskDone {
    /// A task no guest ran.
    pub fn not_run(outcome: TaskOutcome, error: DoneError, elapsed: Duration) -> Self {
        Self {
            outcome,
            error,
            elapsed,
            cpu: Duration::ZERO,
            memory_peak_bytes: 0,
            log_lines_dropped: 0,
            deduplicated: false,
        }
    }
}

/// Which task an event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRef {
    /// The task's short id (from its token; never the token).
    pub task_id: Arc<str>,
    /// The digest of the handler version that runs it.
    pub handler_digest: Arc<str>,
    /// Its answer was found in the outbox at start, left by a host that stopped before
    /// it was settled; no guest runs here.
    pub recovered: bool,
}

impl TaskEvent {
    /// The event's name, as in the seed (`task:success`).
    pub fn name(&self) -> &'static str {
        match self {
            TaskEvent::Received => "task:received",
            TaskEvent::Start { .. } => "task:start",
            TaskEvent::Heartbeat { .. } => "task:heartbeat",
            TaskEvent::Success { .. } => "task:success",
            TaskEvent::Failure { .. } => "task:failure",
            TaskEvent::Retrying { .. } => "task:retrying",
            TaskEvent::Refused { .. } => "task:refused",
            TaskEvent::Undelivered { .. } => "task:undelivered",
            TaskEvent::Cancelled { .. } => "task:cancelled",
            TaskEvent::Errored { .. } => "task:errored",
            TaskEvent::Done(_) => "task:done",
        }
    }

    /// What went wrong (or the error name), for the log message, if anything.
    pub(super) fn detail(&self) -> Option<String> {
        match self {
            TaskEvent::Refused { code, message } => Some(format!("{code}: {message}")),
            TaskEvent::Failure { error, .. }
            | TaskEvent::Errored { error }
            | TaskEvent::Retrying { error, .. }
            | TaskEvent::Undelivered { reason: error, .. }
            | TaskEvent::Cancelled { reason: error } => Some(error.clone()),
            _ => None,
        }
    }

    /// Its log level and fields. Each task costs three INFO lines (`task:start`, its
    /// answer, `task:done`); no task output, failure cause or token is logged at INFO
    /// or above; `task:received` adds nothing a reader of a task needs and is DEBUG.
    pub(super) fn log<'a>(&'a self, fields: &mut Fields<'a>) -> Level {
        match self {
            TaskEvent::Received => Level::DEBUG,
            TaskEvent::Retrying { throttled, .. } => {
                fields.throttled = Some(*throttled);
                Level::WARN
            }
            TaskEvent::Errored { .. } => Level::WARN,
            TaskEvent::Refused { code, .. } => {
                fields.code = Some(code);
                Level::WARN
            }
            TaskEvent::Undelivered {
                probably_delivered: true,
                ..
            } => {
                fields.probably_delivered = Some(true);
                Level::INFO
            }
            TaskEvent::Undelivered { .. } => Level::ERROR,
            TaskEvent::Heartbeat { source } => {
                fields.source = Some(source.name());
                Level::INFO
            }
            TaskEvent::Success {
                attempts,
                probably_delivered,
            }
            | TaskEvent::Failure {
                attempts,
                probably_delivered,
                ..
            } => {
                fields.attempts = Some(*attempts);
                fields.probably_delivered = Some(*probably_delivered);
                Level::INFO
            }
            TaskEvent::Cancelled { reason } => {
                fields.reason = Some(reason);
                Level::INFO
            }
            TaskEvent::Done(done) => {
                fields.outcome = Some(done.outcome.name());
                fields.error = Some(done.error.name());
                fields.elapsed_ms =
                    Some(u64::try_from(done.elapsed.as_millis()).unwrap_or(u64::MAX));
                fields.cpu_ms = Some((done.cpu.as_secs_f64() * 1e6).round() / 1e3);
                fields.memory_peak_bytes = Some(done.memory_peak_bytes);
                fields.log_lines_dropped =
                    (done.log_lines_dropped > 0).then_some(done.log_lines_dropped);
                fields.deduplicated = done.deduplicated.then_some(true);
                Level::INFO
            }
            TaskEvent::Start { wait } => {
                fields.wait_ms = Some((wait.as_secs_f64() * 1e6).round() / 1e3);
                Level::INFO
            }
        }
    }
}
