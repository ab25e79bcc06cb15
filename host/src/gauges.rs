//! The live gauges of one activity: workers running, long polls open, and task slots
//! held by tasks (the tasks in flight), each an atomic changed where the change
//! happens — by the worker as it starts and ends, opens and closes a poll, and hands a
//! polled task its slot — and read, never derived, by `/metrics` and `/status`.
//!
//! Why here and not in the observers: both used to rebuild the same numbers from the
//! lifecycle events, each its own way, and an event that never came (a worker that
//! panicked, a poll dropped at the end of a shutdown's grace) left them wrong for good.
//! Each count here is held by a guard that gives it back when dropped, on every path,
//! panics included; a task's count is held by the same value that holds its slot of the
//! activity's semaphore, so the two cannot disagree.
//!
//! One [`Gauges`] per activity, shared by `Arc` between its workers and the readers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::OwnedSemaphorePermit;

/// The live gauges of one activity.
#[derive(Debug)]
pub struct Gauges {
    task_slots: u32,
    workers: AtomicU32,
    polls: AtomicU32,
    tasks: AtomicU32,
}

/// What the gauges read at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GaugeReading {
    /// `max_concurrent_tasks`: the slots the activity's semaphore was made with.
    pub task_slots: u32,
    /// Workers running (from `worker:running` to `worker:stopped`, or their panic).
    pub workers: u32,
    /// `GetActivityTask` long polls open now.
    pub polls_in_flight: u32,
    /// Slots held by tasks: every task received and not yet finished holds one (a task
    /// recovered from the outbox runs no guest and holds none), so this is also the
    /// tasks in flight.
    pub task_slots_used: u32,
}

impl GaugeReading {
    /// Tasks received and not yet finished: each holds a slot.
    pub fn tasks_in_flight(&self) -> u32 {
        self.task_slots_used
    }
}

impl Gauges {
    /// The gauges of an activity with `task_slots` slots, all at zero.
    pub fn new(task_slots: u32) -> Self {
        Self {
            task_slots,
            workers: AtomicU32::new(0),
            polls: AtomicU32::new(0),
            tasks: AtomicU32::new(0),
        }
    }

    /// The gauges now (each read on its own: a reading is not one instant's picture).
    pub fn read(&self) -> GaugeReading {
        GaugeReading {
            task_slots: self.task_slots,
            workers: self.workers.load(Ordering::Relaxed),
            polls_in_flight: self.polls.load(Ordering::Relaxed),
            task_slots_used: self.tasks.load(Ordering::Relaxed),
        }
    }

    /// Counts a running worker until the guard is dropped.
    pub fn worker(&self) -> Counted<'_> {
        Counted::new(&self.workers)
    }

    /// Counts an open poll until the guard is dropped.
    pub fn poll(&self) -> Counted<'_> {
        Counted::new(&self.polls)
    }

    /// Hands `slot` (a permit of the activity's semaphore) to a polled task: counted as
    /// used until the returned slot is dropped, which gives the permit back.
    pub fn task_slot(self: &Arc<Self>, slot: OwnedSemaphorePermit) -> TaskSlot {
        self.tasks.fetch_add(1, Ordering::Relaxed);
        TaskSlot {
            gauges: self.clone(),
            _permit: slot,
        }
    }
}

/// One count of a gauge, given back when dropped.
#[derive(Debug)]
#[must_use = "the count is given back when the guard is dropped"]
pub struct Counted<'a>(&'a AtomicU32);

impl<'a> Counted<'a> {
    fn new(count: &'a AtomicU32) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A task's slot: the semaphore's permit and its count in `task_slots_used`. Dropped,
/// the count goes first, then the permit, so the gauge never shows more than the
/// semaphore has handed out.
#[derive(Debug)]
#[must_use = "the slot is given back when dropped"]
pub struct TaskSlot {
    gauges: Arc<Gauges>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for TaskSlot {
    fn drop(&mut self) {
        // Runs before the fields drop: the permit is given back after.
        self.gauges.tasks.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::Semaphore;

    #[test]
    fn a_task_slot_counts_while_it_holds_the_permit() {
        let semaphore = Arc::new(Semaphore::new(3));
        let gauges = Arc::new(Gauges::new(3));
        let first = gauges.task_slot(semaphore.clone().try_acquire_owned().unwrap());
        let second = gauges.task_slot(semaphore.clone().try_acquire_owned().unwrap());
        // A permit held for a poll, not handed to a task, is not a slot used.
        let polling = semaphore.clone().try_acquire_owned().unwrap();
        let reading = gauges.read();
        assert_eq!(reading.task_slots, 3);
        assert_eq!(reading.task_slots_used, 2);
        assert_eq!(reading.tasks_in_flight(), 2);
        assert_eq!(semaphore.available_permits(), 0);
        drop(first);
        assert_eq!(gauges.read().task_slots_used, 1);
        assert_eq!(semaphore.available_permits(), 1);
        drop((second, polling));
        assert_eq!(gauges.read().task_slots_used, 0);
        assert_eq!(semaphore.available_permits(), 3);
    }

    #[test]
    fn workers_and_polls_count_while_their_guards_live() {
        let gauges = Gauges::new(1);
        let worker = gauges.worker();
        let other = gauges.worker();
        let poll = gauges.poll();
        assert_eq!(
            gauges.read(),
            GaugeReading {
                task_slots: 1,
                workers: 2,
                polls_in_flight: 1,
                task_slots_used: 0,
            }
        );
        drop((poll, other));
        assert_eq!(gauges.read().polls_in_flight, 0);
        assert_eq!(gauges.read().workers, 1);
        drop(worker);
        assert_eq!(
            gauges.read(),
            GaugeReading {
                task_slots: 1,
                ..GaugeReading::default()
            }
        );
    }

    /// A task or worker that panics gives its counts and its permit back: no event says
    /// so, the guards do.
    #[tokio::test]
    async fn a_panic_gives_the_counts_and_the_slot_back() {
        let semaphore = Arc::new(Semaphore::new(2));
        let gauges = Arc::new(Gauges::new(2));
        let permit = semaphore.clone().acquire_owned().await.unwrap();
        let in_task = gauges.clone();
        let (counted, is_counted) = tokio::sync::oneshot::channel::<()>();
        let (go, wait_to_go) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _slot = in_task.task_slot(permit);
            let _worker = in_task.worker();
            let _poll = in_task.poll();
            counted.send(()).unwrap();
            wait_to_go.await.unwrap();
            panic!("planted");
        });
        is_counted.await.unwrap();
        assert_eq!(
            gauges.read(),
            GaugeReading {
                task_slots: 2,
                workers: 1,
                polls_in_flight: 1,
                task_slots_used: 1,
            }
        );
        assert_eq!(semaphore.available_permits(), 1);
        go.send(()).unwrap();
        assert!(task.await.unwrap_err().is_panic());
        assert_eq!(
            gauges.read(),
            GaugeReading {
                task_slots: 2,
                ..GaugeReading::default()
            }
        );
        assert_eq!(semaphore.available_permits(), 2);
    }
}
