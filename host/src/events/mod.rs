//! Lifecycle events, with the seed's names, in three families: a worker's
//! (`worker:*`, `polling:*`, and for a callback's messages that are not run
//! `callback:*`), a task's (`task:*`) and an activity's handler versions (`handler:*`).
//!
//! Every event is logged through `tracing` (field `event` = the name, plus `activity`
//! and `task_source` (`activity` or `callback`), `worker` for worker and task events, and `task_id` and `handler_digest` for task
//! events; see `log.rs`) and broadcast to subscribers, which is how tests and embedders
//! watch a worker. Emitting never blocks: a subscriber that falls behind misses events
//! (and is told so by the channel). What an event is about is part of its type: a task
//! event cannot be emitted without its task, nor a handler event with a worker.

mod handler;
mod log;
mod task;
#[cfg(test)]
mod tests;
mod worker;

use std::sync::Arc;

use tokio::sync::broadcast;

pub use handler::{CanaryJudgement, HandlerEvent};
pub use task::{DoneError, TaskDone, TaskEvent, TaskOutcome, TaskRef};
pub use worker::WorkerEvent;

/// What happened, and to whom.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// A worker's own event, or one of its polls'.
    Worker {
        /// The worker's name.
        worker: Arc<str>,
        /// What happened.
        event: WorkerEvent,
    },
    /// A task's event.
    Task {
        /// The worker that polled the task.
        worker: Arc<str>,
        /// The task.
        task: TaskRef,
        /// What happened.
        event: TaskEvent,
    },
    /// An event of the activity's handler versions.
    Handler(HandlerEvent),
}

impl EventKind {
    /// The event's name, as in the seed (`task:success`).
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Worker { event, .. } => event.name(),
            EventKind::Task { event, .. } => event.name(),
            EventKind::Handler(event) => event.name(),
        }
    }
}

/// One event of one activity.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// What happened, and to whom.
    pub kind: EventKind,
    /// The activity ARN, or a callback's queue URL (its name).
    pub activity: Arc<str>,
    /// Where the activity's tasks come from: `activity` (`GetActivityTask`) or
    /// `callback` (an SQS queue); logged as `task_source`.
    pub task_source: &'static str,
}

impl Event {
    /// The worker the event is about (for worker and task events).
    pub fn worker(&self) -> Option<&Arc<str>> {
        match &self.kind {
            EventKind::Worker { worker, .. } | EventKind::Task { worker, .. } => Some(worker),
            EventKind::Handler(_) => None,
        }
    }

    /// The task the event is about (for task events).
    pub fn task(&self) -> Option<&TaskRef> {
        match &self.kind {
            EventKind::Task { task, .. } => Some(task),
            _ => None,
        }
    }

    /// The task event, if this is one.
    pub fn task_event(&self) -> Option<&TaskEvent> {
        match &self.kind {
            EventKind::Task { event, .. } => Some(event),
            _ => None,
        }
    }
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
        log::log(&event);
        // No subscribers is fine: the log has it.
        let _ = self.sender.send(event);
    }
}

/// Emits an activity's `handler:*` events, and makes its workers' emitters.
#[derive(Debug, Clone)]
pub struct Emitter {
    events: Events,
    activity: Arc<str>,
    task_source: &'static str,
}

impl Emitter {
    /// An emitter for `activity` (an ARN) as a whole.
    pub fn for_activity(events: Events, activity: Arc<str>) -> Self {
        Self::for_source(events, activity, "activity")
    }

    /// An emitter for the activity or callback `name`, whose tasks come from
    /// `task_source` (`activity` or `callback`).
    pub fn for_source(events: Events, name: Arc<str>, task_source: &'static str) -> Self {
        Self {
            events,
            activity: name,
            task_source,
        }
    }

    /// The same activity's emitter for `worker`.
    pub fn for_worker(&self, worker: Arc<str>) -> WorkerEmitter {
        WorkerEmitter {
            activity: self.clone(),
            worker,
        }
    }

    /// Emits a handler event.
    pub fn emit(&self, event: HandlerEvent) {
        self.send(EventKind::Handler(event));
    }

    fn send(&self, kind: EventKind) {
        self.events.emit(Event {
            kind,
            activity: self.activity.clone(),
            task_source: self.task_source,
        });
    }
}

/// Emits one worker's `worker:*` and `polling:*` events, and makes its tasks' emitters.
#[derive(Debug, Clone)]
pub struct WorkerEmitter {
    activity: Emitter,
    worker: Arc<str>,
}

impl WorkerEmitter {
    /// The same worker's emitter for `task`.
    pub fn for_task(&self, task: TaskRef) -> TaskEmitter {
        TaskEmitter {
            worker: self.clone(),
            task,
        }
    }

    /// Emits a worker event.
    pub fn emit(&self, event: WorkerEvent) {
        self.activity.send(EventKind::Worker {
            worker: self.worker.clone(),
            event,
        });
    }
}

/// Emits one task's `task:*` events.
#[derive(Debug, Clone)]
pub struct TaskEmitter {
    worker: WorkerEmitter,
    task: TaskRef,
}

impl TaskEmitter {
    /// The task this emitter speaks of.
    pub fn task(&self) -> &TaskRef {
        &self.task
    }

    /// Emits a task event.
    pub fn emit(&self, event: TaskEvent) {
        self.worker.activity.send(EventKind::Task {
            worker: self.worker.worker.clone(),
            task: self.task.clone(),
            event,
        });
    }
}
