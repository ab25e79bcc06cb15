//! `ActivityWorker`: one poller. It takes a free task slot, long-polls its activity (or
//! receives from its callback's queue, as many messages as it holds free slots), hands
//! each task it gets to the task lifecycle ([`crate::lifecycle`]) beside its next polls,
//! and repeats until stopped; its backoff and give-up rule live here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::callback::TokenCheck;
use crate::config::PollingConfig;
use crate::events::{WorkerEmitter, WorkerEvent};
use crate::lifecycle::ActivityShared;
use crate::sfn::SfnError;
use crate::sqs::ReceivedMessage;

/// What one poll brought.
enum Polled {
    /// An activity's poll: a task, or none.
    Task(Option<crate::sfn::ActivityTask>),
    /// A callback's receive: its messages (as many as the worker held slots, at most).
    Messages(Vec<ReceivedMessage>),
}

impl Polled {
    fn is_empty(&self) -> bool {
        match self {
            Polled::Task(task) => task.is_none(),
            Polled::Messages(messages) => messages.is_empty(),
        }
    }
}

/// Why a worker's run ended; its code is `worker:stopped`'s `exit_code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerExit {
    /// It was asked to stop (code 0).
    Stopped,
    /// It gave up after `polling.max_attempts` failed polls in a row (code 10, the seed's
    /// `err_polling`); its pool replaces it after `restart_interval_ms`.
    PollingError,
    /// It panicked (code -1; its tasks were answered by their guards); its pool replaces
    /// it as after a polling error.
    Panicked,
}

impl WorkerExit {
    /// The exit code `worker:stopped` reports: 0, 10 or -1.
    pub fn code(self) -> i32 {
        match self {
            WorkerExit::Stopped => 0,
            WorkerExit::PollingError => 10,
            WorkerExit::Panicked => -1,
        }
    }
}

/// The longest wait between two polls of an activity that cannot be polled until its
/// setup changes, so that it recovers within a minute of being mended.
const MAX_BLOCKED_DELAY: Duration = Duration::from_secs(60);

/// The wait after the `streak`-th throttled poll in a row: 0.2 s doubling to 10 s, with
/// jitter (50–100 %) so that the workers of a fleet do not come back together.
fn throttle_delay(streak: u32) -> Duration {
    let base = 0.2 * 2f64.powi(i32::try_from(streak.saturating_sub(1).min(16)).unwrap_or(16));
    Duration::from_secs_f64(base.min(10.0) * (0.5 + fastrand::f64() * 0.5))
}

/// The worker's backoff: three streaks of failed polls, each with its own rule, and which
/// one the last poll counted towards.
#[derive(Debug, Default)]
struct Backoff {
    /// Failures in a row that count towards `polling.max_attempts`.
    failures: u32,
    /// Throttled polls in a row: the account's quota, not a fault, waited out however
    /// long it takes.
    throttled: u32,
    /// Polls in a row that nothing but a change of setup can mend (a missing activity,
    /// an unusable KMS key): a visible error state, polled again a minute apart at most.
    blocked: u32,
}

/// What to do after a failed poll.
enum AfterFailure {
    /// Wait this long, then poll again; `event` says why.
    Wait(Duration, WorkerEvent),
    /// Give up: too many failures in a row.
    GiveUp(WorkerEvent, WorkerEvent),
}

impl Backoff {
    /// A poll succeeded: every streak ends.
    fn reset(&mut self) {
        *self = Self::default();
    }

    /// Counts a failed poll towards its streak: how long to wait, or to give up.
    fn failed(&mut self, err: &SfnError, polling: &PollingConfig) -> AfterFailure {
        let error = err.to_string();
        if matches!(err, SfnError::Throttled(_)) {
            self.throttled += 1;
            let event = WorkerEvent::PollingError {
                error,
                attempt: self.failures,
                throttled: true,
                blocked: false,
            };
            return AfterFailure::Wait(throttle_delay(self.throttled), event);
        }
        self.throttled = 0;
        if err.blocks_polling() {
            self.blocked += 1;
            let event = WorkerEvent::PollingError {
                error,
                attempt: self.blocked,
                throttled: false,
                blocked: true,
            };
            let delay = polling.delay(self.blocked).min(MAX_BLOCKED_DELAY);
            return AfterFailure::Wait(delay, event);
        }
        self.blocked = 0;
        self.failures += 1;
        let event = WorkerEvent::PollingError {
            error: error.clone(),
            attempt: self.failures,
            throttled: false,
            blocked: false,
        };
        if self.failures >= polling.max_attempts {
            let gave_up = WorkerEvent::Error {
                error: format!("{} polls in a row failed; last: {error}", self.failures),
            };
            return AfterFailure::GiveUp(event, gave_up);
        }
        AfterFailure::Wait(polling.delay(self.failures), event)
    }
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

    /// Resolves once the worker is asked to stop, or its tasks are aborted: the one stop
    /// every wait of the run loop races.
    async fn stop_requested(&self) {
        tokio::select! {
            () = self.stop.shutdown.cancelled() => {}
            () = self.stop.retire.cancelled() => {}
            () = self.shared.tasks.abort.cancelled() => {}
        }
    }

    /// Runs `work` unless a stop comes first (then `None`). A stop wins a tie: nothing
    /// new starts once one is asked for.
    async fn unless_stopped<T>(&self, work: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::select! {
            biased;
            () = self.stop_requested() => None,
            done = work => Some(done),
        }
    }

    /// The worker's name (`PREFIX:RANDOM`), sent with every poll.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The run loop, until asked to stop (a running task is always finished first, and
    /// its answer delivered) or too many failed polls.
    pub async fn run(self) -> WorkerExit {
        self.emitter.emit(WorkerEvent::Starting);
        // Counted as running until `worker:stopped`, or its panic.
        let running_worker = self.shared.gauges.worker();
        self.emitter.emit(WorkerEvent::Running);
        let polling = self.shared.activity.polling;
        let mut backoff = Backoff::default();
        let mut running = JoinSet::new();
        let exit = loop {
            if self.stop.requested() {
                break WorkerExit::Stopped;
            }
            // A free slot first: a task polled now can start at once.
            let Some(Ok(slot)) = self
                .unless_stopped(self.shared.slots.clone().acquire_owned())
                .await
            else {
                break WorkerExit::Stopped;
            };
            // Then a start token, when starts are limited: a task polled now may start.
            if let Some(starts) = &self.shared.starts
                && self.unless_stopped(starts.until_ready()).await.is_none()
            {
                break WorkerExit::Stopped;
            }
            // A callback's receive takes as many messages as this worker holds slots:
            // the one it waited for, and any others free now.
            let mut slots = vec![slot];
            if let Some(queue) = &self.shared.callback {
                slots.extend(self.more_slots(queue.batch(usize::MAX) - 1));
            }
            // Reap finished tasks (their panics were answered by their guards).
            while running.try_join_next().is_some() {}
            // Counted as open until it returns, or is dropped.
            let open_poll = self.shared.gauges.poll();
            self.emitter.emit(WorkerEvent::PollingStarting);
            // Only the end of a shutdown's grace drops a poll in flight (`WorkerStop`).
            let polled = tokio::select! {
                biased;
                () = self.shared.tasks.abort.cancelled() => break WorkerExit::Stopped,
                polled = self.poll(slots.len()) => polled,
            };
            drop(open_poll);
            match polled {
                Ok(polled) => {
                    backoff.reset();
                    self.hand_over(&mut running, polled, slots).await;
                }
                Err(err) => {
                    // The slots are free while this worker waits.
                    drop(slots);
                    if let Some(exit) = self.wait_after(&err, &mut backoff, &polling).await {
                        break exit;
                    }
                }
            }
        };
        // Every task this worker started is finished, and its answer settled, before it
        // stops (a panicked one was answered by its guard).
        while running.join_next().await.is_some() {}
        self.emitter.emit(WorkerEvent::Stopping);
        drop(running_worker);
        self.emitter.emit(WorkerEvent::Stopped {
            exit_code: exit.code(),
        });
        exit
    }

    /// Hands what a poll brought to the lifecycle, one task per slot; the slots left
    /// over are freed.
    async fn hand_over(
        &self,
        running: &mut JoinSet<()>,
        polled: Polled,
        mut slots: Vec<tokio::sync::OwnedSemaphorePermit>,
    ) {
        self.emitter.emit(WorkerEvent::PollingSuccess {
            task: !polled.is_empty(),
        });
        match polled {
            Polled::Task(task) => {
                if let (Some(task), Some(slot)) = (task, slots.pop()) {
                    self.start(running, task, slot).await;
                }
            }
            Polled::Messages(messages) => {
                // One message per slot (the receive asked for no more; one that came
                // beyond them anyway is made visible again, not held).
                let mut slots = slots.into_iter();
                for message in messages {
                    match (slots.next(), &self.shared.callback) {
                        (Some(slot), _) => self.start_message(running, message, slot).await,
                        (None, Some(queue)) => {
                            let queue = queue.clone();
                            running.spawn(async move { queue.release(&message).await });
                        }
                        (None, None) => {}
                    }
                }
            }
        }
    }

    /// Counts a failed poll and waits as its backoff says; the worker's exit when it
    /// gives up or is stopped meanwhile.
    async fn wait_after(
        &self,
        err: &SfnError,
        backoff: &mut Backoff,
        polling: &PollingConfig,
    ) -> Option<WorkerExit> {
        match backoff.failed(err, polling) {
            AfterFailure::Wait(delay, event) => {
                self.emitter.emit(event);
                self.unless_stopped(tokio::time::sleep(delay))
                    .await
                    .is_none()
                    .then_some(WorkerExit::Stopped)
            }
            AfterFailure::GiveUp(event, gave_up) => {
                self.emitter.emit(event);
                self.emitter.emit(gave_up);
                Some(WorkerExit::PollingError)
            }
        }
    }

    /// Up to `wanted` more task slots, those free now (and, when starts are limited,
    /// with a start token each): a receive never takes a message that cannot start.
    fn more_slots(&self, wanted: usize) -> Vec<tokio::sync::OwnedSemaphorePermit> {
        let mut slots = Vec::new();
        while slots.len() < wanted {
            let Ok(slot) = self.shared.slots.clone().try_acquire_owned() else {
                break;
            };
            if let Some(starts) = &self.shared.starts
                && starts.check().is_err()
            {
                break;
            }
            slots.push(slot);
        }
        slots
    }

    /// One poll of the activity, or one receive of the callback's queue for up to
    /// `slots` messages.
    async fn poll(&self, slots: usize) -> Result<Polled, SfnError> {
        match &self.shared.callback {
            None => self
                .shared
                .sfn
                .poll(&self.shared.arn, &self.name)
                .await
                .map(Polled::Task),
            Some(queue) => queue.receive(slots).await.map(Polled::Messages),
        }
    }

    /// Hands a callback's message to the lifecycle in its slot, beside the next receives:
    /// a message that is not a task is reported and left for the queue's redrive policy;
    /// one received once the host is shutting down is made visible again at once, for
    /// another host; a task Step Functions reports closed is deleted, not run.
    async fn start_message(
        &self,
        running: &mut JoinSet<()>,
        message: ReceivedMessage,
        slot: tokio::sync::OwnedSemaphorePermit,
    ) {
        let Some(queue) = self.shared.callback.clone() else {
            return;
        };
        let received = Instant::now();
        let task = match queue.task(&message) {
            Ok(task) => task,
            Err(reason) => {
                self.emitter.emit(WorkerEvent::MessageRejected {
                    message_id: message.id,
                    reason,
                    receive_count: message.receive_count,
                });
                return;
            }
        };
        let worker = self.clone();
        if self.stop.shutdown.is_cancelled() {
            running.spawn(async move { queue.release(&message).await });
            return;
        }
        let slot = self.shared.gauges.task_slot(slot);
        // Boxed, as an activity's task is (see `start`).
        running.spawn(Box::pin(async move {
            // Hidden from other workers from now until it is settled.
            let lease = queue.lease(&message);
            match queue.check(&task.token).await {
                TokenCheck::Run => {}
                TokenCheck::Closed(reason) => {
                    lease.delete().await;
                    worker.emitter.emit(WorkerEvent::MessageClosed {
                        message_id: message.id,
                        reason,
                    });
                    return;
                }
                TokenCheck::Malformed(reason) => {
                    worker.emitter.emit(WorkerEvent::MessageRejected {
                        message_id: message.id,
                        reason,
                        receive_count: message.receive_count,
                    });
                    return;
                }
            }
            let state = worker
                .shared
                .run(&worker.emitter, &worker.name, task, received)
                .await;
            // Bounded as the answers are: at the end of a shutdown a delete still
            // trying is left (the message reappears; its task is found closed).
            tokio::select! {
                () = lease.settle(&state) => {}
                () = worker.shared.delivery.give_up.cancelled() => {}
            }
            drop(slot);
        }));
    }

    /// Hands a polled task to the lifecycle in its slot, beside the next polls; a task
    /// that arrives once the host is shutting down is declined at once.
    async fn start(
        &self,
        running: &mut JoinSet<()>,
        task: crate::sfn::ActivityTask,
        slot: tokio::sync::OwnedSemaphorePermit,
    ) {
        let received = Instant::now();
        // The slot is the task's now: counted in `task_slots_used` until given back.
        let slot = self.shared.gauges.task_slot(slot);
        if self.stop.shutdown.is_cancelled() {
            self.shared.decline(&self.emitter, task).await;
            return;
        }
        let worker = self.clone();
        // Boxed: a task's whole future (guest, delivery, the SDK's calls) is tens of KB,
        // which tokio would otherwise copy into the task's cell and again at each change
        // of its stage (`scripts/bench-callgrind.sh`: ~100 KB of memcpy a task).
        running.spawn(Box::pin(async move {
            let shared = &worker.shared;
            shared
                .run(&worker.emitter, &worker.name, task, received)
                .await;
            drop(slot);
        }));
    }
}
