//! Per-task CPU accounting: the thread CPU time spent polling a task's future.
//!
//! A task's guest runs inside one future, polled on whichever guest-runtime thread is
//! free; between polls it waits (sleeps, host calls, outbound HTTP) and costs nothing.
//! Reading the polling thread's CPU clock before and after each poll and summing the
//! differences counts exactly the time spent running the guest and the host code it
//! calls synchronously — instantiation included — and none of the time other tasks
//! spend on the same thread. Two clock reads per poll; a task is polled a handful of
//! times, or once per epoch tick while it computes.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::epoch::TICK;

/// A task's CPU so far, shared by its future ([`timed`]), its epoch callback, which
/// asks how long the guest has been computing, and the guest threads, which move a guest
/// once a tick found it computing (see `guest_threads`).
#[derive(Debug, Default)]
pub(crate) struct CpuMeter {
    /// The CPU of the polls that ended, in nanoseconds.
    spent: AtomicU64,
    /// The polling thread's CPU clock when the current poll began, in nanoseconds.
    poll_began: AtomicU64,
    /// A tick found the guest computing ([`CpuMeter::note_tick`]).
    computes: AtomicBool,
}

impl CpuMeter {
    /// The CPU of the task's polls so far.
    pub(crate) fn spent(&self) -> Duration {
        Duration::from_nanos(self.spent.load(Ordering::Relaxed))
    }

    /// Called by the epoch callback, from within a poll: notes that the guest computes
    /// if it has had half a tick of CPU in this poll (no wait since), or two ticks' in
    /// all. Not a guest the tick merely found back in its own code after a wait the tick
    /// fell in (its answer on the wire, an HTTP response), which is most quick guests'
    /// only tick.
    pub(crate) fn note_tick(&self) {
        let this_poll = nanos(thread_cpu()).saturating_sub(self.poll_began.load(Ordering::Relaxed));
        let this_poll = Duration::from_nanos(this_poll);
        if this_poll >= TICK / 2 || self.spent() + this_poll >= 2 * TICK {
            self.computes.store(true, Ordering::Relaxed);
        }
    }

    /// Whether a tick found the guest computing.
    pub(crate) fn computes(&self) -> bool {
        self.computes.load(Ordering::Relaxed)
    }
}

/// Runs `future` to completion, adding the thread CPU time spent in its polls to `meter`.
pub(crate) async fn timed<F: Future>(future: F, meter: &CpuMeter) -> F::Output {
    let mut future = pin!(future);
    std::future::poll_fn(|cx| {
        let before = nanos(thread_cpu());
        meter.poll_began.store(before, Ordering::Relaxed);
        let poll = future.as_mut().poll(cx);
        let spent = nanos(thread_cpu()).saturating_sub(before);
        meter.spent.fetch_add(spent, Ordering::Relaxed);
        poll
    })
    .await
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// The calling thread's CPU time (user + system).
///
/// Through libc's `clock_gettime`, not rustix's: rustix finds the clock through the vDSO
/// it parses itself, which valgrind does not map (rustix issue #1559), so the host could
/// not run under callgrind (`scripts/bench-callgrind.sh`). A thread CPU clock is a
/// system call either way (the vDSO serves only the wall clocks).
fn thread_cpu() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec for the duration of the call, and
    // CLOCK_THREAD_CPUTIME_ID is a clock every Linux has; on failure `now` stays zero.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut now) };
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_work_in_polls_and_not_waits() {
        let meter = CpuMeter::default();
        timed(
            async {
                // 50 ms of this thread's CPU, however long the machine makes it take.
                let start = thread_cpu();
                while thread_cpu() - start < Duration::from_millis(50) {
                    std::hint::black_box(0u64);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            },
            &meter,
        )
        .await;
        let spent = meter.spent();
        // The 200 ms asleep must not count.
        assert!(
            spent >= Duration::from_millis(50) && spent < Duration::from_millis(150),
            "{spent:?}"
        );
    }
}
