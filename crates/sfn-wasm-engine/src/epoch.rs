//! The epoch clock: a plain OS thread that advances the engine's epoch every [`TICK`]
//! while any task is running (and for [`LINGER`] after), and sleeps otherwise.
//!
//! Every running guest checks its deadline and its abort flag each time the epoch
//! advances, so a guest stuck in `loop {}` is stopped within one tick, and a guest still
//! running at a tick yields its thread (see `engine::task`): the tick is a guest's time
//! slice. The clock is a thread rather than a tokio task so that a runtime kept busy by
//! guests cannot delay it. It ticks while a [`Running`] guard exists and for [`LINGER`]
//! after the last one is dropped: tasks that arrive one by one, a few milliseconds apart,
//! find it ticking instead of each paying for waking it (a context switch) and for its
//! going back to sleep (another); an idle host (workers waiting in long polls) goes
//! quiet after [`LINGER`].

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the epoch advances: the longest a running guest goes without checking its
/// deadline and abort flag, and the longest it holds a runtime thread without yielding.
pub const TICK: Duration = Duration::from_millis(5);
/// How long the clock keeps ticking after the last task ends: two ticks. Ticking on
/// costs a wake-up per tick; stopping costs one to stop and one to start again, so
/// tasks that arrive closer than this together keep the clock going, and sparser ones
/// (the e2e bench's LocalStack runs, 25 a second) let it sleep between them.
pub const LINGER: Duration = Duration::from_millis(10);

#[derive(Default)]
struct State {
    running: usize,
    stop: bool,
    /// The thread waits for a task: only then does a new task need to wake it (a
    /// syscall), which keeps the wake-up off the per-task path most of the time.
    parked: bool,
    /// The last tick, or when tasks started running after an idle spell: for the
    /// health check, which wants to know the clock still moves while tasks run.
    progress: Option<Instant>,
    /// When the last task ended: the clock ticks on until [`LINGER`] after it.
    last_ended: Option<Instant>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is two plain fields, consistent even if a holder panicked.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Advances an engine's epoch every [`TICK`] while tasks run; the thread is joined on
/// drop.
pub struct EpochTicker {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Keeps the clock ticking while it lives: one per running task.
pub struct Running {
    shared: Arc<Shared>,
}

impl EpochTicker {
    /// Starts the ticker thread for `engine`.
    pub fn start(engine: wasmtime::Engine) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let clock = shared.clone();
        let thread = std::thread::Builder::new()
            .name("sfn-wasm-epoch".into())
            .spawn(move || {
                let mut state = clock.lock();
                loop {
                    let lingering =
                        |state: &State| state.last_ended.is_some_and(|at| at.elapsed() < LINGER);
                    while state.running == 0 && !lingering(&state) && !state.stop {
                        state.parked = true;
                        state = clock
                            .wake
                            .wait(state)
                            .unwrap_or_else(|poisoned| poisoned.into_inner());
                        state.parked = false;
                    }
                    if state.stop {
                        return;
                    }
                    drop(state);
                    std::thread::sleep(TICK);
                    engine.increment_epoch();
                    state = clock.lock();
                    state.progress = Some(Instant::now());
                }
            })?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Marks a task as running until the guard is dropped.
    pub fn running(&self) -> Running {
        let mut state = self.shared.lock();
        if state.running == 0 {
            state.progress = Some(Instant::now());
        }
        state.running += 1;
        if state.parked {
            self.shared.wake.notify_one();
        }
        Running {
            shared: self.shared.clone(),
        }
    }
}

impl EpochTicker {
    /// Whether tasks are running and the clock has not ticked for `max`: its thread is
    /// gone or starved, and runaway guests would not be stopped.
    pub fn stalled(&self, max: Duration) -> bool {
        let state = self.shared.lock();
        state.running > 0 && state.progress.is_some_and(|at| at.elapsed() > max)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.running -= 1;
        if state.running == 0 {
            state.last_ended = Some(Instant::now());
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thread_stops_from_idle_as_well_as_from_running() {
        let engine = wasmtime::Engine::default();
        let ticker = EpochTicker::start(engine.clone()).unwrap();
        let running = ticker.running();
        std::thread::sleep(TICK * 5);
        assert!(
            !ticker.stalled(TICK * 20),
            "the clock ticks while a task runs"
        );
        drop(running);
        assert_eq!(ticker.shared.lock().running, 0);
        assert!(!ticker.shared.lock().parked, "it ticks on for LINGER");
        std::thread::sleep(LINGER + TICK * 3);
        assert!(ticker.shared.lock().parked, "then it waits for a task");
        // Joins: a thread that missed the wake-up from its idle wait would hang here.
        drop(ticker);
        let ticker = EpochTicker::start(engine).unwrap();
        let _running = ticker.running();
        drop(ticker);
    }
}
