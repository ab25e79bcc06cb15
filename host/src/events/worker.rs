//! `worker:*` and `polling:*`: a worker's life and its polls.

use tracing::Level;

use super::log::Fields;

/// What happened to a worker, or to one of its polls.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerEvent {
    /// `worker:starting`
    Starting,
    /// `worker:running`
    Running,
    /// `worker:stopping`
    Stopping,
    /// `worker:stopped`, with the exit code: 0 when asked to stop, 10 after too many failed
    /// polls (the pool restarts it).
    Stopped {
        /// 0 or 10 (`WorkerExit::code`).
        exit_code: i32,
    },
    /// `worker:error`: the worker gives up (too many failed polls).
    Error {
        /// Why.
        error: String,
    },
    /// `polling:starting`
    PollingStarting,
    /// `polling:success`: the poll returned, with or without a task.
    PollingSuccess {
        /// Whether it brought a task.
        task: bool,
    },
    /// `polling:error`
    PollingError {
        /// Why.
        error: String,
        /// Failed polls in a row, this one included. A throttled poll is not a failure
        /// and does not count.
        attempt: u32,
        /// Step Functions throttled the poll (the account's quota): the worker waits and
        /// polls again, however often it happens.
        throttled: bool,
        /// The activity cannot be polled until its setup changes (it does not exist, its
        /// KMS key cannot be used): the worker waits (at most a minute between polls)
        /// and recovers by itself; `/readyz` says why meanwhile.
        blocked: bool,
    },
    /// `callback:rejected`: a message of a callback's queue that is not a task (not
    /// JSON, no token at the `token` pointer, a token Step Functions refuses as
    /// malformed). Never run, never deleted: the queue's redrive policy moves it to its
    /// dead-letter queue after `maxReceiveCount` receives.
    MessageRejected {
        /// The SQS message id.
        message_id: String,
        /// Why it is not a task.
        reason: String,
        /// How many times SQS has handed it out, this time included.
        receive_count: u32,
    },
    /// `callback:closed`: a message whose task Step Functions has already closed
    /// (answered, timed out, stopped): a message delivered twice, or one that reappeared
    /// after its host died. Deleted, not run.
    MessageClosed {
        /// The SQS message id.
        message_id: String,
        /// What Step Functions said.
        reason: String,
    },
}

impl WorkerEvent {
    /// The event's name, as in the seed (`polling:error`).
    pub fn name(&self) -> &'static str {
        match self {
            WorkerEvent::Starting => "worker:starting",
            WorkerEvent::Running => "worker:running",
            WorkerEvent::Stopping => "worker:stopping",
            WorkerEvent::Stopped { .. } => "worker:stopped",
            WorkerEvent::Error { .. } => "worker:error",
            WorkerEvent::PollingStarting => "polling:starting",
            WorkerEvent::PollingSuccess { .. } => "polling:success",
            WorkerEvent::PollingError { .. } => "polling:error",
            WorkerEvent::MessageRejected { .. } => "callback:rejected",
            WorkerEvent::MessageClosed { .. } => "callback:closed",
        }
    }

    /// What went wrong, for the log message, if anything did.
    pub(super) fn detail(&self) -> Option<String> {
        match self {
            WorkerEvent::Stopped { exit_code } => Some(format!("exit code {exit_code}")),
            WorkerEvent::Error { error } => Some(error.clone()),
            WorkerEvent::PollingError {
                error,
                throttled: true,
                ..
            } => Some(error.clone()),
            WorkerEvent::PollingError { error, attempt, .. } => {
                Some(format!("attempt {attempt}: {error}"))
            }
            WorkerEvent::MessageRejected { reason, .. }
            | WorkerEvent::MessageClosed { reason, .. } => Some(reason.clone()),
            _ => None,
        }
    }

    /// Its log level and fields: polls happen all the time and are DEBUG; a failing
    /// poll or a worker giving up is WARN.
    pub(super) fn log<'a>(&'a self, fields: &mut Fields<'a>) -> Level {
        match self {
            WorkerEvent::PollingError {
                throttled, blocked, ..
            } => {
                fields.throttled = Some(*throttled);
                fields.blocked = Some(*blocked);
                Level::WARN
            }
            WorkerEvent::Error { .. } => Level::WARN,
            WorkerEvent::MessageRejected {
                message_id,
                reason,
                receive_count,
            } => {
                fields.message_id = Some(message_id);
                fields.reason = Some(reason);
                fields.receive_count = Some(*receive_count);
                Level::WARN
            }
            WorkerEvent::MessageClosed { message_id, reason } => {
                fields.message_id = Some(message_id);
                fields.reason = Some(reason);
                Level::INFO
            }
            WorkerEvent::PollingStarting | WorkerEvent::PollingSuccess { .. } => Level::DEBUG,
            _ => Level::INFO,
        }
    }
}
