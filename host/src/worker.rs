//! `ActivityWorker`: one poller. It takes a free task slot, long-polls its activity,
//! hands each task it gets to the task lifecycle ([`crate::lifecycle`]) beside its next
//! polls, and repeats until stopped; its backoff and give-up rule live here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::events::{WorkerEmitter, WorkerEvent};
use crate::lifecycle::ActivityShared;
use crate::sfn::SfnError;

/// The worker was asked to stop.
pub const EXIT_STOPPED: i32 = 0;
/// The worker gave up after `polling.max_attempts` failed polls in a row (the seed's
/// `err_polling`); its pool replaces it after `restart_interval_ms`.
pub const EXIT_POLLING_ERROR: i32 = 10;

/// The longest wait between two polls of an activity that cannot be polled until its
/// setup changes, so that it recovers within a minute of being mended.
const MAX_BLOCKED_DELAY: Duration = Duration::from_secs(60);

/// The wait after the `streak`-th throttled poll in a row: 0.2 s doubling to 10 s, with
/// jitter (50–100 %) so that the workers of a fleet do not come back together.
fn throttle_delay(streak: u32) -> Duration {
    let base = 0.2 * 2f64.powi(i32::try_from(streak.saturating_sub(1).min(16)).unwrap_or(16));
    Duration::from_secs_f64(base.min(10.0) * (0.5 + fastrand::f64() * 0.5))
}

/// One poller of one activity. Its tasks run beside its polls, each in a slot of the
/// activity's; cheap to clone (every clone is the same worker).
#[derive(Clone)]
pub struct ActivityWorker {
    name: Arc<str>,
    shared: Arc<ActivityShared>,
    stop: WorkerStop,
    emitter: WorkerEmitter,
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
    pub fn new(name: Arc<str>, shared: Arc<ActivityShared>, stop: WorkerStop) -> Self {
        let emitter = shared.emitter.for_worker(name.clone());
        Self {
            name,
            shared,
            stop,
            emitter,
        }
    }

    /// Waits `delay` before the next poll; false when asked to stop meanwhile.
    async fn wait(&self, delay: Duration) -> bool {
        tokio::select! {
            () = self.stop.shutdown.cancelled() => false,
            () = self.stop.retire.cancelled() => false,
            () = self.shared.tasks.abort.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
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
        self.emitter.emit(WorkerEvent::Starting);
        self.emitter.emit(WorkerEvent::Running);
        let polling = self.shared.activity.polling;
        let mut failures = 0;
        let mut throttled = 0;
        let mut blocked = 0;
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
            // Then a start token, when starts are limited: a task polled now may start.
            if let Some(starts) = &self.shared.starts {
                tokio::select! {
                    biased;
                    () = self.stop.shutdown.cancelled() => break EXIT_STOPPED,
                    () = self.stop.retire.cancelled() => break EXIT_STOPPED,
                    () = self.shared.tasks.abort.cancelled() => break EXIT_STOPPED,
                    () = starts.until_ready() => {}
                }
            }
            // Reap finished tasks (their panics were answered by their guards).
            while running.try_join_next().is_some() {}
            self.emitter.emit(WorkerEvent::PollingStarting);
            let polled = tokio::select! {
                biased;
                () = self.shared.tasks.abort.cancelled() => break EXIT_STOPPED,
                polled = self.shared.sfn.poll(&self.shared.arn, &self.name) => polled,
            };
            match polled {
                Ok(task) => {
                    failures = 0;
                    throttled = 0;
                    blocked = 0;
                    self.emitter.emit(WorkerEvent::PollingSuccess {
                        task: task.is_some(),
                    });
                    if let Some(task) = task {
                        let received = Instant::now();
                        if self.stop.shutdown.is_cancelled() {
                            self.shared.decline(&self.emitter, task).await;
                        } else {
                            let worker = self.clone();
                            running.spawn(async move {
                                let shared = &worker.shared;
                                shared
                                    .run(&worker.emitter, &worker.name, task, received)
                                    .await;
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
                    self.emitter.emit(WorkerEvent::PollingError {
                        error: err.to_string(),
                        attempt: failures,
                        throttled: true,
                        blocked: false,
                    });
                    if !self.wait(throttle_delay(throttled)).await {
                        break EXIT_STOPPED;
                    }
                }
                Err(err) if err.blocks_polling() => {
                    // The activity is missing or its KMS key unusable: nothing a restart
                    // mends. Wait in a visible error state, not counted towards
                    // `max_attempts`, and poll again (a minute apart at most) until the
                    // setup is mended.
                    drop(slot);
                    blocked += 1;
                    throttled = 0;
                    self.emitter.emit(WorkerEvent::PollingError {
                        error: err.to_string(),
                        attempt: blocked,
                        throttled: false,
                        blocked: true,
                    });
                    if !self
                        .wait(polling.delay(blocked).min(MAX_BLOCKED_DELAY))
                        .await
                    {
                        break EXIT_STOPPED;
                    }
                }
                Err(err) => {
                    drop(slot);
                    failures += 1;
                    throttled = 0;
                    blocked = 0;
                    self.emitter.emit(WorkerEvent::PollingError {
                        error: err.to_string(),
                        attempt: failures,
                        throttled: false,
                        blocked: false,
                    });
                    if failures >= polling.max_attempts {
                        self.emitter.emit(WorkerEvent::Error {
                            error: format!("{failures} polls in a row failed; last: {err}"),
                        });
                        break EXIT_POLLING_ERROR;
                    }
                    if !self.wait(polling.delay(failures)).await {
                        break EXIT_STOPPED;
                    }
                }
            }
        };
        // Every task this worker started is finished, and its answer settled, before it
        // stops (a panicked one was answered by its guard).
        while running.join_next().await.is_some() {}
        self.emitter.emit(WorkerEvent::Stopping);
        self.emitter.emit(WorkerEvent::Stopped { exit_code });
        exit_code
    }
}
