//! `ActivityWorker`: one poller. It long-polls its activity, runs each task it gets
//! through the current handler, and repeats until stopped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::config::ActivityConfig;
use crate::delivery::{AnswerState, Delivery, DeliveryOptions};
use crate::engine::{TaskControl, TaskLimits, TaskReport, TaskRequest, WasmEngine, sha256_hex};
use crate::events::{Emitter, EventKind, Outcome, TaskDone, TaskRef};
use crate::grants::GrantsSlot;
use crate::outcome::{Answer, HostFailure};
use crate::record::{Record, RecordedAnswer, Recorder, unix_ms};
use crate::responder::SfnResponder;
use crate::rollout::VersionChooser;
use crate::sfn::{ActivityTask, SfnError, StepFunctions};
use crate::toolkit::HeartbeatSource;

/// The worker was asked to stop.
pub const EXIT_STOPPED: i32 = 0;
/// The worker gave up after `polling.max_attempts` failed polls in a row (the seed's
/// `err_polling`); its pool replaces it after `restart_interval_ms`.
pub const EXIT_POLLING_ERROR: i32 = 10;

/// The wait after the `streak`-th throttled poll in a row: 0.2 s doubling to 10 s, with
/// jitter (50–100 %) so that the workers of a fleet do not come back together.
fn throttle_delay(streak: u32) -> Duration {
    let base = 0.2 * 2f64.powi(i32::try_from(streak.saturating_sub(1).min(16)).unwrap_or(16));
    Duration::from_secs_f64(base.min(10.0) * (0.5 + fastrand::f64() * 0.5))
}

/// What every worker of an activity shares.
pub struct WorkerShared {
    /// The activity's settings.
    pub activity: ActivityConfig,
    /// The ARN, for events.
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
    /// How answers are delivered (on the control-plane runtime).
    pub delivery: DeliveryOptions,
    /// The runtime guests run on, apart from the one that polls, answers and
    /// heartbeats, so that CPU-bound guests cannot delay those.
    pub guests: Handle,
    /// What the activity's guests may reach; re-read on SIGHUP.
    pub grants: GrantsSlot,
    /// The activity's task slots (`max_concurrent_tasks`): a worker takes one before it
    /// polls and holds it until the task it brings is done, so no task is fetched that
    /// the host cannot start at once.
    pub slots: Arc<Semaphore>,
}

/// One poller of one activity. Its tasks run beside its polls, each in a slot of the
/// activity's; cheap to clone (every clone is the same worker).
#[derive(Clone)]
pub struct ActivityWorker {
    name: Arc<str>,
    shared: Arc<WorkerShared>,
    stop: WorkerStop,
    emitter: Emitter,
}

/// The two ways a worker is asked to stop. Neither abandons a poll in flight: Step
/// Functions may hand a task to a dropped request, and that task would be stranded until
/// its timeout. Only the end of a shutdown's grace (the tasks' `abort`) drops a poll.
#[derive(Debug, Clone, Default)]
pub struct WorkerStop {
    /// The host is shutting down: start no new poll, and answer a task that the poll in
    /// flight brings with `SfnWasmHost.Shutdown` at once (retriable: a state machine's
    /// `Retry` moves it to another host).
    pub shutdown: CancellationToken,
    /// The pool is shrinking: start no new poll, but run the task the poll in flight
    /// brings.
    pub retire: CancellationToken,
}

impl WorkerStop {
    fn requested(&self) -> bool {
        self.shutdown.is_cancelled() || self.retire.is_cancelled()
    }
}

impl ActivityWorker {
    /// A worker named `name` that runs until asked to `stop`.
    pub fn new(name: Arc<str>, shared: Arc<WorkerShared>, stop: WorkerStop) -> Self {
        let emitter = shared.emitter.for_worker(name.clone());
        Self {
            name,
            shared,
            stop,
            emitter,
        }
    }

    /// The worker's name (`PREFIX:RANDOM`), sent with every poll.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The run loop. Returns the exit code: [`EXIT_STOPPED`] once asked to stop (a
    /// running task is always finished first, and its answer delivered), or
    /// [`EXIT_POLLING_ERROR`] after too many failed polls.
    pub async fn run(self) -> i32 {
        self.emitter.emit(EventKind::WorkerStarting);
        self.emitter.emit(EventKind::WorkerRunning);
        let polling = self.shared.activity.polling;
        let mut failures = 0;
        let mut throttled = 0;
        let mut running = JoinSet::new();
        let exit_code = loop {
            if self.stop.requested() {
                break EXIT_STOPPED;
            }
            // A free slot first: a task polled now can start at once.
            let slot = tokio::select! {
                biased;
                () = self.stop.shutdown.cancelled() => break EXIT_STOPPED,
                () = self.stop.retire.cancelled() => break EXIT_STOPPED,
                () = self.shared.tasks.abort.cancelled() => break EXIT_STOPPED,
                slot = self.shared.slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break EXIT_STOPPED,
                },
            };
            // Reap finished tasks (their panics were answered by their guards).
            while running.try_join_next().is_some() {}
            self.emitter.emit(EventKind::PollingStarting);
            let polled = tokio::select! {
                biased;
                () = self.shared.tasks.abort.cancelled() => break EXIT_STOPPED,
                polled = self.shared.sfn.poll(&self.shared.arn, &self.name) => polled,
            };
            match polled {
                Ok(task) => {
                    failures = 0;
                    throttled = 0;
                    self.emitter.emit(EventKind::PollingSuccess {
                        task: task.is_some(),
                    });
                    if let Some(task) = task {
                        if self.stop.shutdown.is_cancelled() {
                            self.refuse(task).await;
                        } else {
                            let worker = self.clone();
                            running.spawn(async move {
                                worker.handle(task).await;
                                drop(slot);
                            });
                        }
                    }
                }
                Err(err @ SfnError::Throttled(_)) => {
                    // The account's quota, not a fault: wait and poll again, as long as it
                    // takes, without counting towards `max_attempts`. The slot is free
                    // while this worker waits.
                    drop(slot);
                    throttled += 1;
                    self.emitter.emit(EventKind::PollingError {
                        error: err.to_string(),
                        attempt: failures,
                        throttled: true,
                    });
                    tokio::select! {
                        () = self.stop.shutdown.cancelled() => break EXIT_STOPPED,
                        () = self.stop.retire.cancelled() => break EXIT_STOPPED,
                        () = self.shared.tasks.abort.cancelled() => break EXIT_STOPPED,
                        () = tokio::time::sleep(throttle_delay(throttled)) => {}
                    }
                }
                Err(err) => {
                    drop(slot);
                    failures += 1;
                    throttled = 0;
                    self.emitter.emit(EventKind::PollingError {
                        error: err.to_string(),
                        attempt: failures,
                        throttled: false,
                    });
                    if failures >= polling.max_attempts {
                        self.emitter.emit(EventKind::WorkerError {
                            error: format!("{failures} polls in a row failed; last: {err}"),
                        });
                        break EXIT_POLLING_ERROR;
                    }
                    tokio::select! {
                        () = self.stop.shutdown.cancelled() => break EXIT_STOPPED,
                        () = self.stop.retire.cancelled() => break EXIT_STOPPED,
                        () = self.shared.tasks.abort.cancelled() => break EXIT_STOPPED,
                        () = tokio::time::sleep(polling.delay(failures)) => {}
                    }
                }
            }
        };
        // Every task this worker started is finished, and its answer settled, before it
        // stops (a panicked one was answered by its guard).
        while running.join_next().await.is_some() {}
        self.emitter.emit(EventKind::WorkerStopping);
        self.emitter.emit(EventKind::WorkerStopped { exit_code });
        exit_code
    }

    /// The task's emitter, for the handler version that will run it.
    fn task_emitter(&self, task: &ActivityTask, digest: Arc<str>) -> (Emitter, String) {
        let task_id = task_id(&task.token);
        let emitter = self.emitter.for_task(TaskRef {
            task_id: Arc::from(task_id.as_str()),
            handler_digest: digest,
        });
        (emitter, task_id)
    }

    fn delivery(&self, token: String, emitter: &Emitter, control: TaskControl) -> Delivery {
        let responder = Arc::new(SfnResponder::new(
            self.shared.sfn.clone(),
            token,
            emitter.clone(),
        ));
        Delivery::new(responder, control, self.shared.delivery.clone())
    }

    /// Answers a task that arrived after shutdown began with `SfnWasmHost.Shutdown`,
    /// without running it.
    async fn refuse(&self, task: ActivityTask) {
        let received = Instant::now();
        let digest = self.shared.versions.stable().digest().hex().clone();
        let (emitter, _) = self.task_emitter(&task, digest);
        emitter.emit(EventKind::TaskReceived);
        let delivery = self.delivery(task.token, &emitter, TaskControl::default());
        delivery.refuse(&HostFailure::Shutdown);
        delivery.settled().await;
        let (outcome, error) = outcome(&delivery.state(), Some(&HostFailure::Shutdown));
        emitter.emit(EventKind::TaskDone(TaskDone::not_run(
            outcome,
            error,
            received.elapsed(),
        )));
    }

    /// Runs one task to its one answer, delivered (or given up on) before it returns.
    async fn handle(&self, task: ActivityTask) {
        let received = Instant::now();
        let chosen = self.shared.versions.choose();
        let handler = chosen.handler.clone();
        let (emitter, task_id) = self.task_emitter(&task, handler.digest().hex().clone());
        emitter.emit(EventKind::TaskReceived);
        let ActivityTask { token, input } = task;
        let recorded = self
            .shared
            .recorder
            .as_ref()
            .map(|_| (input.clone(), task_id.clone(), std::time::SystemTime::now()));
        let control = TaskControl {
            cancel: self.shared.tasks.cancel.child_token(),
            abort: self.shared.tasks.abort.child_token(),
        };
        let delivery = self.delivery(token, &emitter, control.clone());
        // Whatever happens below, even a panic, the task gets an answer.
        let unanswered = Unanswered(delivery.clone());
        let request = TaskRequest {
            input,
            activity_arn: self.shared.arn.to_string(),
            worker_name: self.name.to_string(),
            task_id,
            limits: TaskLimits {
                memory_bytes: self.shared.activity.memory_limit_bytes,
                timeout: self.shared.activity.task_timeout,
            },
            control,
            grants: self.shared.grants.current(),
        };
        emitter.emit(EventKind::TaskStart);
        let heartbeats = self.start_heartbeats(&delivery);
        let engine = self.shared.engine.clone();
        let guest = delivery.clone();
        let ran = self
            .shared
            .guests
            .spawn(async move { handler.run(&engine, request, guest).await })
            .await;
        drop(heartbeats);
        let report = match ran {
            Ok(report) => report,
            Err(err) => {
                tracing::error!(activity = &*self.shared.arn, worker = &*self.name, error = %err, "a task's runner failed");
                let failure =
                    HostFailure::Internal(format!("the host failed while running the task: {err}"));
                delivery.host_failure(&failure);
                TaskReport {
                    error: Some(failure),
                    elapsed: received.elapsed(),
                    cpu: Duration::ZERO,
                    memory_peak_bytes: 0,
                }
            }
        };
        drop(unanswered);
        delivery.settled().await;
        let state = delivery.state();
        let (outcome, error) = outcome(&state, report.error.as_ref());
        self.shared.versions.report(&chosen, outcome);
        if let (Some(recorder), Some((input, task_id, received_at)), Some(answer)) =
            (&self.shared.recorder, recorded, state.answer())
        {
            recorder.record(Record {
                activity: self.shared.arn.to_string(),
                task_id,
                handler_digest: chosen.handler.digest().hex().to_string(),
                received_unix_ms: unix_ms(received_at),
                input,
                answer: recorded_answer(answer, outcome),
            });
        }
        emitter.emit(EventKind::TaskDone(TaskDone {
            outcome,
            error,
            elapsed: received.elapsed(),
            cpu: report.cpu,
            memory_peak_bytes: report.memory_peak_bytes,
        }));
    }

    /// Sends a heartbeat every `heartbeat_seconds` until the guard is dropped.
    fn start_heartbeats(&self, delivery: &Delivery) -> Option<DropGuard> {
        let every = self.shared.activity.heartbeat_interval?;
        let stop = CancellationToken::new();
        let guard = stop.clone().drop_guard();
        let delivery = delivery.clone();
        tokio::spawn(async move {
            let start = tokio::time::Instant::now() + every;
            let mut ticks = tokio::time::interval_at(start, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = ticks.tick() => {
                        // Errors are the delivery's to act on (a closed task is
                        // cancelled there); the next tick tries again.
                        let _ = delivery.heartbeat(HeartbeatSource::Auto).await;
                    }
                }
            }
        });
        Some(guard)
    }
}

/// What a settled task came to, and its `error` label: the host's failure when the
/// answer given is the one the host handed over, `guest` when the handler answered.
fn outcome(state: &AnswerState, host: Option<&HostFailure>) -> (Outcome, &'static str) {
    match (state.answer(), host) {
        (Some(Answer::Success { .. }), _) => (Outcome::Success, "guest"),
        (Some(Answer::Failure { error, .. }), Some(host)) if error == host.name() => {
            (Outcome::HostFailure, host.name())
        }
        (Some(Answer::Failure { .. }), _) => (Outcome::Failure, "guest"),
        // Step Functions closed the task before anything was answered; whatever the
        // guest did after (answer refused, a timeout), the task ended there.
        (None, _) => (Outcome::Closed, "closed"),
    }
}

/// The answer as recorded: the host's failures apart from the handler's.
fn recorded_answer(answer: &Answer, outcome: Outcome) -> RecordedAnswer {
    match answer {
        Answer::Success { output } => RecordedAnswer::Success {
            output: output.clone(),
        },
        Answer::Failure { error, cause } if outcome == Outcome::HostFailure => {
            RecordedAnswer::HostFailure {
                error: error.clone(),
                cause: cause.clone(),
            }
        }
        Answer::Failure { error, cause } => RecordedAnswer::Failure {
            error: error.clone(),
            cause: cause.clone(),
        },
    }
}

/// Answers its task with `SfnWasmHost.Internal` when dropped while the task has no
/// answer: the last resort if a worker panics or its future is dropped mid-task.
struct Unanswered(Delivery);

impl Drop for Unanswered {
    fn drop(&mut self) {
        if !self.0.answered() {
            self.0.host_failure(&HostFailure::Internal(
                "the host stopped running the task before it was answered".into(),
            ));
        }
    }
}

/// A short, stable id for a task, for logs: the first 16 hex digits of the SHA-256 of its
/// token. The token itself is a credential and never leaves the host.
pub fn task_id(token: &str) -> String {
    let mut id = sha256_hex(token.as_bytes());
    id.truncate(16);
    id
}

/// A fresh worker name, `PREFIX:RANDOM`.
pub fn worker_name(prefix: &str) -> Arc<str> {
    Arc::from(format!("{prefix}:{:08x}", fastrand::u32(..)))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::outcome::Answer;
    use crate::sfn::SfnError;
    use crate::toolkit::{Responder, TaskError};

    /// Accepts every answer and counts the handler errors it hears of.
    #[derive(Default)]
    struct Counting {
        errored: AtomicU32,
    }

    #[async_trait]
    impl Responder for Counting {
        async fn send(&self, _answer: &Answer) -> Result<(), SfnError> {
            Ok(())
        }
        async fn heartbeat(&self) -> Result<(), SfnError> {
            Ok(())
        }
        fn errored(&self, _error: &TaskError) {
            self.errored.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn delivery() -> (Delivery, Arc<Counting>) {
        let responder = Arc::new(Counting::default());
        let delivery = Delivery::new(
            responder.clone(),
            TaskControl::default(),
            DeliveryOptions::default(),
        );
        (delivery, responder)
    }

    #[tokio::test]
    async fn a_task_whose_worker_panics_is_still_answered() {
        let (delivery, responder) = delivery();
        let held = delivery.clone();
        let panicked = tokio::spawn(async move {
            let _unanswered = Unanswered(held);
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
        assert_eq!(responder.errored.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_answered_task_is_left_alone_by_the_guard() {
        let (delivery, responder) = delivery();
        delivery
            .answer(Answer::Success {
                output: "{}".into(),
            })
            .await
            .unwrap();
        drop(Unanswered(delivery.clone()));
        delivery.settled().await;
        assert!(delivery.state().answer().is_some_and(Answer::is_success));
        // Not even reported: the guard only acts on a task with no answer.
        assert_eq!(responder.errored.load(Ordering::SeqCst), 0);
    }
}
