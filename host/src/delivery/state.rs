//! Where a task's answer stands.

use crate::outcome::Answer;

/// Where a task's answer stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerState {
    /// Nothing has been accepted yet.
    Pending,
    /// This answer is recorded and being sent (or waiting for its next attempt).
    Delivering(Answer),
    /// This answer was delivered.
    Delivered {
        /// The answer.
        answer: Answer,
        /// An attempt timed out and a retry found the task closed: it most likely went
        /// through on the timed-out attempt.
        probably: bool,
    },
    /// The task can no longer be answered.
    Closed {
        /// The answer that was refused, if there was one; `None` when a heartbeat found
        /// the task closed before anything was answered.
        attempted: Option<Answer>,
        /// What Step Functions said.
        reason: String,
    },
    /// The answer could not be delivered: refused for another reason, out of retries, or
    /// given up at the end of a shutdown.
    Undelivered {
        /// The answer.
        answer: Answer,
        /// Why.
        reason: String,
    },
}

impl AnswerState {
    /// The answer accepted for the task, whatever became of it.
    pub fn answer(&self) -> Option<&Answer> {
        match self {
            AnswerState::Pending
            | AnswerState::Closed {
                attempted: None, ..
            } => None,
            AnswerState::Delivering(answer)
            | AnswerState::Delivered { answer, .. }
            | AnswerState::Undelivered { answer, .. }
            | AnswerState::Closed {
                attempted: Some(answer),
                ..
            } => Some(answer),
        }
    }

    /// Whether an answer reached Step Functions.
    pub fn is_delivered(&self) -> bool {
        matches!(self, AnswerState::Delivered { .. })
    }
}
