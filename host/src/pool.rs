//! `ActivityPoolManager`: keeps the desired number of workers polling one activity.
//!
//! A supervisor task owns the workers. It starts them, replaces one that stopped on
//! errors after `restart_interval_ms`, follows resizes up and down (a worker taken away
//! finishes its current poll and task first), and on stop waits for every worker to end:
//! each finishes its poll in flight (until the shutdown's grace ends) and its task.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::{Id, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::ids::worker_name;
use crate::lifecycle::ActivityShared;
use crate::worker::{ActivityWorker, WorkerExit, WorkerStop};

/// Runs and supervises the workers of one activity.
pub struct ActivityPoolManager {
    shared: Arc<ActivityShared>,
    desired: watch::Sender<u32>,
    worker_prefix: String,
    stop: CancellationToken,
    supervisor: Option<tokio::task::JoinHandle<()>>,
}

impl ActivityPoolManager {
    /// A pool for `shared.activity`, not started yet. `stop` ends polling for every worker
    /// (typically a child of the consumer's token).
    pub fn new(
        shared: Arc<ActivityShared>,
        worker_prefix: String,
        stop: CancellationToken,
    ) -> Self {
        let (desired, _) = watch::channel(shared.activity.pollers);
        Self {
            shared,
            desired,
            worker_prefix,
            stop,
            supervisor: None,
        }
    }

    /// The activity ARN.
    pub fn arn(&self) -> &str {
        &self.shared.arn
    }

    /// Where its tasks come from: `activity` or `callback` (its ARN is then the queue
    /// URL).
    pub fn task_source(&self) -> &'static str {
        self.shared.activity.source.kind()
    }

    /// Starts the configured number of workers. Calling it twice does nothing.
    pub fn start(&mut self) {
        if self.supervisor.is_some() {
            return;
        }
        let supervisor = Supervisor {
            shared: self.shared.clone(),
            prefix: self.worker_prefix.clone(),
            desired: self.desired.subscribe(),
            stop: self.stop.clone(),
            workers: JoinSet::new(),
            slots: Vec::new(),
            restarts: Vec::new(),
        };
        self.supervisor = Some(tokio::spawn(supervisor.run()));
    }

    /// How many workers the pool keeps.
    pub fn desired_capacity(&self) -> u32 {
        *self.desired.borrow()
    }

    /// The activity's handler versions (for the status page's canary).
    pub fn versions(&self) -> &Arc<crate::rollout::VersionChooser> {
        &self.shared.versions
    }

    /// The activity's live gauges (for `/metrics` and `/status`).
    pub fn gauges(&self) -> &Arc<crate::gauges::Gauges> {
        &self.shared.gauges
    }

    /// Follows the desired worker count (for the status page).
    pub fn desired_watch(&self) -> tokio::sync::watch::Receiver<u32> {
        self.desired.subscribe()
    }

    /// Changes how many workers the pool keeps. New ones start at once; extra ones stop
    /// after their current poll and its task (abandoning a poll could strand a task).
    pub fn set_desired_capacity(&self, workers: u32) {
        self.desired.send_replace(workers);
    }

    /// Starts no new poll and waits for every worker to end: polls in flight are kept
    /// until they return (a task they bring is answered `SfnWasmHost.Shutdown`) or the
    /// consumer's abort drops them; running tasks finish and their answers are
    /// delivered. Tasks are stopped by the consumer's task controls, not here.
    pub async fn stop(&mut self) {
        self.stop.cancel();
        if let Some(supervisor) = self.supervisor.take()
            && let Err(err) = supervisor.await
        {
            tracing::error!(activity = self.arn(), error = %err, "the pool supervisor panicked");
        }
    }
}

struct Slot {
    id: Id,
    retire: CancellationToken,
}

impl Slot {
    fn retiring(&self) -> bool {
        self.retire.is_cancelled()
    }
}

struct Supervisor {
    shared: Arc<ActivityShared>,
    prefix: String,
    desired: watch::Receiver<u32>,
    stop: CancellationToken,
    workers: JoinSet<WorkerExit>,
    slots: Vec<Slot>,
    /// When to replace workers that stopped on errors.
    restarts: Vec<Instant>,
}

impl Supervisor {
    async fn run(mut self) {
        self.reconcile();
        loop {
            let next_restart = self.restarts.iter().min().copied();
            tokio::select! {
                () = self.stop.cancelled() => break,
                changed = self.desired.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    self.reconcile();
                }
                Some(joined) = self.workers.join_next_with_id() => {
                    let (id, exit) = match joined {
                        Ok((id, exit)) => (id, exit),
                        Err(err) => {
                            tracing::error!(activity = &*self.shared.arn, error = %err, "a worker panicked");
                            (err.id(), WorkerExit::Panicked)
                        }
                    };
                    let retiring = self.remove(id);
                    if exit != WorkerExit::Stopped && !retiring {
                        self.restarts.push(Instant::now() + self.shared.activity.restart_interval);
                    }
                    self.reconcile();
                }
                () = sleep_until(next_restart) => {
                    let now = Instant::now();
                    self.restarts.retain(|at| *at > now);
                    self.reconcile();
                }
            }
        }
        // `stop` is every worker's `shutdown` token: no new polls.
        self.stop.cancel();
        while let Some(joined) = self.workers.join_next().await {
            if let Err(err) = joined {
                tracing::error!(activity = &*self.shared.arn, error = %err, "a worker panicked");
            }
        }
    }

    /// Removes a finished worker's slot; returns whether it had been retired.
    fn remove(&mut self, id: Id) -> bool {
        match self.slots.iter().position(|slot| slot.id == id) {
            Some(index) => self.slots.swap_remove(index).retiring(),
            None => false,
        }
    }

    /// Starts or retires workers so that live workers plus pending restarts match the
    /// desired capacity.
    fn reconcile(&mut self) {
        let desired = *self.desired.borrow() as usize;
        let live = self.slots.iter().filter(|slot| !slot.retiring()).count();
        if live + self.restarts.len() > desired {
            // Drop pending restarts first, then retire the newest workers.
            let excess = live + self.restarts.len() - desired;
            let dropped = excess.min(self.restarts.len());
            self.restarts.sort();
            self.restarts.truncate(self.restarts.len() - dropped);
            for slot in self
                .slots
                .iter_mut()
                .rev()
                .filter(|slot| !slot.retiring())
                .take(excess - dropped)
            {
                slot.retire.cancel();
            }
        }
        let live = self.slots.iter().filter(|slot| !slot.retiring()).count();
        for _ in live + self.restarts.len()..desired {
            let stop = WorkerStop {
                shutdown: self.stop.clone(),
                retire: CancellationToken::new(),
            };
            let retire = stop.retire.clone();
            let worker = ActivityWorker::new(worker_name(&self.prefix), self.shared.clone(), stop);
            let id = self.workers.spawn(worker.run()).id();
            self.slots.push(Slot { id, retire });
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
