//! The Step Functions responder: delivers one task's answers with its token, and emits the
//! task events that say what was delivered.

use std::sync::Arc;

use async_trait::async_trait;

use crate::events::{Emitter, EventKind};
use crate::sfn::{SfnError, StepFunctions};
use crate::toolkit::{Responder, TaskError, ToolkitError};

/// Answers one task through Step Functions.
pub struct SfnResponder {
    sfn: Arc<dyn StepFunctions>,
    token: String,
    emitter: Emitter,
}

impl SfnResponder {
    /// A responder for the task with `token`, emitting through `emitter`.
    pub fn new(sfn: Arc<dyn StepFunctions>, token: String, emitter: Emitter) -> Self {
        Self {
            sfn,
            token,
            emitter,
        }
    }
}

fn toolkit_error(err: SfnError) -> ToolkitError {
    match err {
        SfnError::TaskClosed(reason) => ToolkitError::TaskClosed(reason),
        SfnError::Unavailable(reason) => ToolkitError::Unavailable(reason),
    }
}

#[async_trait]
impl Responder for SfnResponder {
    async fn success(&self, output: &str) -> Result<(), ToolkitError> {
        self.sfn
            .send_success(&self.token, output)
            .await
            .map_err(toolkit_error)?;
        self.emitter.emit(EventKind::TaskSuccess);
        Ok(())
    }

    async fn failure(&self, error: &str, cause: &str) -> Result<(), ToolkitError> {
        self.sfn
            .send_failure(&self.token, error, cause)
            .await
            .map_err(toolkit_error)?;
        self.emitter.emit(EventKind::TaskFailure {
            error: error.to_owned(),
        });
        Ok(())
    }

    async fn heartbeat(&self) -> Result<(), ToolkitError> {
        self.sfn
            .send_heartbeat(&self.token)
            .await
            .map_err(toolkit_error)?;
        self.emitter.emit(EventKind::TaskHeartbeat);
        Ok(())
    }

    fn errored(&self, error: &TaskError) {
        self.emitter.emit(EventKind::TaskErrored {
            error: error.to_string(),
        });
    }
}
