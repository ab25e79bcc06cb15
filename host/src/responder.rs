//! The Step Functions responder: one task's transport, with its token, and the `task:*`
//! events that say what became of its answer and heartbeats.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::delivery::{Delivered, Responder, TaskError};
use crate::events::{TaskEmitter, TaskEvent};
use crate::outcome::Answer;
use crate::outcome::HeartbeatSource;
use crate::sfn::{SfnError, StepFunctions};

/// Answers one task through Step Functions.
pub struct SfnResponder {
    sfn: Arc<dyn StepFunctions>,
    token: String,
    emitter: TaskEmitter,
}

impl SfnResponder {
    /// A responder for the task with `token`, emitting through `emitter`.
    pub fn new(sfn: Arc<dyn StepFunctions>, token: String, emitter: TaskEmitter) -> Self {
        Self {
            sfn,
            token,
            emitter,
        }
    }
}

#[async_trait]
impl Responder for SfnResponder {
    async fn send(&self, answer: &Answer) -> Result<(), SfnError> {
        match answer {
            Answer::Success { output } => self.sfn.send_success(&self.token, output).await,
            Answer::Failure { error, cause } => {
                self.sfn.send_failure(&self.token, error, cause).await
            }
        }
    }

    async fn heartbeat(&self) -> Result<(), SfnError> {
        self.sfn.send_heartbeat(&self.token).await
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

    fn refused(&self, _answer: &Answer, error: &SfnError) {
        let (code, message) = match error {
            SfnError::Rejected { code, message } => (code.clone(), message.clone()),
            other => (String::new(), other.to_string()),
        };
        self.emitter.emit(TaskEvent::Refused { code, message });
    }

    fn undelivered(&self, _answer: &Answer, reason: &str) {
        self.emitter.emit(TaskEvent::Undelivered {
            reason: reason.to_owned(),
            probably_delivered: false,
        });
    }

    fn closed(&self, _answer: &Answer, reason: &str) {
        // An answer recovered from the outbox and found closed was most likely taken
        // before the host stopped (it was killed between the answer and the entry's
        // removal): not an error.
        self.emitter.emit(TaskEvent::Undelivered {
            reason: reason.to_owned(),
            probably_delivered: self.emitter.task().recovered,
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
