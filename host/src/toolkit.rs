//! The toolkit a handler imports (`success`, `failure`, `heartbeat`, `cancelled`), and the
//! [`Responder`] through which its answers leave the sandbox.
//!
//! The [`Toolkit`] owns the rules every answer obeys whatever the responder is: an output
//! must be JSON of at most 262,144 bytes, error and cause are cut to Step Functions'
//! limits, and only the first accepted answer counts. The responder only delivers: to Step
//! Functions in `serve`, to the terminal in `invoke`.

use std::sync::Arc;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::engine::bindings::sfn::activity::toolkit::Host;
pub use crate::engine::bindings::sfn::activity::types::ToolkitError;
use crate::outcome::{Answer, HostFailure, MAX_OUTPUT_BYTES};

/// Delivers a task's answers and heartbeats, and hears about what went wrong with it.
///
/// Implementations map their transport's errors onto [`ToolkitError`]: a task that can no
/// longer be answered is [`ToolkitError::TaskClosed`], anything that may work on a retry is
/// [`ToolkitError::Unavailable`].
#[async_trait]
pub trait Responder: Send + Sync {
    /// Delivers a success; `output` is valid JSON within Step Functions' size limit.
    async fn success(&self, output: &str) -> Result<(), ToolkitError>;
    /// Delivers a failure; `error` and `cause` are within Step Functions' limits.
    async fn failure(&self, error: &str, cause: &str) -> Result<(), ToolkitError>;
    /// Delivers a heartbeat.
    async fn heartbeat(&self) -> Result<(), ToolkitError>;
    /// Hears about a handler error, when it happens: before the host sends its own failure
    /// for it, or when the guest tries to answer twice. The default ignores it.
    fn errored(&self, _error: &TaskError) {}
}

/// Something a handler did wrong, as reported to [`Responder::errored`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    /// The handler did not answer properly; the host answers with this failure.
    #[error("{0}")]
    Failed(HostFailure),
    /// The handler tried to answer a task that already had an answer.
    #[error("the handler answered twice; the first answer stands")]
    AlreadyResponded,
}

/// A responder with nowhere to deliver to: it accepts every answer. Used by `invoke`,
/// where the answer is printed from the task report, and by benchmarks.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalResponder;

#[async_trait]
impl Responder for LocalResponder {
    async fn success(&self, _output: &str) -> Result<(), ToolkitError> {
        Ok(())
    }
    async fn failure(&self, _error: &str, _cause: &str) -> Result<(), ToolkitError> {
        Ok(())
    }
    async fn heartbeat(&self) -> Result<(), ToolkitError> {
        tracing::info!("heartbeat");
        Ok(())
    }
}

/// Where a task's answer stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerState {
    /// Nothing has been accepted yet.
    Pending,
    /// This answer was delivered.
    Sent(Answer),
    /// The task can no longer be answered; `attempted` was refused with `reason`.
    Closed {
        /// The answer that was refused.
        attempted: Answer,
        /// What the responder said.
        reason: String,
    },
}

/// One task's toolkit: the state behind the handler's imports.
pub struct Toolkit {
    responder: Arc<dyn Responder>,
    cancel: CancellationToken,
    state: AnswerState,
}

impl Toolkit {
    /// A toolkit whose `cancelled()` turns true when `cancel` is cancelled.
    pub fn new(responder: Arc<dyn Responder>, cancel: CancellationToken) -> Self {
        Self {
            responder,
            cancel,
            state: AnswerState::Pending,
        }
    }

    /// Where the answer stands now.
    pub fn state(&self) -> &AnswerState {
        &self.state
    }

    /// The responder answers go to.
    pub fn responder(&self) -> &Arc<dyn Responder> {
        &self.responder
    }

    /// Delivers `answer` unless the task already has one, and records the result. Used
    /// for the guest's answers and the host's alike, so the first-answer rule has one home.
    pub async fn answer(&mut self, answer: Answer) -> Result<(), ToolkitError> {
        match &self.state {
            AnswerState::Pending => {}
            AnswerState::Sent(_) => {
                self.responder.errored(&TaskError::AlreadyResponded);
                return Err(ToolkitError::AlreadyResponded);
            }
            AnswerState::Closed { reason, .. } => {
                return Err(ToolkitError::TaskClosed(reason.clone()));
            }
        }
        let delivered = match &answer {
            Answer::Success { output } => self.responder.success(output).await,
            Answer::Failure { error, cause } => self.responder.failure(error, cause).await,
        };
        match delivered {
            Ok(()) => self.state = AnswerState::Sent(answer),
            Err(ToolkitError::TaskClosed(reason)) => {
                self.state = AnswerState::Closed {
                    attempted: answer,
                    reason: reason.clone(),
                };
                return Err(ToolkitError::TaskClosed(reason));
            }
            Err(other) => return Err(other),
        }
        Ok(())
    }
}

/// Checks a guest's output before it leaves the sandbox.
fn validate_output(output: &str) -> Result<(), ToolkitError> {
    if output.len() > MAX_OUTPUT_BYTES {
        return Err(ToolkitError::InvalidOutput(format!(
            "the output is {} bytes; Step Functions accepts at most {MAX_OUTPUT_BYTES}",
            output.len()
        )));
    }
    serde_json::from_str::<serde::de::IgnoredAny>(output)
        .map(drop)
        .map_err(|err| ToolkitError::InvalidOutput(format!("the output is not JSON: {err}")))
}

impl Host for Toolkit {
    async fn success(&mut self, output: String) -> Result<(), ToolkitError> {
        if matches!(self.state, AnswerState::Pending) {
            validate_output(&output)?;
        }
        self.answer(Answer::Success { output }).await
    }

    async fn failure(&mut self, error: String, cause: String) -> Result<(), ToolkitError> {
        self.answer(Answer::failure(error, cause)).await
    }

    async fn heartbeat(&mut self) -> Result<(), ToolkitError> {
        match &self.state {
            AnswerState::Pending => self.responder.heartbeat().await,
            AnswerState::Sent(_) => Err(ToolkitError::AlreadyResponded),
            AnswerState::Closed { reason, .. } => Err(ToolkitError::TaskClosed(reason.clone())),
        }
    }

    async fn cancelled(&mut self) -> bool {
        self.cancel.is_cancelled()
    }
}

impl crate::engine::bindings::sfn::activity::types::Host for Toolkit {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_must_be_json_within_the_limit() {
        assert!(validate_output(r#"{"a":1}"#).is_ok());
        assert!(validate_output("null").is_ok());
        assert!(matches!(
            validate_output("{not json"),
            Err(ToolkitError::InvalidOutput(_))
        ));
        let big = format!("\"{}\"", "x".repeat(MAX_OUTPUT_BYTES));
        assert!(
            matches!(validate_output(&big), Err(ToolkitError::InvalidOutput(m)) if m.contains("bytes"))
        );
    }

    #[tokio::test]
    async fn only_the_first_answer_counts() {
        let mut toolkit = Toolkit::new(Arc::new(LocalResponder), CancellationToken::new());
        toolkit.success("{}".into()).await.unwrap();
        assert_eq!(
            toolkit.failure("E".into(), "c".into()).await,
            Err(ToolkitError::AlreadyResponded)
        );
        assert_eq!(
            toolkit.heartbeat().await,
            Err(ToolkitError::AlreadyResponded)
        );
        assert_eq!(
            toolkit.state(),
            &AnswerState::Sent(Answer::Success {
                output: "{}".into()
            })
        );
    }

    #[tokio::test]
    async fn an_invalid_output_leaves_the_task_unanswered() {
        let mut toolkit = Toolkit::new(Arc::new(LocalResponder), CancellationToken::new());
        assert!(matches!(
            toolkit.success("nope".into()).await,
            Err(ToolkitError::InvalidOutput(_))
        ));
        assert_eq!(toolkit.state(), &AnswerState::Pending);
    }
}
