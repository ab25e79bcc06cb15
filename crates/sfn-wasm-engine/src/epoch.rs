//! The epoch clock: a plain OS thread that advances the engine's epoch every [`TICK`]
//! while any guest runs guest code, and sleeps otherwise.
//!
//! Every running guest checks its deadline and its abort flag each time the epoch
//! advances, so a guest stuck in `loop {}` is stopped within one tick, and a guest still
//! running at a tick yields its thread (see `engine::task`): the tick is a guest's time
//! slice. The clock is a thread rather than a tokio task so that a runtime kept busy by
//! guests cannot delay it.
//!
//! What it costs is its wake-ups (on a 2-core VM 14–24 µs of CPU each, the e2e
//! bench's thread table), so it wakes only while guests need it:
//! - A guest counts as running while a [`Running`] guard exists and is not
//!   [`paused`](Running::pause): a guest waiting in a host call (its answer on the wire,
//!   a heartbeat, a checkpoint) runs no guest code, and its deadline and abort are
//!   tokio timers there, not ticks.
//! - At a tick with no guest running it sleeps until one starts, and that start wakes
//!   it. A task that computes for less than a tick then costs the clock a wake-up and a
//!   tick before its answer and again after; the clock used to tick through the answer's
//!   round trip and linger two ticks after, 6 to 13 wake-ups a task against LocalStack.
//!   Back to back, guests keep it ticking and a start finds it awake (no wake-up).

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the epoch advances while a guest runs: the longest a running guest goes
/// without checking its deadline and abort flag, and the longest it holds a runtime
/// thread without yielding.
pub const TICK: Duration = Duration::from_millis(5);

#[derive(Default)]
struct State {
    /// Guests running guest code: [`Running`] guards not paused.
    running: usize,
    stop: bool,
    /// The thread sleeps until a guest starts: only then does a start need to wake it
    /// (a syscall, and a context switch for the clock).
    parked: bool,
    /// The last tick, or when guests started running after none did: for the
    /// health check, which wants to know the clock still moves while guests run.
    progress: Option<Instant>,
    /// Ticks so far (each a wake-up of the thread).
    ticks: u64,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is plain fields, consistent even if a holder panicked.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A guest starts (or goes back to) running guest code.
    fn guest_started(&self) {
        let mut state = self.lock();
        if state.running == 0 {
            state.progress = Some(Instant::now());
        }
        state.running += 1;
        if state.parked {
            state.parked = false;
            self.wake.notify_one();
        }
    }

    /// A guest stops running guest code (it ended, or waits in a host call).
    fn guest_stopped(&self) {
        let mut state = self.lock();
        state.running -= 1;
    }
}

/// Advances an engine's epoch while guests run (see the module); the thread is joined
/// on drop.
pub struct EpochTicker {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Keeps the clock ticking while it lives and is not paused: one per running task.
pub struct Running {
    shared: Arc<Shared>,
}

/// A [`Running`] guard's pause: its guest runs no guest code until this is dropped.
pub struct Paused<'a> {
    shared: &'a Shared,
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
                    if state.stop {
                        return;
                    }
                    if state.running == 0 {
                        state.parked = true;
                        while state.parked && !state.stop {
                            state = clock
                                .wake
                                .wait(state)
                                .unwrap_or_else(|poisoned| poisoned.into_inner());
                        }
                        state.parked = false;
                        continue;
                    }
                    drop(state);
                    std::thread::sleep(TICK);
                    engine.increment_epoch();
                    state = clock.lock();
                    state.progress = Some(Instant::now());
                    state.ticks += 1;
                }
            })?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Marks a guest as running until the guard is dropped.
    pub fn running(&self) -> Running {
        self.shared.guest_started();
        Running {
            shared: self.shared.clone(),
        }
    }
}

impl Running {
    /// Marks the guest as not running guest code until the returned guard is dropped:
    /// for a host call that waits (on the network, a store), where no tick is needed.
    pub fn pause(&self) -> Paused<'_> {
        self.shared.guest_stopped();
        Paused {
            shared: &self.shared,
        }
    }
}

impl EpochTicker {
    /// How many times the clock has ticked: each a wake-up of its thread.
    pub fn ticks(&self) -> u64 {
        self.shared.lock().ticks
    }

    /// Whether guests are running and the clock has not ticked for `max`: its thread is
    /// gone or starved, and runaway guests would not be stopped.
    pub fn stalled(&self, max: Duration) -> bool {
        let state = self.shared.lock();
        state.running > 0 && state.progress.is_some_and(|at| at.elapsed() > max)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shared.guest_stopped();
    }
}

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        self.shared.guest_started();
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

    fn parked(ticker: &EpochTicker) -> bool {
        ticker.shared.lock().parked
    }

    /// Whether the clock goes to sleep within a second (a tick, on a loaded machine).
    fn parks(ticker: &EpochTicker) -> bool {
        let until = Instant::now() + Duration::from_secs(1);
        while !parked(ticker) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        parked(ticker)
    }

    #[test]
    fn the_clock_ticks_while_a_guest_runs_and_sleeps_at_the_first_tick_without() {
        let ticker = EpochTicker::start(wasmtime::Engine::default()).unwrap();
        let running = ticker.running();
        let at = ticker.ticks();
        // 20 TICKs: ~20 ticks; 8 leaves room for a loaded machine.
        std::thread::sleep(TICK * 20);
        assert!(
            !ticker.stalled(TICK * 20),
            "the clock ticks while a guest runs"
        );
        let fast = ticker.ticks() - at;
        assert!(fast >= 8, "{fast} ticks in 20 TICKs while a guest runs");
        drop(running);
        assert!(parks(&ticker), "no guest: it sleeps");
        let at = ticker.ticks();
        std::thread::sleep(TICK * 10);
        assert_eq!(ticker.ticks(), at, "and does not tick");
        let at = ticker.ticks() + 1;
        let paused = ticker.running();
        assert!(!parked(&ticker), "a start wakes it");
        let pause = paused.pause();
        assert!(parks(&ticker), "a paused guest lets it sleep");
        assert!(ticker.ticks() <= at, "after one tick at most");
        drop(pause);
        assert!(!parked(&ticker), "its end of pause wakes it");
        std::thread::sleep(TICK * 20);
        let fast = ticker.ticks() - at;
        assert!(fast >= 8, "{fast} ticks in 20 TICKs after the start");
        // Joins: a thread that missed the wake-up from its idle wait would hang here.
        drop(ticker);
        let ticker = EpochTicker::start(wasmtime::Engine::default()).unwrap();
        let _running = ticker.running();
        drop(ticker);
    }

    #[test]
    fn a_paused_guest_does_not_count_as_running() {
        let ticker = EpochTicker::start(wasmtime::Engine::default()).unwrap();
        let running = ticker.running();
        let other = ticker.running();
        {
            let _paused = running.pause();
            assert_eq!(ticker.shared.lock().running, 1);
            let _both = other.pause();
            assert_eq!(ticker.shared.lock().running, 0);
            assert!(!ticker.stalled(Duration::ZERO), "no guest runs");
        }
        assert_eq!(ticker.shared.lock().running, 2);
        drop((running, other));
        assert_eq!(ticker.shared.lock().running, 0);
    }
}
