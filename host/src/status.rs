//! What `/status` and `/readyz` report: per activity its handler version, its workers,
//! its tasks in flight and the scaling signals (task slots and slots used, polls in
//! flight, the wait from poll to start). The counts of workers, polls and slots used are
//! the activity's live [`Gauges`], read when asked; the rest (versions, the tasks' list,
//! the waits, refused polls) is kept up to date as an [`Observer`] of every event.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::events::{Event, EventKind, HandlerEvent, Observer, TaskEvent, TaskRef, WorkerEvent};
use crate::gauges::{GaugeReading, Gauges};
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
    /// Workers running, polls open, slots used; unset (all zero) until the pool exists.
    gauges: OnceLock<Arc<Gauges>>,
    /// Tasks started, and the sum of their waits from poll to start in microseconds.
    started: AtomicU64,
    waited_us: AtomicU64,
    /// The pool's desired worker count; `None` until the pool exists.
    desired: Mutex<Option<watch::Receiver<u32>>>,
    /// The activity's versions (for a canary); `None` until the pool exists.
    versions: Mutex<Option<Arc<VersionChooser>>>,
    /// Some worker of the activity has started a poll.
    polled: AtomicBool,
    /// Whether its tasks come from a callback's queue: taken from its events'
    /// `task_source` (a handler event, the first each activity emits, is enough).
    callback: AtomicBool,
    /// `state.blocked` is set: read on every poll, so that clearing it costs no lock
    /// while it is not.
    blocked: AtomicBool,
    state: Mutex<BoardState>,
}

#[derive(Default)]
struct BoardState {
    /// The handler version serving new tasks; empty until loaded.
    digest: Arc<str>,
    in_flight: HashMap<Arc<str>, InFlight>,
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

    /// The live gauges now; zero before the pool exists.
    fn live(&self) -> GaugeReading {
        self.gauges
            .get()
            .map(|gauges| gauges.read())
            .unwrap_or_default()
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
                    gauges: OnceLock::new(),
                    started: AtomicU64::new(0),
                    waited_us: AtomicU64::new(0),
                    desired: Mutex::new(None),
                    versions: Mutex::new(None),
                    polled: AtomicBool::new(false),
                    callback: AtomicBool::new(false),
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

    /// Shows `arn`'s live gauges (workers, polls, slots used) from now on; the first
    /// given stays.
    pub fn watch_gauges(&self, arn: &str, gauges: Arc<Gauges>) {
        if let Some(board) = self.activities.iter().find(|a| &*a.arn == arn) {
            let _ = board.gauges.set(gauges);
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
            } else if board.live().workers == 0 || !board.polled.load(Ordering::Relaxed) {
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
                let live = board.live();
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
                    "task_source": if board.callback.load(Ordering::Relaxed) { "callback" } else { "activity" },
                    "handler_digest": &*state.digest,
                    "canary": canary,
                    "desired_workers": desired,
                    "running_workers": live.workers,
                    "task_slots": board.task_slots,
                    "task_slots_used": live.task_slots_used,
                    "polls_in_flight": live.polls_in_flight,
                    "task_wait_seconds": {"count": started, "sum": waited},
                    "tasks_in_flight": live.tasks_in_flight(),
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
            EventKind::Handler(handler_event) => {
                board
                    .callback
                    .store(event.task_source == "callback", Ordering::Relaxed);
                board.observe_handler(handler_event);
            }
        }
    }
}

impl ActivityBoard {
    /// Follows a worker's event: whether it has polled, and whether Step Functions
    /// refuses its polls (the workers and polls counted are live gauges).
    fn observe_worker(&self, event: &WorkerEvent) {
        match event {
            // A plain load first keeps the flag's cache line shared.
            WorkerEvent::PollingStarting if !self.polled.load(Ordering::Relaxed) => {
                self.polled.store(true, Ordering::Relaxed);
            }
            WorkerEvent::PollingError {
                error,
                blocked: true,
                ..
            } => {
                self.lock().blocked = Some(error.clone());
                self.blocked.store(true, Ordering::Relaxed);
            }
            WorkerEvent::PollingSuccess { .. } if self.blocked.load(Ordering::Relaxed) => {
                self.blocked.store(false, Ordering::Relaxed);
                self.lock().blocked = None;
            }
            _ => {}
        }
    }

    /// Follows a task's event: the tasks in flight (their list; the slots they hold are
    /// a live gauge), and their wait from poll to start.
    fn observe_task(&self, task: &TaskRef, event: &TaskEvent) {
        match event {
            TaskEvent::Received => {
                self.lock().in_flight.insert(
                    task.task_id.clone(),
                    InFlight {
                        started: SystemTime::now(),
                        since: Instant::now(),
                        handler_digest: task.handler_digest.clone(),
                    },
                );
            }
            TaskEvent::Start { wait } => {
                self.started.fetch_add(1, Ordering::Relaxed);
                let micros = u64::try_from(wait.as_micros()).unwrap_or(u64::MAX);
                self.waited_us.fetch_add(micros, Ordering::Relaxed);
            }
            TaskEvent::Done(_) => {
                self.lock().in_flight.remove(&task.task_id);
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
            task_source: "activity",
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
            task_source: "activity",
        }
    }

    /// A board for `arn:a` (one slot) with its gauges, and `d1` loaded.
    fn loaded_board() -> (StatusBoard, Arc<Gauges>) {
        let board = StatusBoard::new([("arn:a", 1)]);
        let gauges = Arc::new(Gauges::new(1));
        board.watch_gauges("arn:a", gauges.clone());
        assert!(board.not_ready().unwrap().contains("no handler"));
        board.observe(&Event {
            kind: EventKind::Handler(HandlerEvent::Loaded {
                digest: Arc::from("d1"),
                cache: "hit",
                load_ms: 1,
            }),
            activity: Arc::from("arn:a"),
            task_source: "activity",
        });
        (board, gauges)
    }

    #[test]
    fn ready_once_loaded_and_polling_until_refused_or_stopped() {
        let (board, gauges) = loaded_board();
        assert!(board.not_ready().unwrap().contains("no worker"));
        let running = gauges.worker();
        board.observe(&worker(WorkerEvent::Running));
        assert!(
            board.not_ready().unwrap().contains("no worker"),
            "running, not polled yet"
        );
        let poll = gauges.poll();
        board.observe(&worker(WorkerEvent::PollingStarting));
        assert_eq!(board.not_ready(), None);
        assert_eq!(board.snapshot()["activities"][0]["polls_in_flight"], 1);
        assert_eq!(
            board.snapshot()["activities"][0]["polls_refused"],
            Value::Null,
            "nothing refused by default"
        );

        // A poll refused until the setup changes makes the host not ready, saying why,
        // until a poll succeeds again.
        drop(poll);
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
        let poll = gauges.poll();
        board.observe(&worker(WorkerEvent::PollingStarting));
        drop(poll);
        board.observe(&worker(WorkerEvent::PollingSuccess { task: false }));
        assert_eq!(board.not_ready(), None);
        assert_eq!(board.snapshot()["activities"][0]["polls_in_flight"], 0);

        // No worker running (whether it said `worker:stopped` or panicked): not ready.
        drop(running);
        assert!(board.not_ready().unwrap().contains("no worker"));
    }

    #[test]
    fn tasks_in_flight_are_listed_and_counted_by_their_slots() {
        let (board, gauges) = loaded_board();
        let _running = gauges.worker();
        let semaphore = Arc::new(tokio::sync::Semaphore::new(1));
        let slot = gauges.task_slot(semaphore.try_acquire_owned().unwrap());
        board.observe(&task(TaskEvent::Received, "t1"));
        let status = board.snapshot();
        let activity = &status["activities"][0];
        assert_eq!(activity["handler_digest"], "d1");
        assert_eq!(activity["running_workers"], 1);
        assert_eq!(activity["polls_in_flight"], 0);
        assert_eq!(activity["task_slots"], 1);
        assert_eq!(activity["task_slots_used"], 1);
        assert_eq!(activity["tasks_in_flight"], 1);
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
        drop(slot);
        let activity = &board.snapshot()["activities"][0];
        assert_eq!(activity["tasks_in_flight"], 0);
        assert_eq!(activity["task_slots_used"], 0);
        assert_eq!(activity["tasks"], json!([]));
    }
}
