//! The Step Functions transport: one task's answers and heartbeats, sent with its task
//! token, one attempt per call. What becomes of them is the delivery's to tell (see
//! [`crate::answer_events`]).

use std::sync::Arc;

use async_trait::async_trait;

use crate::delivery::Transport;
use crate::outcome::Answer;
use crate::sfn::{SfnError, StepFunctions};

/// Answers one task through Step Functions.
pub struct SfnTransport {
    sfn: Arc<dyn StepFunctions>,
    token: String,
}

impl SfnTransport {
    /// The transport for the task with `token`.
    pub fn new(sfn: Arc<dyn StepFunctions>, token: String) -> Self {
        Self { sfn, token }
    }
}

#[async_trait]
impl Transport for SfnTransport {
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
}
