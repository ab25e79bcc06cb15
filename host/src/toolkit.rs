//! The toolkit a handler imports (`success`, `failure`, `heartbeat`, `cancelled`), and the
//! [`Responder`] through which answers leave the host.
//!
//! The [`Toolkit`] applies the rules a guest's answer must pass before the host accepts
//! it: an output must be JSON of at most 262,144 bytes, error and cause are cut to Step
//! Functions' limits. What happens to an accepted answer (recording it, sending it,
//! retrying it, the first-answer rule) is the task's [`Delivery`]'s job, outside the
//! guest's `Store`. The responder is the transport underneath: one attempt per call, to
//! Step Functions in `serve`, nowhere in `invoke`.

use std::time::Duration;

use async_trait::async_trait;

pub use crate::delivery::{AnswerState, Delivery};
use crate::engine::bindings::sfn::activity::toolkit::Host;
pub use crate::engine::bindings::sfn::activity::types::ToolkitError;
use crate::outcome::{Answer, HostFailure, MAX_OUTPUT_BYTES};
use crate::sfn::SfnError;

/// Who asked for a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatSource {
    /// The guest called `heartbeat()`.
    Guest,
    /// The host's automatic heartbeat (`heartbeat_seconds`).
    Auto,
}

impl HeartbeatSource {
    /// `guest` or `auto`, the `source` field of `task:heartbeat`.
    pub fn name(self) -> &'static str {
        match self {
            HeartbeatSource::Guest => "guest",
            HeartbeatSource::Auto => "auto",
        }
    }
}

/// How an answer reached Step Functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Attempts it took, this one included.
    pub attempts: u32,
    /// An earlier attempt timed out and a later one was refused as closed: the timed-out
    /// attempt most likely went through.
    pub probably: bool,
}

/// Sends one task's answers and heartbeats, one attempt per call, and hears what became
/// of them (the hooks, which `serve` turns into `task:*` events).
///
/// Implementations map their transport's errors onto [`SfnError`]: a task that can no
/// longer be answered is [`SfnError::TaskClosed`]; [`SfnError::is_transient`] errors are
/// retried by the [`Delivery`].
#[async_trait]
pub trait Responder: Send + Sync {
    /// One attempt to deliver `answer` (valid, within Step Functions' limits).
    async fn send(&self, answer: &Answer) -> Result<(), SfnError>;
    /// One heartbeat.
    async fn heartbeat(&self) -> Result<(), SfnError>;
    /// The answer was delivered.
    fn delivered(&self, _answer: &Answer, _how: Delivered) {}
    /// An attempt failed with a transient error; the next one follows in `delay`.
    fn retrying(&self, _attempt: u32, _error: &SfnError, _delay: Duration) {}
    /// The answer will not be delivered: refused, closed, or out of retries.
    fn undelivered(&self, _answer: &Answer, _reason: &str) {}
    /// A heartbeat was delivered.
    fn heartbeat_sent(&self, _source: HeartbeatSource) {}
    /// Step Functions closed the task under a running guest (a heartbeat was refused):
    /// the guest is being cancelled, and nothing can be answered.
    fn cancelled(&self, _reason: &str) {}
    /// A handler error, when it happens: before the host sends its own failure for it,
    /// or when the guest tries to answer twice.
    fn errored(&self, _error: &TaskError) {}
}

/// Something a handler did wrong, as reported to [`Responder::errored`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    /// The handler did not answer properly; the host answers with this failure (unless
    /// an answer was already given, which stands).
    #[error("{0}")]
    Failed(HostFailure),
    /// The handler tried to answer a task that already had an answer.
    #[error("the handler answered twice; the first answer stands")]
    AlreadyResponded,
}

impl TaskError {
    /// The error name alone (`SfnWasmHost.Trap`), without the cause: what may be logged
    /// at `info` and above.
    pub fn name(&self) -> &'static str {
        match self {
            TaskError::Failed(failure) => failure.name(),
            TaskError::AlreadyResponded => "already-responded",
        }
    }
}

/// A responder with nowhere to deliver to: it accepts every answer. Used by `invoke`,
/// where the answer is printed from the task's delivery state, and by benchmarks.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalResponder;

#[async_trait]
impl Responder for LocalResponder {
    async fn send(&self, _answer: &Answer) -> Result<(), SfnError> {
        Ok(())
    }
    async fn heartbeat(&self) -> Result<(), SfnError> {
        tracing::debug!("heartbeat");
        Ok(())
    }
}

/// One task's toolkit: the state behind the handler's imports.
pub struct Toolkit {
    delivery: Delivery,
}

impl Toolkit {
    /// The toolkit of the task that `delivery` answers.
    pub fn new(delivery: Delivery) -> Self {
        Self { delivery }
    }

    /// The task's delivery.
    pub fn delivery(&self) -> &Delivery {
        &self.delivery
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
        if !self.delivery.answered() {
            validate_output(&output)?;
        }
        self.delivery.answer(Answer::Success { output }).await
    }

    async fn failure(&mut self, error: String, cause: String) -> Result<(), ToolkitError> {
        self.delivery.answer(Answer::failure(error, cause)).await
    }

    async fn heartbeat(&mut self) -> Result<(), ToolkitError> {
        self.delivery.heartbeat(HeartbeatSource::Guest).await
    }

    async fn cancelled(&mut self) -> bool {
        self.delivery.cancelled()
    }
}

impl crate::engine::bindings::sfn::activity::types::Host for Toolkit {}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::delivery::DeliveryOptions;
    use crate::engine::TaskControl;

    fn toolkit() -> Toolkit {
        Toolkit::new(Delivery::new(
            Arc::new(LocalResponder),
            TaskControl::default(),
            DeliveryOptions::default(),
        ))
    }

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
        let mut toolkit = toolkit();
        toolkit.success("{}".into()).await.unwrap();
        assert_eq!(
            toolkit.failure("E".into(), "c".into()).await,
            Err(ToolkitError::AlreadyResponded)
        );
        assert_eq!(
            toolkit.heartbeat().await,
            Err(ToolkitError::AlreadyResponded)
        );
        toolkit.delivery().settled().await;
        assert_eq!(
            toolkit.delivery().state(),
            AnswerState::Delivered {
                answer: Answer::Success {
                    output: "{}".into()
                },
                probably: false,
            }
        );
    }

    #[tokio::test]
    async fn an_invalid_output_leaves_the_task_unanswered() {
        let mut toolkit = toolkit();
        assert!(matches!(
            toolkit.success("nope".into()).await,
            Err(ToolkitError::InvalidOutput(_))
        ));
        assert_eq!(toolkit.delivery().state(), AnswerState::Pending);
    }
}
