//! The epoch clock: a plain OS thread that advances the engine's epoch once per [`TICK`]
//! of time during which some guest runs guest code.
//!
//! Every running guest checks its deadline and its abort flag each time the epoch
//! advances, so a guest stuck in `loop {}` is stopped within one tick, and a guest still
//! running at a tick yields its thread (see `engine::task`): the tick is a guest's time
//! slice. The clock is a thread rather than a tokio task so that a runtime kept busy by
//! guests cannot delay it.
//!
//! What it costs is its wake-ups (on a 2-core VM 14–24 µs of CPU each, the e2e bench's
//! thread table), so it wakes only when a tick is due:
//! - A guest counts as running while a [`Running`] guard exists and is not
//!   [`paused`](Running::pause): a guest waiting in a host call (its answer on the wire,
//!   a heartbeat, a checkpoint) runs no guest code, and its deadline and abort are
//!   tokio timers there, not ticks.
//! - The clock is a `timerfd`, armed (one system call on the guest's thread, no wake-up)
//!   when a guest starts running while it is not, for what is left of a tick. At each
//!   expiry the thread ticks if a guest runs, else disarms the timer and sleeps until a
//!   guest starts: one wake-up per tick of time with guests in it, and none for a start,
//!   or for a guest that goes back to its code after a wait while the timer runs. It
//!   used to be a thread that every start after a quiet tick woke, then slept a tick and
//!   ticked whether or not a guest still ran: 1.5 to 3.6 wake-ups a task when tasks came
//!   apart.
//! - What guests ran since the last tick carries over to the next arming: a guest that
//!   keeps pausing for a moment (a cached `last-checkpoint` in a loop) is ticked as if it
//!   never paused, and so yields and meets its deadline.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::time::{
    Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create,
    timerfd_settime,
};

/// How often the epoch advances while a guest runs: the longest a running guest goes
/// without checking its deadline and abort flag, and the longest it holds a runtime
/// thread without yielding.
pub const TICK: Duration = Duration::from_millis(5);

#[derive(Default)]
struct State {
    /// Guests running guest code: [`Running`] guards not paused.
    running: usize,
    stop: bool,
    /// When guests started running after none did; `None` while none runs.
    since: Option<Instant>,
    /// How long some guest ran guest code since the last tick, before `since`.
    ran: Duration,
    /// The timer is set: it expires at the next tick, and every tick after.
    armed: bool,
    /// The last tick, or when guests started running after none did: for the
    /// health check, which wants to know the clock still moves while guests run.
    progress: Option<Instant>,
    /// Ticks so far.
    ticks: u64,
}

struct Shared {
    state: Mutex<State>,
    /// Expires at the next tick while some guest runs; disarmed otherwise.
    timer: OwnedFd,
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
        state.running += 1;
        if state.running == 1 {
            let now = Instant::now();
            state.since = Some(now);
            state.progress = Some(now);
            if !state.armed && !state.stop {
                self.set(Some(TICK.saturating_sub(state.ran)));
                state.armed = true;
            }
        }
    }

    /// A guest stops running guest code (it ended, or waits in a host call).
    fn guest_stopped(&self) {
        let mut state = self.lock();
        state.running -= 1;
        if state.running == 0
            && let Some(since) = state.since.take()
        {
            state.ran += since.elapsed();
        }
    }

    /// Arms the timer to expire `after` (at least a microsecond) and every tick after
    /// it, or disarms it (`None`). A failure (none is expected: the descriptor is
    /// valid and the values in range) is logged; the thread then ticks by sleeping.
    fn set(&self, after: Option<Duration>) {
        let timespec = |d: Duration| Timespec {
            tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(d.subsec_nanos()),
        };
        let value = match after {
            Some(after) => Itimerspec {
                it_interval: timespec(TICK),
                it_value: timespec(after.max(Duration::from_micros(1))),
            },
            None => Itimerspec {
                it_interval: timespec(Duration::ZERO),
                it_value: timespec(Duration::ZERO),
            },
        };
        if let Err(err) = timerfd_settime(&self.timer, TimerfdTimerFlags::empty(), &value) {
            tracing::error!(error = %err, "cannot set the epoch clock's timer");
        }
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
    ///
    /// # Errors
    /// When the timer cannot be created or the thread cannot start.
    pub fn start(engine: wasmtime::Engine) -> std::io::Result<Self> {
        let timer = timerfd_create(TimerfdClockId::Monotonic, TimerfdFlags::CLOEXEC)?;
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            timer,
        });
        let clock = shared.clone();
        let thread = std::thread::Builder::new()
            .name("sfn-wasm-epoch".into())
            .spawn(move || {
                let mut reported = false;
                loop {
                    wait_for_expiry(&clock.timer, &mut reported);
                    let mut state = clock.lock();
                    if state.stop {
                        return;
                    }
                    // No guest runs now: none to interrupt. The timer stops until one
                    // starts; what they ran since the last tick carries over.
                    if state.running == 0 {
                        clock.set(None);
                        state.armed = false;
                        continue;
                    }
                    let now = Instant::now();
                    state.ran = Duration::ZERO;
                    state.since = Some(now);
                    state.progress = Some(now);
                    state.ticks += 1;
                    drop(state);
                    engine.increment_epoch();
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

/// Blocks until `timer` expires. Should reading it fail (it is not expected to), sleeps
/// a tick instead, so that the clock still ticks; the first failure is logged
/// (`reported`), not every one.
fn wait_for_expiry(timer: &OwnedFd, reported: &mut bool) {
    let mut expirations = [0u8; 8];
    loop {
        match rustix::io::read(timer, &mut expirations) {
            Ok(_) => return,
            Err(rustix::io::Errno::INTR) => {}
            Err(err) => {
                if !std::mem::replace(reported, true) {
                    tracing::error!(error = %err, "cannot read the epoch clock's timer; it ticks by sleeping");
                }
                std::thread::sleep(TICK);
                return;
            }
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
    /// How many times the clock has ticked.
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
        let mut state = self.shared.lock();
        state.stop = true;
        // Wakes the thread at once, wherever it waits; under the lock, so that the
        // thread (which disarms the timer at an expiry with no guest running) sees
        // `stop` before it could disarm this.
        self.shared.set(Some(Duration::ZERO));
        drop(state);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ticks while `guard` is held for `ticks` TICKs.
    fn ticks_over<T>(ticker: &EpochTicker, guard: T, ticks: u32) -> u64 {
        let at = ticker.ticks();
        std::thread::sleep(TICK * ticks);
        drop(guard);
        ticker.ticks() - at
    }

    #[test]
    fn the_clock_ticks_while_a_guest_runs_and_not_while_none_does() {
        let ticker = EpochTicker::start(wasmtime::Engine::default()).unwrap();
        let running = ticker.running();
        std::thread::sleep(TICK * 20);
        assert!(
            !ticker.stalled(TICK * 20),
            "the clock ticks while a guest runs"
        );
        // 20 TICKs: ~20 ticks; 8 leaves room for a loaded machine.
        let fast = ticks_over(&ticker, (), 20);
        assert!(fast >= 8, "{fast} ticks in 20 TICKs while a guest runs");
        drop(running);
        // One expiry may have been read just before the stop.
        assert!(ticks_over(&ticker, (), 10) <= 1, "no guest: no tick");
        let paused = ticker.running();
        let pause = paused.pause();
        assert!(
            ticks_over(&ticker, (), 10) <= 1,
            "a paused guest does not keep it ticking"
        );
        drop(pause);
        let fast = ticks_over(&ticker, (), 20);
        assert!(fast >= 8, "{fast} ticks in 20 TICKs after the pause");
        // Joins with a guard alive, and with a guard dropped after: a thread that
        // missed its wake-up would hang here.
        drop(ticker);
        drop(paused);
        let ticker = EpochTicker::start(wasmtime::Engine::default()).unwrap();
        let _running = ticker.running();
        drop(ticker);
    }

    /// Guests that end within their tick are never ticked: 20 guests of 0.1 ms, a tick
    /// apart, run 2 ms in all, less than a tick.
    #[test]
    fn guests_that_end_within_a_tick_are_never_ticked() {
        let ticker = EpochTicker::start(wasmtime::Engine::default()).unwrap();
        for _ in 0..20 {
            let running = ticker.running();
            let until = Instant::now() + Duration::from_micros(100);
            while Instant::now() < until {
                std::hint::spin_loop();
            }
            drop(running);
            std::thread::sleep(TICK);
        }
        assert_eq!(ticker.ticks(), 0);
    }

    /// A guest that pauses for a moment every 0.2 ms (a cached host call in a loop) is
    /// ticked as if it never paused: what is left of a tick carries over.
    #[test]
    fn a_guest_that_keeps_pausing_for_a_moment_is_still_ticked() {
        let ticker = EpochTicker::start(wasmtime::Engine::default()).unwrap();
        let running = ticker.running();
        let at = ticker.ticks();
        let until = Instant::now() + TICK * 20;
        while Instant::now() < until {
            drop(running.pause());
            let next = Instant::now() + Duration::from_micros(200);
            while Instant::now() < next {
                std::hint::spin_loop();
            }
        }
        let fast = ticker.ticks() - at;
        assert!(fast >= 8, "{fast} ticks in 20 TICKs");
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
