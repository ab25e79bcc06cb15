//! The toolkit a handler imports (`success`, `failure`, `heartbeat`, `cancelled`, and
//! from world 0.2 `checkpoint` and `last-checkpoint`), for every world version the host
//! serves.
//!
//! The [`Toolkit`] applies the rules a guest's answer must pass before the host accepts
//! it: an output must be JSON of at most 262,144 bytes, error and cause are cut to Step
//! Functions' limits. What happens to an accepted answer (recording it, sending it,
//! retrying it, the first-answer rule) is the [`AnswerSink`]'s job, outside the guest's
//! `Store`: in the host, the task's `Delivery`. The engine knows only this trait, so it
//! can be read and tested without the answer path.

use std::sync::Arc;

use async_trait::async_trait;

use crate::bindings::sfn::activity::toolkit::Host;
use crate::bindings::sfn::activity::types::ToolkitError;
use crate::bindings::v0_1;
use crate::capability::Checkpoints;
use crate::epoch::{Paused, Running};
use crate::outcome::{Answer, AnswerError, HostFailure, MAX_OUTPUT_BYTES};
use v0_1::sfn::activity::types::ToolkitError as ToolkitErrorV0_1;

/// Where a task's answers and heartbeats go once the guest (or the host, for the guest)
/// gives them. One per task.
#[async_trait]
pub trait AnswerSink: Send + Sync + 'static {
    /// Whether the task has an answer (or can no longer have one).
    fn answered(&self) -> bool;
    /// The guest's answer (valid, within Step Functions' limits). Returns once it is
    /// taken; dropping the future must not stop its delivery.
    ///
    /// # Errors
    /// [`AnswerError::AlreadyResponded`] when the task already had one,
    /// [`AnswerError::TaskClosed`] when Step Functions refused it as closed,
    /// [`AnswerError::Unavailable`] when it was refused for another reason.
    async fn answer(&self, answer: Answer) -> Result<(), AnswerError>;
    /// The guest's heartbeat.
    ///
    /// # Errors
    /// As for [`answer`](Self::answer); `Unavailable` when it could not be sent this time.
    async fn heartbeat(&self) -> Result<(), AnswerError>;
    /// One of the host's automatic heartbeats (`heartbeat_seconds`), sent while the
    /// guest runs; what became of it is the sink's to act on. Dropping the future must not
    /// cut a request off.
    async fn auto_heartbeat(&self) {}
    /// The guest's `cancelled()`: the host is stopping, or Step Functions closed the task.
    fn cancelled(&self) -> bool;
    /// The handler went wrong (`failure`); if the task has no answer yet, the host
    /// answers with this failure. An answer the guest gave stands.
    fn host_failure(&self, failure: &HostFailure);
}

/// The largest checkpoint a task may save, in bytes: as large as a task's output.
pub const MAX_CHECKPOINT_BYTES: usize = MAX_OUTPUT_BYTES;
/// The most checkpoints one task may save: each is a durable write (an fsync'd file or
/// an S3 PUT) the host makes for the guest.
pub const MAX_CHECKPOINTS_PER_TASK: u32 = 1000;
/// The most checkpoint bytes one task may save, over all its checkpoints.
pub const MAX_CHECKPOINT_BYTES_PER_TASK: u64 = 64 << 20;

/// One task's toolkit: the state behind the handler's imports.
pub struct Toolkit {
    sink: Arc<dyn AnswerSink>,
    checkpoints: Option<Arc<dyn Checkpoints>>,
    /// Checkpoints saved (or tried) by this task, and their bytes.
    saved: (u32, u64),
    /// The task's checkpoint as last read or saved, once known: a guest that asks again
    /// (or after its own `checkpoint`) costs no store call.
    last: Option<Option<String>>,
    /// The task's hold on the epoch clock, paused while a call waits (see
    /// [`Running::pause`]); `None` outside a running task (tests).
    running: Option<Running>,
}

impl Toolkit {
    /// The toolkit of the task whose answers go to `sink` and whose checkpoints go to
    /// `checkpoints` (`None`: the task has no checkpoint store).
    pub fn new(sink: Arc<dyn AnswerSink>, checkpoints: Option<Arc<dyn Checkpoints>>) -> Self {
        Self {
            sink,
            checkpoints,
            saved: (0, 0),
            last: None,
            running: None,
        }
    }

    /// Holds the epoch clock for the task's guest, paused while a toolkit call waits.
    pub(crate) fn with_running(mut self, running: Running) -> Self {
        self.running = Some(running);
        self
    }

    /// Marks the guest as waiting in a host call (no guest code runs) until dropped.
    fn waiting(&self) -> Option<Paused<'_>> {
        self.running.as_ref().map(Running::pause)
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

/// The WIT world's name for what became of a call.
fn to_toolkit(error: AnswerError) -> ToolkitError {
    match error {
        AnswerError::AlreadyResponded => ToolkitError::AlreadyResponded,
        AnswerError::TaskClosed(reason) => ToolkitError::TaskClosed(reason),
        AnswerError::Unavailable(reason) => ToolkitError::Unavailable(reason),
    }
}

impl Host for Toolkit {
    async fn success(&mut self, output: String) -> Result<(), ToolkitError> {
        if !self.sink.answered() {
            validate_output(&output)?;
        }
        let _waiting = self.waiting();
        self.sink
            .answer(Answer::Success { output })
            .await
            .map_err(to_toolkit)
    }

    async fn failure(&mut self, error: String, cause: String) -> Result<(), ToolkitError> {
        let _waiting = self.waiting();
        self.sink
            .answer(Answer::failure(error, cause))
            .await
            .map_err(to_toolkit)
    }

    async fn heartbeat(&mut self) -> Result<(), ToolkitError> {
        let _waiting = self.waiting();
        self.sink.heartbeat().await.map_err(to_toolkit)
    }

    async fn cancelled(&mut self) -> bool {
        self.sink.cancelled()
    }

    async fn checkpoint(&mut self, data: String) -> Result<(), ToolkitError> {
        let Some(checkpoints) = &self.checkpoints else {
            return Err(ToolkitError::Unavailable("no progress key".into()));
        };
        if data.len() > MAX_CHECKPOINT_BYTES {
            return Err(ToolkitError::InvalidOutput(format!(
                "the checkpoint is {} bytes; at most {MAX_CHECKPOINT_BYTES} are kept",
                data.len()
            )));
        }
        let (count, bytes) = self.saved;
        if count >= MAX_CHECKPOINTS_PER_TASK
            || bytes + data.len() as u64 > MAX_CHECKPOINT_BYTES_PER_TASK
        {
            return Err(ToolkitError::Unavailable(format!(
                "the task has saved its {MAX_CHECKPOINTS_PER_TASK} checkpoints or {MAX_CHECKPOINT_BYTES_PER_TASK} bytes of them; the previous one stands"
            )));
        }
        self.saved = (count + 1, bytes + data.len() as u64);
        let waiting = self.waiting();
        let saved = checkpoints.save(&data).await;
        drop(waiting);
        match saved {
            Ok(()) => {
                self.last = Some(Some(data));
                Ok(())
            }
            Err(err) => Err(ToolkitError::Unavailable(format!(
                "the checkpoint was not saved ({err}); the previous one stands"
            ))),
        }
    }

    async fn last_checkpoint(&mut self) -> Option<String> {
        if let Some(last) = &self.last {
            return last.clone();
        }
        let checkpoints = self.checkpoints.as_ref()?;
        let waiting = self.waiting();
        let loaded = checkpoints.load().await;
        drop(waiting);
        match loaded {
            Ok(last) => {
                self.last = Some(last.clone());
                last
            }
            Err(err) => {
                // Not remembered: a later call may find the store back.
                tracing::warn!(error = %err, "the last checkpoint could not be read");
                None
            }
        }
    }
}

impl crate::bindings::sfn::activity::types::Host for Toolkit {}

/// World 0.1.0: the same calls, with 0.1.0's error type (the same cases).
impl v0_1::sfn::activity::toolkit::Host for Toolkit {
    async fn success(&mut self, output: String) -> Result<(), ToolkitErrorV0_1> {
        Host::success(self, output).await.map_err(to_v0_1)
    }

    async fn failure(&mut self, error: String, cause: String) -> Result<(), ToolkitErrorV0_1> {
        Host::failure(self, error, cause).await.map_err(to_v0_1)
    }

    async fn heartbeat(&mut self) -> Result<(), ToolkitErrorV0_1> {
        Host::heartbeat(self).await.map_err(to_v0_1)
    }

    async fn cancelled(&mut self) -> bool {
        Host::cancelled(self).await
    }
}

impl v0_1::sfn::activity::types::Host for Toolkit {}

fn to_v0_1(error: ToolkitError) -> ToolkitErrorV0_1 {
    match error {
        ToolkitError::AlreadyResponded => ToolkitErrorV0_1::AlreadyResponded,
        ToolkitError::InvalidOutput(reason) => ToolkitErrorV0_1::InvalidOutput(reason),
        ToolkitError::TaskClosed(reason) => ToolkitErrorV0_1::TaskClosed(reason),
        ToolkitError::Unavailable(reason) => ToolkitErrorV0_1::Unavailable(reason),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Takes the first answer and refuses the rest, as a delivery does.
    #[derive(Default)]
    struct FirstAnswer(Mutex<Option<Answer>>);

    #[async_trait]
    impl AnswerSink for FirstAnswer {
        fn answered(&self) -> bool {
            self.0.lock().unwrap().is_some()
        }
        async fn answer(&self, answer: Answer) -> Result<(), AnswerError> {
            let mut first = self.0.lock().unwrap();
            if first.is_some() {
                return Err(AnswerError::AlreadyResponded);
            }
            *first = Some(answer);
            Ok(())
        }
        async fn heartbeat(&self) -> Result<(), AnswerError> {
            Ok(())
        }
        fn cancelled(&self) -> bool {
            false
        }
        fn host_failure(&self, _failure: &HostFailure) {}
    }

    /// Keeps the last checkpoint in memory.
    #[derive(Default)]
    struct Kept(Mutex<Option<String>>);

    #[async_trait]
    impl Checkpoints for Kept {
        async fn save(&self, data: &str) -> Result<(), String> {
            *self.0.lock().unwrap() = Some(data.to_owned());
            Ok(())
        }
        async fn load(&self) -> Result<Option<String>, String> {
            Ok(self.0.lock().unwrap().clone())
        }
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
    async fn an_invalid_output_is_refused_before_it_reaches_the_sink() {
        let sink = Arc::new(FirstAnswer::default());
        let mut toolkit = Toolkit::new(sink.clone(), None);
        assert!(matches!(
            toolkit.success("nope".into()).await,
            Err(ToolkitError::InvalidOutput(_))
        ));
        assert!(!sink.answered());
        toolkit.failure("E".repeat(300), "c".into()).await.unwrap();
        let Some(Answer::Failure { error, .. }) = sink.0.lock().unwrap().clone() else {
            panic!("the failure reached the sink");
        };
        assert_eq!(error.chars().count(), 256, "cut to Step Functions' limit");
        // The sink's refusal is the WIT world's error.
        assert_eq!(
            toolkit.success("{}".into()).await,
            Err(ToolkitError::AlreadyResponded)
        );
    }

    /// Each checkpoint is a durable write the host makes for the guest: a task's are
    /// bounded in number (and bytes), and past the bound the last one saved stands.
    #[tokio::test]
    async fn a_task_saves_a_bounded_number_of_checkpoints() {
        let progress: Arc<dyn Checkpoints> = Arc::new(Kept::default());
        let mut toolkit = Toolkit::new(Arc::new(FirstAnswer::default()), Some(progress));
        for n in 0..MAX_CHECKPOINTS_PER_TASK {
            toolkit.checkpoint(format!("{n}")).await.unwrap();
        }
        assert!(matches!(
            toolkit.checkpoint("over".into()).await,
            Err(ToolkitError::Unavailable(why)) if why.contains("checkpoints")
        ));
        let last = format!("{}", MAX_CHECKPOINTS_PER_TASK - 1);
        assert_eq!(toolkit.last_checkpoint().await, Some(last));
    }

    /// Whether the guest counted as running guest code (for the epoch clock) at each
    /// call it received: answers, heartbeats, checkpoint saves and loads.
    struct Observing {
        ticker: Arc<crate::epoch::EpochTicker>,
        running: Mutex<Vec<bool>>,
    }

    impl Observing {
        fn seen(&self) {
            // `stalled(0)`: a guest counts as running and the clock has not ticked
            // within no time at all, i.e. a guest counts as running.
            let running = self.ticker.stalled(std::time::Duration::ZERO);
            self.running.lock().unwrap().push(running);
        }
    }

    #[async_trait]
    impl AnswerSink for Observing {
        fn answered(&self) -> bool {
            false
        }
        async fn answer(&self, _answer: Answer) -> Result<(), AnswerError> {
            self.seen();
            Ok(())
        }
        async fn heartbeat(&self) -> Result<(), AnswerError> {
            self.seen();
            Ok(())
        }
        fn cancelled(&self) -> bool {
            false
        }
        fn host_failure(&self, _failure: &HostFailure) {}
    }

    #[async_trait]
    impl Checkpoints for Observing {
        async fn save(&self, _data: &str) -> Result<(), String> {
            self.seen();
            Ok(())
        }
        async fn load(&self) -> Result<Option<String>, String> {
            self.seen();
            Ok(None)
        }
    }

    #[tokio::test]
    async fn a_guest_waiting_in_a_toolkit_call_does_not_keep_the_epoch_clock_ticking() {
        let ticker =
            Arc::new(crate::epoch::EpochTicker::start(wasmtime::Engine::default()).unwrap());
        let calls = Arc::new(Observing {
            ticker: ticker.clone(),
            running: Mutex::new(Vec::new()),
        });
        let mut toolkit =
            Toolkit::new(calls.clone(), Some(calls.clone())).with_running(ticker.running());
        assert!(
            ticker.stalled(std::time::Duration::ZERO),
            "the guest counts as running"
        );
        toolkit.last_checkpoint().await;
        toolkit.checkpoint("{}".into()).await.unwrap();
        toolkit.heartbeat().await.unwrap();
        toolkit.success("{}".into()).await.unwrap();
        toolkit.failure("E".into(), "c".into()).await.unwrap();
        assert_eq!(*calls.running.lock().unwrap(), [false; 5]);
        assert!(
            ticker.stalled(std::time::Duration::ZERO),
            "and again once each call returned"
        );
        drop(toolkit);
        assert!(
            !ticker.stalled(std::time::Duration::ZERO),
            "not once it ended"
        );
    }
}
