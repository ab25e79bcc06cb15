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
use std::time::Duration;

/// Runs `future` to completion, adding the thread CPU time spent in its polls to `spent`.
pub async fn timed<F: Future>(future: F, spent: &mut Duration) -> F::Output {
    let mut future = pin!(future);
    std::future::poll_fn(|cx| {
        let before = thread_cpu();
        let poll = future.as_mut().poll(cx);
        *spent += thread_cpu().saturating_sub(before);
        poll
    })
    .await
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
        let mut spent = Duration::ZERO;
        timed(
            async {
                // 50 ms of this thread's CPU, however long the machine makes it take.
                let start = thread_cpu();
                while thread_cpu() - start < Duration::from_millis(50) {
                    std::hint::black_box(0u64);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            },
            &mut spent,
        )
        .await;
        // The 200 ms asleep must not count.
        assert!(
            spent >= Duration::from_millis(50) && spent < Duration::from_millis(150),
            "{spent:?}"
        );
    }
}
