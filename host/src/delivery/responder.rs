//! The transport under a [`Delivery`](super::Delivery): one attempt per call, and the
//! hooks through which it hears what became of an answer.

use std::time::Duration;

use async_trait::async_trait;

use crate::outcome::{Answer, Answerer, HeartbeatSource, HostFailure};
use crate::sfn::SfnError;

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
/// retried by the [`Delivery`](super::Delivery).
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
    /// Step Functions refused an attempt for good (`error` is an
    /// [`SfnError::Rejected`]): a guest's answer is then no answer, and the host's is
    /// followed by the bare failure.
    fn refused(&self, _answer: &Answer, _error: &SfnError) {}
    /// The answer will not be delivered: closed, or refused to the last.
    fn undelivered(&self, _answer: &Answer, _reason: &str) {}
    /// Step Functions said the task is closed (timed out, stopped, or already
    /// answered); by default, as [`undelivered`](Self::undelivered).
    fn closed(&self, answer: &Answer, reason: &str) {
        self.undelivered(answer, reason);
    }
    /// `answer` is recorded as the task's, given `by` the guest or the host, before
    /// its first attempt.
    fn answering(&self, _answer: &Answer, _by: Answerer) {}
    /// The delivery gave the answer up without an answer from Step Functions: out of
    /// retries through an outage, or the host stopped. Step Functions may still take it
    /// (an outbox keeps it for the next start); by default, as [`undelivered`](Self::undelivered).
    fn gave_up(&self, answer: &Answer, reason: &str) {
        self.undelivered(answer, reason);
    }
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
