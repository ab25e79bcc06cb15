//! One task's lifecycle, from the poll that brought it to `task:done`: the handler
//! version it runs, its delivery, the guest's run (in the task's own future: guests yield
//! their thread at every epoch tick, see [`crate::engine`]), the automatic
//! heartbeats, the settled answer, what it came to (by who answered), its record, and the
//! `task:done` event. The worker that polled it only hands it over.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use sfn_wasm_engine::control::TaskControl;
use sfn_wasm_engine::{Capabilities, Handler, TaskLimits, TaskReport, TaskRequest, WasmEngine};
use tokio::sync::Semaphore;

use crate::answer_events::AnswerEvents;
use crate::config::ActivityConfig;
use crate::delivery::{
    AnswerState, Delivery, DeliveryObserver, DeliveryOptions, Fanout, Transport,
};
use crate::events::{
    DoneError, Emitter, TaskDone, TaskEmitter, TaskEvent, TaskOutcome, TaskRef, WorkerEmitter,
};
use crate::grants::GrantsSlot;
use crate::idempotency::{ActivityIdempotency, Claim, Lookup, Settled};
use crate::ids::task_id;
use crate::outbox::{Kept, Outbox};
use crate::outcome::{Answer, Answerer, HostFailure};
use crate::progress::{ActivityProgress, TaskProgress};
use crate::record::{Record, RecordedAnswer, Recorder, unix_ms};
use crate::rollout::{Chosen, VersionChooser};
use crate::sfn::{ActivityTask, StepFunctions};
use crate::sfn_transport::SfnTransport;

/// What the workers of an activity and the tasks they bring share; one per activity.
pub struct ActivityShared {
    /// The activity's settings.
    pub activity: ActivityConfig,
    /// The ARN (a callback's queue URL), for events.
    pub arn: Arc<str>,
    /// Step Functions.
    pub sfn: Arc<dyn StepFunctions>,
    /// The engine handlers run on.
    pub engine: Arc<WasmEngine>,
    /// Which handler version each new task runs (stable, or a canary's share); a task
    /// keeps the version it started with.
    pub versions: Arc<VersionChooser>,
    /// Where each task's input and answer are recorded (`record`), if anywhere.
    pub recorder: Option<Arc<Recorder>>,
    /// The activity's emitter; each worker derives its own.
    pub emitter: Emitter,
    /// Process-wide task controls; each task gets child tokens. `abort` also ends
    /// in-flight polls (the end of a shutdown's grace).
    pub tasks: TaskControl,
    /// How answers are delivered.
    pub delivery: DeliveryOptions,
    /// What the activity's guests may reach; re-read on SIGHUP.
    pub grants: GrantsSlot,
    /// The activity's task slots (`max_concurrent_tasks`): a worker takes one before it
    /// polls and holds it until the task it brings is done, so no task is fetched that
    /// the host cannot start at once.
    pub slots: Arc<Semaphore>,
    /// The activity's live gauges (workers, polls, slots held by tasks), changed by its
    /// workers and read by `/metrics` and `/status`.
    pub gauges: Arc<crate::gauges::Gauges>,
    /// `max_tasks_per_second`: a worker takes a token before it polls (after its slot),
    /// so that tasks start at most this fast and none is fetched that must wait.
    pub starts: Option<TaskStarts>,
    /// `[activity.progress]`: where the tasks' checkpoints are kept, if anywhere.
    pub progress: Option<Arc<ActivityProgress>>,
    /// `[activity.idempotency]`: the answers kept by key, if any.
    pub idempotency: Option<Arc<ActivityIdempotency>>,
    /// `[host] outbox_dir`: where answers are kept until settled, if anywhere.
    pub outbox: Option<Arc<Outbox>>,
    /// A `[[callback]]`'s queue, which its workers receive from instead of polling
    /// Step Functions; `None` for an activity.
    pub callback: Option<Arc<crate::callback::CallbackQueue>>,
}

/// A token bucket of task starts: `rate` a second, holding a second's worth (at least
/// one), so that a burst after a quiet spell is at most `rate` starts.
pub type TaskStarts = Arc<governor::DefaultDirectRateLimiter>;

/// The bucket for `max_tasks_per_second = rate`.
pub fn task_starts(rate: f64) -> TaskStarts {
    Arc::new(crate::sfn::token_bucket(rate, 1.0))
}

impl ActivityShared {
    /// The task's emitter, for the handler version that will run it.
    fn task_emitter(
        worker: &WorkerEmitter,
        task: &ActivityTask,
        digest: Arc<str>,
    ) -> (TaskEmitter, Arc<str>) {
        let task_id: Arc<str> = match &task.id {
            Some(id) => id.as_str().into(),
            None => task_id(&task.token).into(),
        };
        let emitter = worker.for_task(TaskRef {
            task_id: task_id.clone(),
            handler_digest: digest,
            recovered: false,
        });
        (emitter, task_id)
    }

    /// The task's delivery, and its outbox entry's handle when answers are kept there.
    fn delivery(
        &self,
        token: String,
        emitter: &TaskEmitter,
        control: TaskControl,
    ) -> (Delivery, Option<Kept>) {
        let events: Arc<dyn DeliveryObserver> = Arc::new(AnswerEvents::new(emitter.clone()));
        // The outbox hears first: an answer's entry is gone when its event is emitted.
        let (transport, observer, kept): (Arc<dyn Transport>, Arc<dyn DeliveryObserver>, _) =
            match &self.outbox {
                Some(outbox) => {
                    let sfn = Arc::new(SfnTransport::new(self.sfn.clone(), token.clone()));
                    let kept = outbox.keep(sfn, &token, emitter.task(), &self.arn);
                    let observer = Fanout::new([kept.observer(), events]);
                    (kept.transport(), Arc::new(observer), Some(kept))
                }
                None => (
                    Arc::new(SfnTransport::new(self.sfn.clone(), token)),
                    events,
                    None,
                ),
            };
        (
            Delivery::new(transport, observer, control, self.delivery.clone()),
            kept,
        )
    }

    /// Answers a task that arrived after shutdown began with `SfnWasmHost.Shutdown`,
    /// without running it; `worker` is the emitter of the worker that polled it.
    pub async fn decline(&self, worker: &WorkerEmitter, task: ActivityTask) {
        let received = Instant::now();
        let digest = self.versions.stable().digest().hex().clone();
        let (emitter, _) = Self::task_emitter(worker, &task, digest);
        emitter.emit(TaskEvent::Received);
        let (delivery, _) = self.delivery(task.token, &emitter, TaskControl::default());
        delivery.decline(&HostFailure::Shutdown);
        Self::done_without_running(&emitter, &delivery, received, false).await;
    }

    /// Ends a task no guest ran (its answer given to `delivery`): waits for the answer
    /// to settle, through the same conclusion as a guest's (a stored answer Step
    /// Functions refuses is followed by `SfnWasmHost.AnswerRefused`, then the bare
    /// failure), and emits `task:done`.
    async fn done_without_running(
        emitter: &TaskEmitter,
        delivery: &Delivery,
        received: Instant,
        deduplicated: bool,
    ) {
        delivery.conclude().await;
        let (outcome, error) = outcome(&delivery.state(), delivery.answered_by());
        let mut done = TaskDone::not_run(outcome, error, received.elapsed());
        done.deduplicated = deduplicated;
        emitter.emit(TaskEvent::Done(done));
    }

    /// Looks the task's idempotency key up: `Ok` with the claim to settle (if any) when
    /// the task is to run, `Err` when it was answered here without running
    /// ([`NotRun::Answered`]) or is left unanswered ([`NotRun::Left`]).
    async fn claim_key(
        &self,
        emitter: &TaskEmitter,
        task_id: &str,
        input: &str,
        delivery: &Delivery,
        received: Instant,
    ) -> Result<Option<Claim>, NotRun> {
        let Some(keys) = &self.idempotency else {
            return Ok(None);
        };
        match keys.look_up(&self.arn, input).await {
            Lookup::NoKey => Ok(None),
            Lookup::Run(claim) => Ok(Some(claim)),
            Lookup::Stored(answer) => {
                // Sent as the guest's answer it was; what became of it is the delivery's.
                let _ = delivery.answer(answer).await;
                Self::done_without_running(emitter, delivery, received, true).await;
                Err(NotRun::Answered)
            }
            // A callback's message of a key another attempt holds is most likely the
            // same task again (a redelivery while its first run, or a dead host's claim,
            // lasts): failing it would fail the task that attempt answers. The message
            // is left to come back once the claim is settled or expired.
            Lookup::Duplicate if self.callback.is_some() => {
                tracing::info!(
                    activity = &*self.arn,
                    task_id,
                    "another attempt holds the task's idempotency key: its message is left to come back after its visibility timeout"
                );
                emitter.emit(TaskEvent::Done(TaskDone::not_run(
                    TaskOutcome::Undelivered,
                    DoneError::Undelivered,
                    received.elapsed(),
                )));
                Err(NotRun::Left)
            }
            Lookup::Duplicate => {
                delivery.decline(&HostFailure::Duplicate);
                Self::done_without_running(emitter, delivery, received, false).await;
                Err(NotRun::Answered)
            }
            Lookup::Mismatch(pointers) => {
                delivery.decline(&HostFailure::IdempotencyMismatch(pointers));
                Self::done_without_running(emitter, delivery, received, false).await;
                Err(NotRun::Answered)
            }
            Lookup::Unavailable(err) => {
                tracing::warn!(
                    event = "idempotency:unavailable",
                    activity = &*self.arn,
                    task_id,
                    code = %err.code,
                    "idempotency:unavailable: {err}; the task runs without its key{}",
                    permission_hint(&err)
                );
                Ok(None)
            }
        }
    }

    /// Runs one task to its one answer, delivered (or given up on) before it returns;
    /// `worker` and `worker_name` are those of the worker that polled it, `received`
    /// when its poll returned. Returns what became of the answer (a callback's message
    /// is deleted once it was accepted or the task is closed).
    pub async fn run(
        &self,
        worker: &WorkerEmitter,
        worker_name: &Arc<str>,
        task: ActivityTask,
        received: Instant,
    ) -> AnswerState {
        let chosen = self.versions.choose();
        let handler = chosen.handler.clone();
        let (emitter, task_id) = Self::task_emitter(worker, &task, handler.digest().hex().clone());
        emitter.emit(TaskEvent::Received);
        let ActivityTask { token, input, .. } = task;
        let recorded = self.recorder.as_ref().map(|_| {
            (
                input.clone(),
                task_id.to_string(),
                std::time::SystemTime::now(),
            )
        });
        let control = TaskControl::child_of(&self.tasks);
        let (delivery, kept) = self.delivery(token, &emitter, control.clone());
        // Whatever happens below, even a panic, the task gets an answer.
        let unanswered = Unanswered::new(delivery.clone());
        let progress = self
            .progress
            .as_ref()
            .and_then(|progress| progress.for_task(&self.arn, &task_id, &input));
        let claim = match self
            .claim_key(&emitter, &task_id, &input, &delivery, received)
            .await
        {
            Ok(claim) => claim,
            Err(NotRun::Answered) => return delivery.state(),
            Err(NotRun::Left) => return unanswered.disarm(),
        };
        if let (Some(kept), Some(claim)) = (&kept, &claim) {
            kept.claimed(claim);
        }
        let request = TaskRequest {
            input,
            activity_arn: self.arn.clone(),
            worker_name: worker_name.clone(),
            task_id: task_id.clone(),
            limits: self.limits(),
            control,
            capabilities: self.capabilities(progress.as_ref()),
        };
        emitter.emit(TaskEvent::Start {
            wait: received.elapsed(),
        });
        let report = self
            .run_guarded(&handler, request, &delivery, worker_name, received)
            .await;
        drop(unanswered);
        delivery.conclude().await;
        let state = delivery.state();
        let answered_by = delivery.answered_by();
        let (outcome, error) = outcome(&state, answered_by);
        if judges_the_handler(outcome, answered_by) {
            self.versions.report(&chosen, outcome);
        }
        // An answer given up with its outbox entry left for the next start: that start
        // settles the claim (giving it back now would let a duplicate run the guest
        // again before the answer is delivered).
        if let Some(claim) = claim.filter(|_| !kept.as_ref().is_some_and(Kept::stayed)) {
            self.settle_claim(claim, &state, answered_by, &task_id)
                .await;
        }
        if let Some(kept) = &kept {
            kept.finished();
        }
        if let (TaskOutcome::Success, Some(progress)) = (outcome, progress) {
            self.clear_progress(progress, &task_id);
        }
        if let (Some(recorded), AnswerState::Delivered { answer, .. }) = (recorded, &state) {
            self.record(recorded, &chosen, RecordedAnswer::new(answer, answered_by));
        }
        emitter.emit(TaskEvent::Done(TaskDone {
            outcome,
            error,
            elapsed: received.elapsed(),
            cpu: report.cpu,
            memory_peak_bytes: report.memory_peak_bytes,
            log_lines_dropped: report.log_lines_dropped,
            deduplicated: false,
        }));
        state
    }

    /// A task's limits: the activity's memory cap, deadline and automatic heartbeats.
    fn limits(&self) -> TaskLimits {
        TaskLimits {
            memory_bytes: self.activity.memory_limit_bytes,
            timeout: self.activity.task_timeout,
            heartbeat_every: self.activity.heartbeat_interval,
        }
    }

    /// What the task's instance may use: the activity's grants (environment, folders,
    /// outbound HTTP) and, when it keeps progress and the input has a key, the task's
    /// checkpoint store. A new capability is one more line here.
    fn capabilities(&self, progress: Option<&TaskProgress>) -> Capabilities {
        let capabilities = Capabilities::none().with(self.grants.current());
        match progress {
            Some(progress) => capabilities.with(Arc::new(progress.clone())),
            None => capabilities,
        }
    }

    /// Runs the handler on `request`. A panic in the host's code under the guest is caught
    /// here and answered `SfnWasmHost.Internal`, so that the task is still answered and
    /// accounted for.
    async fn run_guarded(
        &self,
        handler: &Handler,
        request: TaskRequest,
        delivery: &Delivery,
        worker_name: &str,
        received: Instant,
    ) -> TaskReport {
        let ran = AssertUnwindSafe(handler.run(&self.engine, request, delivery.clone()))
            .catch_unwind()
            .await;
        let panic = match ran {
            Ok(report) => return report,
            Err(panic) => panic,
        };
        let why = panic_message(&*panic);
        tracing::error!(
            activity = &*self.arn,
            worker = worker_name,
            error = why,
            "a task's runner panicked"
        );
        let failure =
            HostFailure::Internal(format!("the host failed while running the task: {why}"));
        delivery.host_failure(&failure);
        TaskReport {
            error: Some(failure),
            elapsed: received.elapsed(),
            cpu: Duration::ZERO,
            memory_peak_bytes: 0,
            log_lines_dropped: 0,
        }
    }

    /// Settles the task's idempotency claim: what Step Functions took from the guest is
    /// kept for the key's later attempts; a host failure (which a retry may not repeat) or
    /// no answer gives the key back.
    async fn settle_claim(
        &self,
        claim: Claim,
        state: &AnswerState,
        answered_by: Option<Answerer>,
        task_id: &str,
    ) {
        let kept = match (state, answered_by) {
            (AnswerState::Delivered { answer, .. }, Some(Answerer::Guest)) => Some(answer),
            _ => None,
        };
        match claim.settle(kept).await {
            Ok(Settled::Done) => {}
            Ok(Settled::TakenOver) => tracing::warn!(
                event = "idempotency:taken_over",
                activity = &*self.arn,
                task_id,
                "idempotency:taken_over: the task's claim expired before its answer settled and another attempt took the key; the answer was not stored (raise the task's timeout or answer_retry_seconds if this recurs)"
            ),
            Err(err) => tracing::warn!(
                event = "idempotency:unavailable",
                activity = &*self.arn,
                task_id,
                code = %err.code,
                "idempotency:unavailable: {err}; the answer was not stored (its claim expires by itself){}",
                permission_hint(&err)
            ),
        }
    }

    /// The work succeeded: its checkpoint goes, beside the task (a checkpoint left by a
    /// failed delete is only read by the same work, which has succeeded). A task that
    /// neither saved nor found one has none to delete. (One left by an earlier attempt
    /// that this one never asked for stays: a handler that saves checkpoints reads them
    /// first.)
    fn clear_progress(&self, progress: TaskProgress, task_id: &Arc<str>) {
        if !progress.seen()
            || self
                .progress
                .as_ref()
                .is_some_and(|p| p.keep_after_success())
        {
            return;
        }
        let (arn, task_id) = (self.arn.clone(), task_id.clone());
        tokio::spawn(async move {
            if let Err(err) = progress.clear().await {
                tracing::warn!(activity = &*arn, task_id = &*task_id, error = %err, "a finished task's checkpoint could not be deleted");
            }
        });
    }

    /// Records what Step Functions accepted (never what was merely attempted: a replay
    /// compares answers), when the activity records.
    fn record(
        &self,
        (input, task_id, received_at): (String, String, std::time::SystemTime),
        chosen: &Chosen,
        answer: RecordedAnswer,
    ) {
        if let Some(recorder) = &self.recorder {
            recorder.record(Record {
                activity: self.arn.to_string(),
                task_id,
                handler_digest: chosen.handler.digest().hex().to_string(),
                received_unix_ms: unix_ms(received_at),
                input,
                answer,
            });
        }
    }
}

/// What a settled task came to, and its `error` label, by who answered: the host's
/// failure name when the host answered, `guest` when the handler did.
/// What Step Functions accepted, never what was merely attempted.
fn outcome(state: &AnswerState, by: Option<Answerer>) -> (TaskOutcome, DoneError) {
    match state {
        AnswerState::Delivered { answer, .. } => {
            let error = DoneError::answered_by(by);
            match (answer, error) {
                (Answer::Success { .. }, _) => (TaskOutcome::Success, DoneError::Guest),
                (Answer::Failure { .. }, DoneError::Guest) => (TaskOutcome::Failure, error),
                (Answer::Failure { .. }, _) => (TaskOutcome::HostFailure, error),
            }
        }
        // Step Functions closed the task before it accepted an answer; whatever the
        // guest did after (an answer, a timeout), the task ended there.
        AnswerState::Closed { .. } => (TaskOutcome::Closed, DoneError::Closed),
        // Given up on (out of retries, the host stopping) or refused to the last; a
        // settled delivery is never pending or delivering, but neither was accepted.
        AnswerState::Undelivered { .. } | AnswerState::Pending | AnswerState::Delivering(_) => {
            (TaskOutcome::Undelivered, DoneError::Undelivered)
        }
    }
}

/// Whether what a task came to says something about its handler version, for a canary's
/// verdict: a failure the host answered counts only when the handler caused it (not a
/// shutdown, a full pool, a refused answer, a duplicate or a bad input).
fn judges_the_handler(outcome: TaskOutcome, by: Option<Answerer>) -> bool {
    match (outcome, by) {
        (TaskOutcome::HostFailure, Some(Answerer::Host(kind))) => kind.is_handler_caused(),
        (TaskOutcome::HostFailure, _) => false,
        _ => true,
    }
}

/// What to add to a store error a user reads: S3's `AccessDenied` names a permission the
/// host's credentials lack (the store's policy in docs/src/permissions.md says which).
fn permission_hint(err: &crate::store::StoreError) -> &'static str {
    if err.code == "AccessDenied" || err.code == "Forbidden" {
        " (the host's credentials need s3:GetObject and s3:PutObject on the store's prefix: see the `idempotency-store` policy in docs/src/permissions.md; `check --remote` probes it)"
    } else {
        ""
    }
}

/// What a caught panic said, when it said it with a string.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic")
}

/// Answers its task with `SfnWasmHost.Internal` when dropped while the task has no
/// answer: the last resort if a worker panics or its future is dropped mid-task.
struct Unanswered(Option<Delivery>);

impl Unanswered {
    fn new(delivery: Delivery) -> Self {
        Self(Some(delivery))
    }

    /// The task is left unanswered on purpose (a callback's message left for later):
    /// its state, pending.
    fn disarm(mut self) -> AnswerState {
        self.0 = None;
        AnswerState::Pending
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(delivery) = &self.0
            && !delivery.answered()
        {
            delivery.host_failure(&HostFailure::Internal(
                "the host stopped running the task before it was answered".into(),
            ));
        }
    }
}

/// Why a task did not run: answered without running (a stored answer, a duplicate, a
/// mismatch), or left unanswered (a callback's message, for later).
enum NotRun {
    Answered,
    Left,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::delivery::{DeliveryEvent, LocalTransport};

    /// Counts the handler errors it hears of.
    #[derive(Default)]
    struct Counting {
        errored: AtomicU32,
    }

    impl DeliveryObserver for Counting {
        fn observe(&self, event: &DeliveryEvent<'_>) {
            if let DeliveryEvent::Errored { .. } = event {
                self.errored.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    fn delivery() -> (Delivery, Arc<Counting>) {
        let counting = Arc::new(Counting::default());
        let delivery = Delivery::new(
            Arc::new(LocalTransport),
            counting.clone(),
            TaskControl::default(),
            DeliveryOptions::default(),
        );
        (delivery, counting)
    }

    #[tokio::test]
    async fn a_task_whose_worker_panics_is_still_answered() {
        let (delivery, counting) = delivery();
        let held = delivery.clone();
        let panicked = tokio::spawn(async move {
            let _unanswered = Unanswered::new(held);
            panic!("a bug in the worker");
        })
        .await;
        assert!(panicked.unwrap_err().is_panic());
        delivery.settled().await;
        assert!(
            matches!(
                delivery.state(),
                AnswerState::Delivered { answer: Answer::Failure { ref error, .. }, .. } if error == "SfnWasmHost.Internal"
            ),
            "{:?}",
            delivery.state()
        );
        assert_eq!(counting.errored.load(Ordering::SeqCst), 1);
    }

    /// A canary is judged on what its handler did: a shutdown, a full pool, a refused
    /// answer or a duplicate key says nothing about the version (a rolling restart must
    /// not roll a good version back); a trap or a timeout does.
    #[test]
    fn only_what_the_handler_caused_judges_its_version() {
        let host = |failure: HostFailure| {
            judges_the_handler(
                TaskOutcome::HostFailure,
                Some(Answerer::Host(failure.kind())),
            )
        };
        assert!(host(HostFailure::Trap(String::new())));
        assert!(host(HostFailure::Timeout(String::new())));
        assert!(host(HostFailure::NoResponse));
        assert!(!host(HostFailure::Shutdown));
        assert!(!host(HostFailure::Capacity(String::new())));
        assert!(!host(HostFailure::AnswerRefused(String::new())));
        assert!(!host(HostFailure::Duplicate));
        assert!(!host(HostFailure::Internal(String::new())));
        assert!(judges_the_handler(
            TaskOutcome::Failure,
            Some(Answerer::Guest)
        ));
        assert!(judges_the_handler(
            TaskOutcome::Success,
            Some(Answerer::Guest)
        ));
    }

    #[tokio::test]
    async fn an_answered_task_is_left_alone_by_the_guard() {
        let (delivery, counting) = delivery();
        delivery
            .answer(Answer::Success {
                output: "{}".into(),
            })
            .await
            .unwrap();
        drop(Unanswered::new(delivery.clone()));
        delivery.settled().await;
        assert!(delivery.state().answer().is_some_and(Answer::is_success));
        // Not even reported: the guard only acts on a task with no answer.
        assert_eq!(counting.errored.load(Ordering::SeqCst), 0);
    }
}
