//! Where a guest that computes runs: threads of their own, apart from the host's I/O.
//!
//! Most guests answer in microseconds, and most of a task is I/O: the poll, the answer,
//! timers. On one thread that I/O costs least: a second runtime thread that has no work
//! only parks, and every task or timer the busy one wakes may wake it to steal the work
//! (an `eventfd` write and a context switch each way; ~100 µs of CPU per task at 4 task
//! slots on 2 cores, `BENCHMARKS.md`). But a guest that computes for milliseconds needs
//! the other cores, and must not hold the thread the polls and heartbeats run on.
//!
//! So each task's guest starts where the task is (no hand-off for the guests that answer
//! within their first epoch tick), and the first time a tick finds it computing (half a
//! tick of CPU in one poll of its future, or two ticks' in all: `task.rs`), its future
//! moves to this pool's runtime, one thread per core, where it runs to its end beside the
//! other guests that compute, still yielding at every tick. A move is one cross-thread
//! hand-off, paid once, by a guest that has already computed for milliseconds.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;

use crate::cpu::CpuMeter;

/// The name of the pool's threads, as `ps -L` and `/proc/PID/task/*/comm` show them.
pub const THREAD_NAME: &str = "sfn-wasm-guest";

/// The runtime guests move to once a tick finds them computing; started at the first
/// move.
pub(crate) struct GuestThreads {
    threads: usize,
    runtime: OnceLock<Option<Runtime>>,
    /// Guests moved so far.
    moved: AtomicU64,
}

impl GuestThreads {
    /// A pool of `threads` threads; `0`: guests stay where their tasks run.
    pub(crate) fn new(threads: usize) -> Self {
        Self {
            threads,
            runtime: OnceLock::new(),
            moved: AtomicU64::new(0),
        }
    }

    /// How many guests have moved to the pool's threads so far.
    pub(crate) fn moved(&self) -> u64 {
        self.moved.load(Ordering::Relaxed)
    }

    /// The pool's runtime, started now if this is the first move; `None` when there is
    /// no pool, or its threads could not start (logged once: guests then stay where their
    /// tasks run, as with `0`).
    fn handle(&self) -> Option<Handle> {
        if self.threads == 0 {
            return None;
        }
        self.runtime
            .get_or_init(|| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(self.threads)
                    .thread_name(THREAD_NAME)
                    .enable_all()
                    .build()
                    .inspect_err(|err| {
                        tracing::warn!(
                            error = %err,
                            "cannot start the guest threads; guests that compute run on the runtime's threads"
                        );
                    })
                    .ok()
            })
            .as_ref()
            .map(|runtime| runtime.handle().clone())
    }

    /// Runs `task` here until `cpu` says a tick found the guest computing (the epoch
    /// callback notes it) and the task waits, then on the pool's threads.
    ///
    /// # Panics
    /// Resumes a panic of `task`'s on the caller's thread, as if it had stayed.
    pub(crate) async fn run<F>(&self, cpu: Arc<CpuMeter>, task: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        if self.threads == 0 {
            return task.await;
        }
        let task = match (Here {
            task: Some(Box::pin(task)),
            cpu,
        })
        .await
        {
            Ok(output) => return output,
            Err(task) => task,
        };
        let Some(runtime) = self.handle() else {
            return task.await;
        };
        self.moved.fetch_add(1, Ordering::Relaxed);
        let mut moved = Moved(runtime.spawn(task));
        match (&mut moved.0).await {
            Ok(output) => output,
            Err(err) => match err.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                // Only `Moved`'s own abort cancels it, and that drops this future first;
                // the pool's runtime lives as long as the engine, which this borrows.
                Err(err) => std::panic::resume_unwind(Box::new(format!(
                    "a guest's task on the guest threads ended without its output: {err}"
                ))),
            },
        }
    }
}

impl Drop for GuestThreads {
    fn drop(&mut self) {
        // Dropped from async code (the host's engine goes with its last task): a plain
        // drop would block on the pool's threads, which tokio refuses there.
        if let Some(Some(runtime)) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Polls the task on the caller's thread: its output, or the task itself once it waits
/// after a tick found it computing (`Err`), to be moved.
struct Here<T> {
    task: Option<Pin<Box<T>>>,
    cpu: Arc<CpuMeter>,
}

impl<T: Future> Future for Here<T> {
    type Output = Result<T::Output, Pin<Box<T>>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(mut task) = self.task.take() else {
            return Poll::Pending;
        };
        match task.as_mut().poll(cx) {
            Poll::Ready(output) => Poll::Ready(Ok(output)),
            Poll::Pending if self.cpu.computes() => Poll::Ready(Err(task)),
            Poll::Pending => {
                self.task = Some(task);
                Poll::Pending
            }
        }
    }
}

/// A moved task, aborted if its caller stops waiting for it (the host dropped the task's
/// future): the guest must not run on with nobody to answer for it.
struct Moved<T>(JoinHandle<T>);

impl<T> Drop for Moved<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
