//! `ActivityWorker`: one poller. It long-polls its activity, runs each task it gets
//! through the current handler, and repeats until stopped.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::ActivityConfig;
use crate::engine::{TaskControl, TaskLimits, TaskRequest, WasmEngine, sha256_hex};
use crate::events::{Emitter, EventKind, TaskRef};
use crate::reload::HandlerSlot;
use crate::responder::SfnResponder;
use crate::sfn::{ActivityTask, StepFunctions};

/// The worker was asked to stop.
pub const EXIT_STOPPED: i32 = 0;
/// The worker gave up after `polling.max_attempts` failed polls in a row (the seed's
/// `err_polling`); its pool replaces it after `restart_interval_ms`.
pub const EXIT_POLLING_ERROR: i32 = 10;

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
    /// The handler version new tasks use; a task keeps the version it started with.
    pub handler: HandlerSlot,
    /// The activity's emitter; each worker derives its own.
    pub emitter: Emitter,
    /// Process-wide task controls; each task gets child tokens.
    pub tasks: TaskControl,
}

/// One poller of one activity.
pub struct ActivityWorker {
    name: Arc<str>,
    shared: Arc<WorkerShared>,
    stop: WorkerStop,
    emitter: Emitter,
}

/// The two ways a worker is asked to stop.
#[derive(Debug, Clone, Default)]
pub struct WorkerStop {
    /// Stop now: an in-flight poll is abandoned (shutdown).
    pub now: CancellationToken,
    /// Stop after the current poll and its task (a pool shrinking). Abandoning a long
    /// poll can strand a task that Step Functions hands to the dropped request, so a
    /// worker that is merely not needed any more lets its poll finish.
    pub after_poll: CancellationToken,
}

impl WorkerStop {
    fn requested(&self) -> bool {
        self.now.is_cancelled() || self.after_poll.is_cancelled()
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
    /// running task is always finished first), or [`EXIT_POLLING_ERROR`] after too many
    /// failed polls.
    pub async fn run(self) -> i32 {
        self.emitter.emit(EventKind::WorkerStarting);
        self.emitter.emit(EventKind::WorkerRunning);
        let polling = self.shared.activity.polling;
        let mut failures = 0;
        let exit_code = loop {
            if self.stop.requested() {
                break EXIT_STOPPED;
            }
            self.emitter.emit(EventKind::PollingStarting);
            let polled = tokio::select! {
                biased;
                () = self.stop.now.cancelled() => break EXIT_STOPPED,
                polled = self.shared.sfn.poll(&self.shared.arn, &self.name) => polled,
            };
            match polled {
                Ok(task) => {
                    failures = 0;
                    self.emitter.emit(EventKind::PollingSuccess {
                        task: task.is_some(),
                    });
                    if let Some(task) = task {
                        self.handle(task).await;
                    }
                }
                Err(err) => {
                    failures += 1;
                    self.emitter.emit(EventKind::PollingError {
                        error: err.to_string(),
                        attempt: failures,
                    });
                    if failures >= polling.max_attempts {
                        self.emitter.emit(EventKind::WorkerError {
                            error: format!("{failures} polls in a row failed; last: {err}"),
                        });
                        break EXIT_POLLING_ERROR;
                    }
                    tokio::select! {
                        () = self.stop.now.cancelled() => break EXIT_STOPPED,
                        () = self.stop.after_poll.cancelled() => break EXIT_STOPPED,
                        () = tokio::time::sleep(polling.delay(failures)) => {}
                    }
                }
            }
        };
        self.emitter.emit(EventKind::WorkerStopping);
        self.emitter.emit(EventKind::WorkerStopped { exit_code });
        exit_code
    }

    /// Runs one task to its one answer.
    async fn handle(&self, task: ActivityTask) {
        let handler = self.shared.handler.current();
        let task_id = task_id(&task.token);
        let emitter = self.emitter.for_task(TaskRef {
            task_id: Arc::from(task_id.as_str()),
            handler_digest: handler.digest().hex().clone(),
        });
        emitter.emit(EventKind::TaskReceived);
        let ActivityTask { token, input } = task;
        let request = TaskRequest {
            input,
            activity_arn: self.shared.arn.to_string(),
            worker_name: self.name.to_string(),
            task_id,
            limits: TaskLimits {
                memory_bytes: self.shared.activity.memory_limit_bytes,
                timeout: self.shared.activity.task_timeout,
            },
            control: TaskControl {
                cancel: self.shared.tasks.cancel.child_token(),
                abort: self.shared.tasks.abort.child_token(),
            },
        };
        let responder = Arc::new(SfnResponder::new(
            self.shared.sfn.clone(),
            token,
            emitter.clone(),
        ));
        emitter.emit(EventKind::TaskStart);
        let report = handler.run(&self.shared.engine, request, responder).await;
        if !matches!(report.state, crate::toolkit::AnswerState::Sent(_)) {
            tracing::warn!(
                activity = &*self.shared.arn,
                worker = &*self.name,
                state = ?report.state,
                "the task's answer was not delivered"
            );
        }
        emitter.emit(EventKind::TaskDone);
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
