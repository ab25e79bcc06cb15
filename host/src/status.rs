//! What `/status` and `/readyz` report: per activity its handler version, its workers,
//! its tasks in flight and the scaling signals (task slots and slots used, polls in
//! flight, the wait from poll to start), kept up to date as an [`Observer`] of every
//! event.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::events::{Event, EventKind, HandlerEvent, Observer, TaskEvent, TaskRef, WorkerEvent};
use crate::rollout::VersionChooser;

/// The live state of every activity, for the admin server.
pub struct StatusBoard {
    started: Instant,
    activities: Vec<ActivityBoard>,
}

struct ActivityBoard {
    arn: Arc<str>,
    /// `max_concurrent_tasks`.
    task_slots: u32,
    /// Long polls open now: changed on every poll, so kept apart from the lock.
    polls_in_flight: AtomicU32,
    /// Tasks started, and the sum of their waits from poll to start in microseconds.
    started: AtomicU64,
    waited_us: AtomicU64,
    /// The pool's desired worker count; `None` until the pool exists.
    desired: Mutex<Option<watch::Receiver<u32>>>,
    /// The activity's versions (for a canary); `None` until the pool exists.
    versions: Mutex<Option<Arc<VersionChooser>>>,
    /// Some worker of the activity has started a poll.
    polled: AtomicBool,
    /// `state.blocked` is set: read on every poll, so that clearing it costs no lock
    /// while it is not.
    blocked: AtomicBool,
    state: Mutex<BoardState>,
}

#[derive(Default)]
struct BoardState {
    /// The handler version serving new tasks; empty until loaded.
    digest: Arc<str>,
    running_workers: u32,
    in_flight: HashMap<Arc<str>, InFlight>,
    /// Tasks in flight that hold a slot (not those recovered from the outbox).
    slots_used: u32,
    /// Why polls are refused until the activity's setup changes (it does not exist, its
    /// KMS key cannot be used); `None` once a poll succeeds.
    blocked: Option<String>,
}

struct InFlight {
    started: SystemTime,
    since: Instant,
    handler_digest: Arc<str>,
}

impl ActivityBoard {
    fn lock(&self) -> MutexGuard<'_, BoardState> {
        // Plain counters and a map, consistent even if a holder panicked.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl StatusBoard {
    /// A board for these activities (ARN, `max_concurrent_tasks`), nothing loaded or
    /// running yet.
    pub fn new<'a>(activities: impl IntoIterator<Item = (&'a str, u32)>) -> Self {
        Self {
            started: Instant::now(),
            activities: activities
                .into_iter()
                .map(|(arn, task_slots)| ActivityBoard {
                    arn: Arc::from(arn),
                    task_slots,
                    polls_in_flight: AtomicU32::new(0),
                    started: AtomicU64::new(0),
                    waited_us: AtomicU64::new(0),
                    desired: Mutex::new(None),
                    versions: Mutex::new(None),
                    polled: AtomicBool::new(false),
                    blocked: AtomicBool::new(false),
                    state: Mutex::new(BoardState::default()),
                })
                .collect(),
        }
    }

    /// Shows `arn`'s desired worker count from its pool from now on.
    pub fn watch_desired(&self, arn: &str, desired: watch::Receiver<u32>) {
        if let Some(board) = self.activities.iter().find(|a| &*a.arn == arn) {
            *board
                .desired
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(desired);
        }
    }

    /// Shows the canary of `arn`'s versions, while there is one.
    pub fn watch_versions(&self, arn: &str, versions: Arc<VersionChooser>) {
        if let Some(board) = self.activities.iter().find(|a| &*a.arn == arn) {
            *board
                .versions
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(versions);
        }
    }

    fn board(&self, arn: &Arc<str>) -> Option<&ActivityBoard> {
        self.activities
            .iter()
            .find(|a| Arc::ptr_eq(&a.arn, arn) || a.arn == *arn)
    }

    /// Why the host is not ready, or `None` when every activity has a handler loaded, a
    /// running worker that has polled, and polls Step Functions does not refuse.
    pub fn not_ready(&self) -> Option<String> {
        self.activities.iter().find_map(|board| {
            let state = board.lock();
            if state.digest.is_empty() {
                Some(format!("{}: no handler loaded yet", board.arn))
            } else if state.running_workers == 0 || !board.polled.load(Ordering::Relaxed) {
                Some(format!("{}: no worker polling yet", board.arn))
            } else {
                state
                    .blocked
                    .as_ref()
                    .map(|why| format!("{}: polls are refused: {why}", board.arn))
            }
        })
    }

    /// The `/status` document.
    pub fn snapshot(&self) -> Value {
        let activities: Vec<Value> = self
            .activities
            .iter()
            .map(|board| {
                let desired = board
                    .desired
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .as_ref()
                    .map(|desired| *desired.borrow());
                let canary = board
                    .versions
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .as_ref()
                    .and_then(|versions| versions.canary())
                    .map(|(handler, percent)| {
                        json!({"digest": &**handler.digest().hex(), "percent": percent})
                    });
                let state = board.lock();
                let mut tasks: Vec<(&Arc<str>, &InFlight)> = state.in_flight.iter().collect();
                tasks.sort_by_key(|(_, task)| task.since);
                let tasks: Vec<Value> = tasks
                    .into_iter()
                    .map(|(task_id, task)| {
                        json!({
                            "task_id": &**task_id,
                            "started": rfc3339(task.started),
                            "elapsed_ms": millis(task.since.elapsed()),
                            "handler_digest": &*task.handler_digest,
                        })
                    })
                    .collect();
                let started = board.started.load(Ordering::Relaxed);
                #[allow(clippy::cast_precision_loss)] // µs: f64 is exact for 285 years
                let waited = board.waited_us.load(Ordering::Relaxed) as f64 / 1e6;
                json!({
                    "arn": &*board.arn,
                    "handler_digest": &*state.digest,
                    "canary": canary,
                    "desired_workers": desired,
                    "running_workers": state.running_workers,
                    "task_slots": board.task_slots,
                    "task_slots_used": state.slots_used,
                    "polls_in_flight": board.polls_in_flight.load(Ordering::Relaxed),
                    "task_wait_seconds": {"count": started, "sum": waited},
                    "tasks_in_flight": tasks.len(),
                    "tasks": tasks,
                    "polls_refused": state.blocked,
                })
            })
            .collect();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": self.started.elapsed().as_secs_f64(),
            "activities": activities,
        })
    }
}

impl Observer for StatusBoard {
    fn observe(&self, event: &Event) {
        let Some(board) = self.board(&event.activity) else {
            return;
        };
        match &event.kind {
            EventKind::Worker { event, .. } => board.observe_worker(event),
            EventKind::Task { task, event, .. } => board.observe_task(task, event),
            EventKind::Handler(event) => board.observe_handler(event),
        }
    }
}

impl ActivityBoard {
    /// Follows a worker's event: the workers running, the polls open, and whether Step
    /// Functions refuses them.
    fn observe_worker(&self, event: &WorkerEvent) {
        match event {
            WorkerEvent::PollingStarting => {
                self.polls_in_flight.fetch_add(1, Ordering::Relaxed);
                // A plain load first keeps the flag's cache line shared.
                if !self.polled.load(Ordering::Relaxed) {
                    self.polled.store(true, Ordering::Relaxed);
                }
            }
            WorkerEvent::Running => self.lock().running_workers += 1,
            WorkerEvent::PollingError {
                error,
                blocked: true,
                ..
            } => {
                decrement(&self.polls_in_flight);
                self.lock().blocked = Some(error.clone());
                self.blocked.store(true, Ordering::Relaxed);
            }
            WorkerEvent::PollingError { .. } => decrement(&self.polls_in_flight),
            WorkerEvent::PollingSuccess { .. } => {
                decrement(&self.polls_in_flight);
                if self.blocked.load(Ordering::Relaxed) {
                    self.blocked.store(false, Ordering::Relaxed);
                    self.lock().blocked = None;
                }
            }
            WorkerEvent::Stopped { .. } => {
                let mut state = self.lock();
                state.running_workers = state.running_workers.saturating_sub(1);
            }
            _ => {}
        }
    }

    /// Follows a task's event: the tasks in flight, the slots they hold, and their wait
    /// from poll to start.
    fn observe_task(&self, task: &TaskRef, event: &TaskEvent) {
        match event {
            TaskEvent::Received => {
                let mut state = self.lock();
                state.in_flight.insert(
                    task.task_id.clone(),
                    InFlight {
                        started: SystemTime::now(),
                        since: Instant::now(),
                        handler_digest: task.handler_digest.clone(),
                    },
                );
                if !task.recovered {
                    state.slots_used += 1;
                }
            }
            TaskEvent::Start { wait } => {
                self.started.fetch_add(1, Ordering::Relaxed);
                let micros = u64::try_from(wait.as_micros()).unwrap_or(u64::MAX);
                self.waited_us.fetch_add(micros, Ordering::Relaxed);
            }
            TaskEvent::Done(_) => {
                let mut state = self.lock();
                state.in_flight.remove(&task.task_id);
                if !task.recovered {
                    state.slots_used = state.slots_used.saturating_sub(1);
                }
            }
            _ => {}
        }
    }

    /// Follows the handler version serving new tasks.
    fn observe_handler(&self, event: &HandlerEvent) {
        match event {
            HandlerEvent::Loaded { digest, .. } => self.lock().digest = digest.clone(),
            HandlerEvent::Swapped { new_digest, .. }
            | HandlerEvent::Promoted { new_digest, .. } => {
                self.lock().digest = new_digest.clone();
            }
            _ => {}
        }
    }
}

/// One less, never below zero (a poll dropped at shutdown may end unreported).
fn decrement(count: &AtomicU32) {
    let _ = count.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
}

fn millis(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}

/// `2026-11-28T21:38:51.123Z`.
fn rfc3339(at: SystemTime) -> String {
    use aws_sdk_sfn::primitives::{DateTime, DateTimeFormat};
    DateTime::from(at)
        .fmt(DateTimeFormat::DateTime)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{TaskDone, TaskOutcome, TaskRef};

    fn worker(event: WorkerEvent) -> Event {
        Event {
            kind: EventKind::Worker {
                worker: Arc::from("w"),
                event,
            },
            activity: Arc::from("arn:a"),
        }
    }

    fn task(event: TaskEvent, id: &str) -> Event {
        Event {
            kind: EventKind::Task {
                worker: Arc::from("w"),
                task: TaskRef {
                    task_id: Arc::from(id),
                    handler_digest: Arc::from("d1"),
                    recovered: false,
                },
                event,
            },
            activity: Arc::from("arn:a"),
        }
    }

    #[test]
    fn ready_once_loaded_and_polling_and_tasks_come_and_go() {
        let board = StatusBoard::new([("arn:a", 1)]);
        assert!(board.not_ready().unwrap().contains("no handler"));
        board.observe(&Event {
            kind: EventKind::Handler(HandlerEvent::Loaded {
                digest: Arc::from("d1"),
                cache: "hit",
                load_ms: 1,
            }),
            activity: Arc::from("arn:a"),
        });
        assert!(board.not_ready().unwrap().contains("no worker"));
        board.observe(&worker(WorkerEvent::Running));
        board.observe(&worker(WorkerEvent::PollingStarting));
        assert_eq!(board.not_ready(), None);
        assert_eq!(
            board.snapshot()["activities"][0]["polls_refused"],
            Value::Null,
            "nothing refused by default"
        );

        // A poll refused until the setup changes makes the host not ready, saying why,
        // until a poll succeeds again.
        board.observe(&worker(WorkerEvent::PollingError {
            error: "ActivityDoesNotExist: no such activity".into(),
            attempt: 1,
            throttled: false,
            blocked: true,
        }));
        let why = board
            .not_ready()
            .expect("not ready while polls are refused");
        assert!(
            why.starts_with("arn:a: polls are refused: ActivityDoesNotExist"),
            "{why}"
        );
        assert_eq!(
            board.snapshot()["activities"][0]["polls_refused"],
            "ActivityDoesNotExist: no such activity"
        );
        board.observe(&worker(WorkerEvent::PollingSuccess { task: false }));
        assert_eq!(board.not_ready(), None);

        board.observe(&task(TaskEvent::Received, "t1"));
        let status = board.snapshot();
        let activity = &status["activities"][0];
        assert_eq!(activity["handler_digest"], "d1");
        assert_eq!(activity["running_workers"], 1);
        assert_eq!(activity["tasks"][0]["task_id"], "t1");
        assert!(
            activity["tasks"][0]["started"]
                .as_str()
                .unwrap()
                .ends_with('Z')
        );
        board.observe(&task(
            TaskEvent::Done(TaskDone::not_run(
                TaskOutcome::Success,
                crate::events::DoneError::Guest,
                Duration::ZERO,
            )),
            "t1",
        ));
        assert_eq!(board.snapshot()["activities"][0]["tasks_in_flight"], 0);
        board.observe(&worker(WorkerEvent::Stopped { exit_code: 0 }));
        assert!(board.not_ready().is_some());
    }
}
