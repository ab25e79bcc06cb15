//! Lifecycle events, with the seed's names (`worker:*`, `polling:*`, `task:*`).
//!
//! Every event is logged through `tracing` (field `event` = the name, plus `activity`,
//! `worker`, and for task events `task_id` and `handler_digest`) and broadcast to
//! subscribers, which is how tests and embedders watch a worker. Emitting never blocks:
//! a subscriber that falls behind misses events (and is told so by the channel).

use std::sync::Arc;

use tokio::sync::broadcast;

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// `worker:starting`
    WorkerStarting,
    /// `worker:running`
    WorkerRunning,
    /// `worker:stopping`
    WorkerStopping,
    /// `worker:stopped`, with the exit code: 0 when asked to stop, 10 after too many failed
    /// polls (the pool restarts it).
    WorkerStopped {
        /// 0 or [`crate::worker::EXIT_POLLING_ERROR`].
        exit_code: i32,
    },
    /// `worker:error`: the worker gives up (too many failed polls).
    WorkerError {
        /// Why.
        error: String,
    },
    /// `polling:starting`
    PollingStarting,
    /// `polling:success`: the poll returned, with or without a task.
    PollingSuccess {
        /// Whether it brought a task.
        task: bool,
    },
    /// `polling:error`
    PollingError {
        /// Why.
        error: String,
        /// Failed polls in a row, this one included. A throttled poll is not a failure
        /// and does not count.
        attempt: u32,
        /// Step Functions throttled the poll (the account's quota): the worker waits and
        /// polls again, however often it happens.
        throttled: bool,
    },
    /// `task:received`
    TaskReceived,
    /// `task:start`: the handler is about to run.
    TaskStart,
    /// `task:heartbeat`: a heartbeat was delivered.
    TaskHeartbeat {
        /// `guest` (the handler called `heartbeat()`) or `auto` (`heartbeat_seconds`).
        source: &'static str,
    },
    /// `task:success`: a success was delivered.
    TaskSuccess {
        /// Attempts it took.
        attempts: u32,
        /// A timed-out attempt was followed by a refusal as closed: it most likely went
        /// through on the timed-out attempt.
        probably_delivered: bool,
    },
    /// `task:failure`: a failure was delivered (the guest's or the host's).
    TaskFailure {
        /// The error name.
        error: String,
        /// Attempts it took.
        attempts: u32,
        /// As for `task:success`.
        probably_delivered: bool,
    },
    /// `task:retrying`: an answer attempt failed transiently; another follows.
    TaskRetrying {
        /// The attempt that failed (1 for the first).
        attempt: u32,
        /// Step Functions throttled it (the account's quota).
        throttled: bool,
        /// Why it failed.
        error: String,
        /// The wait before the next attempt, in milliseconds.
        delay_ms: u64,
    },
    /// `task:undelivered`: the answer will not reach Step Functions (refused, the task
    /// closed, out of retries).
    TaskUndelivered {
        /// Why.
        reason: String,
    },
    /// `task:cancelled`: Step Functions closed the task while the guest ran (a
    /// heartbeat was refused); the guest is cancelled and no answer is sent.
    TaskCancelled {
        /// What Step Functions said.
        reason: String,
    },
    /// `task:errored`: the handler went wrong (trap, no answer, a second answer, ...).
    TaskErrored {
        /// The error name (`SfnWasmHost.Trap`, `already-responded`); the cause is logged
        /// at debug only, since it may carry task data.
        error: String,
    },
    /// `task:done`: the task is finished with; nothing more happens to it. Carries what
    /// the task came to and what it cost, for logs, metrics and traces.
    TaskDone(TaskDone),
    /// `handler:loaded`: the activity's handler was loaded at startup.
    HandlerLoaded {
        /// The module's digest.
        digest: Arc<str>,
        /// `hit`, `miss`, `rebuilt` or `disabled`: whether it came from the cache.
        cache: &'static str,
        /// How long loading took, in milliseconds.
        load_ms: u64,
    },
    /// `handler:swapped`: new tasks now run a new version; running ones keep theirs.
    HandlerSwapped {
        /// The version replaced.
        old_digest: Arc<str>,
        /// The version now serving.
        new_digest: Arc<str>,
        /// How long making the new version ready took (compile or cache), in ms.
        compile_ms: u64,
        /// `hit`, `miss`, `rebuilt` or `disabled`.
        cache: &'static str,
    },
    /// `handler:rejected`: a new version was not used (unreadable, unreachable, too
    /// large, another digest than the pin, not a valid handler); the current version
    /// keeps serving.
    HandlerRejected {
        /// The rejected module's digest (empty when it could not be read).
        digest: Arc<str>,
        /// Why.
        reason: String,
    },
    /// `handler:canary`: a new version takes `percent` of new tasks; the old one, stable,
    /// the rest.
    HandlerCanary {
        /// The stable version.
        old_digest: Arc<str>,
        /// The canary.
        new_digest: Arc<str>,
        /// The canary's share of new tasks.
        percent: u32,
    },
    /// `handler:promoted`: the canary answered `promote_after_tasks` tasks without a
    /// regression and is the stable version now.
    HandlerPromoted {
        /// The version it replaces.
        old_digest: Arc<str>,
        /// The version now stable.
        new_digest: Arc<str>,
        /// Canary tasks answered.
        canary_tasks: u64,
        /// The canary's host-failure rate.
        canary_failure_rate: f64,
        /// Stable tasks answered during the canary.
        stable_tasks: u64,
        /// Stable's host-failure rate during the canary.
        stable_failure_rate: f64,
    },
    /// `handler:rolledback`: the canary's host-failure rate exceeded stable's by more than
    /// `max_failure_rate_increase`; every new task runs the stable version again.
    HandlerRolledBack {
        /// The stable version, serving again.
        old_digest: Arc<str>,
        /// The canary rolled back.
        new_digest: Arc<str>,
        /// Canary tasks answered.
        canary_tasks: u64,
        /// The canary's host-failure rate.
        canary_failure_rate: f64,
        /// Stable tasks answered during the canary.
        stable_tasks: u64,
        /// Stable's host-failure rate during the canary.
        stable_failure_rate: f64,
        /// The increase allowed.
        max_failure_rate_increase: f64,
    },
}

impl EventKind {
    /// The event's name, as in the seed (`task:success`).
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::WorkerStarting => "worker:starting",
            EventKind::WorkerRunning => "worker:running",
            EventKind::WorkerStopping => "worker:stopping",
            EventKind::WorkerStopped { .. } => "worker:stopped",
            EventKind::WorkerError { .. } => "worker:error",
            EventKind::PollingStarting => "polling:starting",
            EventKind::PollingSuccess { .. } => "polling:success",
            EventKind::PollingError { .. } => "polling:error",
            EventKind::TaskReceived => "task:received",
            EventKind::TaskStart => "task:start",
            EventKind::TaskHeartbeat { .. } => "task:heartbeat",
            EventKind::TaskSuccess { .. } => "task:success",
            EventKind::TaskFailure { .. } => "task:failure",
            EventKind::TaskRetrying { .. } => "task:retrying",
            EventKind::TaskUndelivered { .. } => "task:undelivered",
            EventKind::TaskCancelled { .. } => "task:cancelled",
            EventKind::TaskErrored { .. } => "task:errored",
            EventKind::TaskDone(_) => "task:done",
            EventKind::HandlerLoaded { .. } => "handler:loaded",
            EventKind::HandlerSwapped { .. } => "handler:swapped",
            EventKind::HandlerRejected { .. } => "handler:rejected",
            EventKind::HandlerCanary { .. } => "handler:canary",
            EventKind::HandlerPromoted { .. } => "handler:promoted",
            EventKind::HandlerRolledBack { .. } => "handler:rolledback",
        }
    }
}

/// What a task came to, by who answered it: a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The handler answered success.
    Success,
    /// The handler answered failure.
    Failure,
    /// The host answered a `SfnWasmHost.*` failure (trap, timeout, no answer, shutdown...).
    HostFailure,
    /// Step Functions closed the task (timed out, execution stopped) before any answer.
    Closed,
}

impl Outcome {
    /// `success`, `failure`, `host_failure` or `closed`.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::HostFailure => "host_failure",
            Outcome::Closed => "closed",
        }
    }
}

/// The fields of `task:done`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDone {
    /// What the task came to.
    pub outcome: Outcome,
    /// For [`Outcome::HostFailure`], the `SfnWasmHost.*` name; `guest` when the handler
    /// answered (success or failure); `closed` for [`Outcome::Closed`].
    pub error: &'static str,
    /// From the task's arrival to its end (answer settled).
    pub elapsed: std::time::Duration,
    /// The guest's CPU time (see [`TaskReport::cpu`](crate::engine::TaskReport::cpu)).
    pub cpu: std::time::Duration,
    /// The most linear memory the guest held at once.
    pub memory_peak_bytes: u64,
}

impl TaskDone {
    /// A task no guest ran.
    pub fn not_run(outcome: Outcome, error: &'static str, elapsed: std::time::Duration) -> Self {
        Self {
            outcome,
            error,
            elapsed,
            cpu: std::time::Duration::ZERO,
            memory_peak_bytes: 0,
        }
    }
}

/// Which task an event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRef {
    /// The task's short id (from its token; never the token).
    pub task_id: Arc<str>,
    /// The digest of the handler version that runs it.
    pub handler_digest: Arc<str>,
}

/// One event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The activity ARN.
    pub activity: Arc<str>,
    /// The worker name; `None` for `handler:*` events, which concern the whole activity.
    pub worker: Option<Arc<str>>,
    /// The task, for `task:*` events.
    pub task: Option<TaskRef>,
}

/// Sees every event, synchronously, as it is emitted: for what must not miss one
/// (metrics, the status page), unlike a broadcast subscriber that falls behind.
/// `observe` runs on the emitting task: it must be quick and must not block.
pub trait Observer: Send + Sync {
    /// Takes note of `event`.
    fn observe(&self, event: &Event);
}

/// The broadcast channel events go through, and the observers called with each.
/// Cheap to clone.
#[derive(Clone)]
pub struct Events {
    sender: broadcast::Sender<Event>,
    observers: Arc<[Arc<dyn Observer>]>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("observers", &self.observers.len())
            .finish_non_exhaustive()
    }
}

impl Default for Events {
    fn default() -> Self {
        Self::new(4096)
    }
}

impl Events {
    /// A channel keeping up to `capacity` events for slow subscribers.
    pub fn new(capacity: usize) -> Self {
        Self::with_observers(capacity, Vec::new())
    }

    /// A channel as [`new`](Self::new), whose events also go to `observers`.
    pub fn with_observers(capacity: usize, observers: Vec<Arc<dyn Observer>>) -> Self {
        Self {
            sender: broadcast::channel(capacity).0,
            observers: observers.into(),
        }
    }

    /// Receives every event emitted from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }

    fn emit(&self, event: Event) {
        for observer in self.observers.iter() {
            observer.observe(&event);
        }
        log(&event);
        // No subscribers is fine: the log has it.
        let _ = self.sender.send(event);
    }
}

/// Emits events for an activity, one of its workers, or one task.
#[derive(Debug, Clone)]
pub struct Emitter {
    events: Events,
    activity: Arc<str>,
    worker: Option<Arc<str>>,
    task: Option<TaskRef>,
}

impl Emitter {
    /// An emitter for `activity` as a whole (`handler:*` events).
    pub fn for_activity(events: Events, activity: Arc<str>) -> Self {
        Self {
            events,
            activity,
            worker: None,
            task: None,
        }
    }

    /// The same activity's emitter for `worker`.
    pub fn for_worker(&self, worker: Arc<str>) -> Self {
        Self {
            worker: Some(worker),
            ..self.clone()
        }
    }

    /// The same worker's emitter for `task`.
    pub fn for_task(&self, task: TaskRef) -> Self {
        Self {
            task: Some(task),
            ..self.clone()
        }
    }

    /// Emits `kind`.
    pub fn emit(&self, kind: EventKind) {
        self.events.emit(Event {
            kind,
            activity: self.activity.clone(),
            worker: self.worker.clone(),
            task: self.task.clone(),
        });
    }
}

/// An event's log message: its name, and what went wrong for the error events.
struct Message<'a>(&'a EventKind);

impl std::fmt::Display for Message<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self.0.name();
        match self.0 {
            EventKind::WorkerStopped { exit_code } => write!(f, "{name}: exit code {exit_code}"),
            EventKind::WorkerError { error }
            | EventKind::TaskFailure { error, .. }
            | EventKind::TaskErrored { error }
            | EventKind::TaskRetrying { error, .. }
            | EventKind::TaskUndelivered { reason: error }
            | EventKind::TaskCancelled { reason: error } => write!(f, "{name}: {error}"),
            EventKind::PollingError {
                error,
                throttled: true,
                ..
            } => write!(f, "{name}: {error}"),
            EventKind::PollingError { error, attempt, .. } => {
                write!(f, "{name}: attempt {attempt}: {error}")
            }
            EventKind::HandlerRejected { reason, .. } => write!(f, "{name}: {reason}"),
            EventKind::HandlerRolledBack {
                canary_failure_rate,
                stable_failure_rate,
                max_failure_rate_increase,
                ..
            } => write!(
                f,
                "{name}: the canary's host-failure rate {canary_failure_rate:.3} exceeds stable's {stable_failure_rate:.3} by more than {max_failure_rate_increase}"
            ),
            _ => f.write_str(name),
        }
    }
}

/// Logs an event. Each task costs three INFO lines (`task:start`, its answer,
/// `task:done`); no task output, failure cause or token is logged at INFO or above; the poll events and `task:received`, which add nothing a reader of a
/// task needs, are DEBUG: logging is a large share of the host's CPU per task.
fn log(event: &Event) {
    let name = event.kind.name();
    let activity = &*event.activity;
    let worker = event.worker.as_deref().unwrap_or_default();
    // Formatted only if a subscriber takes the event: polls happen all the time.
    let message = Message(&event.kind);
    // tracing needs the level at compile time: one arm per level, same fields.
    macro_rules! task_event {
        ($level:ident, $task:expr $(, $field:ident = $value:expr)*) => {
            tracing::$level!(
                event = name,
                activity,
                worker,
                task_id = &*$task.task_id,
                handler_digest = &*$task.handler_digest,
                $($field = $value,)*
                "{message}"
            )
        };
    }
    match (&event.task, &event.kind) {
        (Some(task), EventKind::TaskRetrying { throttled, .. }) => {
            task_event!(warn, task, throttled = *throttled)
        }
        (Some(task), EventKind::TaskErrored { .. }) => task_event!(warn, task),
        (Some(task), EventKind::TaskUndelivered { .. }) => task_event!(error, task),
        (Some(task), EventKind::TaskReceived) => task_event!(debug, task),
        (Some(task), EventKind::TaskHeartbeat { source }) => {
            task_event!(info, task, source = *source)
        }
        (
            Some(task),
            EventKind::TaskSuccess {
                attempts,
                probably_delivered,
            }
            | EventKind::TaskFailure {
                attempts,
                probably_delivered,
                ..
            },
        ) => task_event!(
            info,
            task,
            attempts = *attempts,
            probably_delivered = *probably_delivered
        ),
        (Some(task), EventKind::TaskCancelled { reason }) => {
            task_event!(info, task, reason = reason.as_str())
        }
        (Some(task), EventKind::TaskDone(done)) => task_event!(
            info,
            task,
            outcome = done.outcome.name(),
            error = done.error,
            elapsed_ms = u64::try_from(done.elapsed.as_millis()).unwrap_or(u64::MAX),
            cpu_ms = (done.cpu.as_secs_f64() * 1e6).round() / 1e3,
            memory_peak_bytes = done.memory_peak_bytes
        ),
        (Some(task), _) => task_event!(info, task),
        (
            None,
            EventKind::HandlerLoaded {
                digest,
                cache,
                load_ms,
            },
        ) => tracing::info!(
            event = name,
            activity,
            handler_digest = &**digest,
            cache,
            load_ms,
            "{message}"
        ),
        (
            None,
            EventKind::HandlerSwapped {
                old_digest,
                new_digest,
                compile_ms,
                cache,
            },
        ) => tracing::info!(
            event = name,
            activity,
            old_digest = &**old_digest,
            new_digest = &**new_digest,
            compile_ms,
            cache,
            "{message}"
        ),
        (
            None,
            EventKind::HandlerCanary {
                old_digest,
                new_digest,
                percent,
            },
        ) => tracing::info!(
            event = name,
            activity,
            old_digest = &**old_digest,
            new_digest = &**new_digest,
            percent,
            "{message}"
        ),
        (
            None,
            EventKind::HandlerPromoted {
                old_digest,
                new_digest,
                canary_tasks,
                canary_failure_rate,
                stable_tasks,
                stable_failure_rate,
            },
        ) => tracing::info!(
            event = name,
            activity,
            old_digest = &**old_digest,
            new_digest = &**new_digest,
            canary_tasks,
            canary_failure_rate,
            stable_tasks,
            stable_failure_rate,
            "{message}"
        ),
        (
            None,
            EventKind::HandlerRolledBack {
                old_digest,
                new_digest,
                canary_tasks,
                canary_failure_rate,
                stable_tasks,
                stable_failure_rate,
                max_failure_rate_increase,
            },
        ) => tracing::warn!(
            event = name,
            activity,
            old_digest = &**old_digest,
            new_digest = &**new_digest,
            canary_tasks,
            canary_failure_rate,
            stable_tasks,
            stable_failure_rate,
            max_failure_rate_increase,
            "{message}"
        ),
        (None, EventKind::HandlerRejected { digest, reason }) => tracing::warn!(
            event = name,
            activity,
            digest = &**digest,
            reason = reason.as_str(),
            "{message}"
        ),
        (None, EventKind::PollingError { throttled, .. }) => {
            tracing::warn!(event = name, activity, worker, throttled, "{message}")
        }
        (None, EventKind::WorkerError { .. }) => {
            tracing::warn!(event = name, activity, worker, "{message}")
        }
        (None, EventKind::PollingStarting | EventKind::PollingSuccess { .. }) => {
            tracing::debug!(event = name, activity, worker, "{message}")
        }
        (None, _) => tracing::info!(event = name, activity, worker, "{message}"),
    }
}
