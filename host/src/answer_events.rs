//! The `task:*` events that say what became of a task's answer and heartbeats: an
//! observer of its delivery ([`DeliveryObserver`]).

use std::time::Duration;

use crate::delivery::{Delivered, DeliveryEvent, DeliveryObserver, TaskError};
use crate::events::{TaskEmitter, TaskEvent};
use crate::outcome::{Answer, HeartbeatSource};
use crate::sfn::SfnError;

/// Emits a task's delivery as `task:success`, `task:failure`, `task:retrying`,
/// `task:refused`, `task:undelivered`, `task:heartbeat`, `task:cancelled` and
/// `task:errored`.
pub struct AnswerEvents {
    emitter: TaskEmitter,
}

impl AnswerEvents {
    /// The events of the task of `emitter`.
    pub fn new(emitter: TaskEmitter) -> Self {
        Self { emitter }
    }

    fn delivered(&self, answer: &Answer, how: Delivered) {
        let (attempts, probably_delivered) = (how.attempts, how.probably);
        self.emitter.emit(match answer {
            Answer::Success { .. } => TaskEvent::Success {
                attempts,
                probably_delivered,
            },
            Answer::Failure { error, .. } => TaskEvent::Failure {
                error: error.clone(),
                attempts,
                probably_delivered,
            },
        });
    }

    fn retrying(&self, attempt: u32, error: &SfnError, delay: Duration) {
        self.emitter.emit(TaskEvent::Retrying {
            attempt,
            throttled: matches!(error, SfnError::Throttled(_)),
            error: error.to_string(),
            delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        });
    }

    fn refused(&self, error: &SfnError) {
        let (code, message) = match error {
            SfnError::Rejected { code, message } => (code.clone(), message.clone()),
            other => (String::new(), other.to_string()),
        };
        self.emitter.emit(TaskEvent::Refused { code, message });
    }

    fn undelivered(&self, reason: &str, probably_delivered: bool) {
        self.emitter.emit(TaskEvent::Undelivered {
            reason: reason.to_owned(),
            probably_delivered,
        });
    }

    fn heartbeat_sent(&self, source: HeartbeatSource) {
        self.emitter.emit(TaskEvent::Heartbeat { source });
    }

    fn cancelled(&self, reason: &str) {
        self.emitter.emit(TaskEvent::Cancelled {
            reason: reason.to_owned(),
        });
    }

    fn errored(&self, error: &TaskError) {
        if let TaskError::Failed(failure) = error {
            tracing::debug!(error = failure.name(), cause = %failure.cause(), "the handler's failure");
        }
        self.emitter.emit(TaskEvent::Errored {
            error: error.name().to_owned(),
        });
    }
}

impl DeliveryObserver for AnswerEvents {
    fn observe(&self, event: &DeliveryEvent<'_>) {
        match *event {
            // The lifecycle says when a task is received and done; the answer's own
            // record is its delivery's end.
            DeliveryEvent::Answering { .. } => {}
            DeliveryEvent::Retrying {
                attempt,
                error,
                delay,
            } => self.retrying(attempt, error, delay),
            DeliveryEvent::Refused { error, .. } => self.refused(error),
            DeliveryEvent::Delivered { answer, how } => self.delivered(answer, how),
            // An answer recovered from the outbox and found closed was most likely taken
            // before the host stopped (it was killed between the answer and the entry's
            // removal): not an error.
            DeliveryEvent::Closed { reason, .. } => {
                self.undelivered(reason, self.emitter.task().recovered);
            }
            DeliveryEvent::GaveUp { reason, .. } | DeliveryEvent::Undelivered { reason, .. } => {
                self.undelivered(reason, false);
            }
            DeliveryEvent::HeartbeatSent { source } => self.heartbeat_sent(source),
            DeliveryEvent::Cancelled { reason } => self.cancelled(reason),
            DeliveryEvent::Errored { error } => self.errored(error),
        }
    }
}
