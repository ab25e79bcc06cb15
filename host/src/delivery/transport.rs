//! The transport under a [`Delivery`](super::Delivery): one attempt per call, nothing
//! else. What became of an answer is told to the delivery's observer
//! ([`DeliveryObserver`](super::DeliveryObserver)), not to the transport.

use async_trait::async_trait;

use crate::outcome::Answer;
use crate::sfn::SfnError;

/// Sends one task's answers and heartbeats, one attempt per call.
///
/// Implementations map their transport's errors onto [`SfnError`]: a task that can no
/// longer be answered is [`SfnError::TaskClosed`]; [`SfnError::is_transient`] errors are
/// retried by the [`Delivery`](super::Delivery).
#[async_trait]
pub trait Transport: Send + Sync {
    /// One attempt to deliver `answer` (valid, within Step Functions' limits).
    async fn send(&self, answer: &Answer) -> Result<(), SfnError>;
    /// One heartbeat.
    async fn heartbeat(&self) -> Result<(), SfnError>;
}

/// A transport with nowhere to deliver to: it accepts every answer. Used by `invoke`,
/// where the answer is printed from the task's delivery state, and by benchmarks.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalTransport;

#[async_trait]
impl Transport for LocalTransport {
    async fn send(&self, _answer: &Answer) -> Result<(), SfnError> {
        Ok(())
    }
    async fn heartbeat(&self) -> Result<(), SfnError> {
        tracing::debug!("heartbeat");
        Ok(())
    }
}
