//! What one task may make the host do on its behalf, counted against that task.
//!
//! A guest is an adversary: anything it can make the host hold or write must be bounded
//! per task, or one handler's tasks can cost every other activity on the host. The
//! engine and the outbound hook each count what they hold; what they share lives here.
//! [`LineBudget`] is the task's one rate limit on log lines: its stdout and stderr and
//! the host's own lines it causes (`outbound:denied`, `outbound:aws`) draw from the same
//! token bucket, and what is dropped is counted and reported once, at `task:done`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Log lines a task may cause per second, once its burst is spent.
pub const LINES_PER_SECOND: f64 = 100.0;
/// Log lines a task may cause at once.
pub const LINE_BURST: f64 = 1000.0;

/// One task's log-line rate limit (a token bucket), shared by its streams and the host
/// lines it causes; counts the lines it dropped.
#[derive(Debug)]
pub struct LineBudget {
    bucket: Mutex<Bucket>,
    dropped: AtomicU64,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl Default for LineBudget {
    fn default() -> Self {
        Self {
            bucket: Mutex::new(Bucket {
                tokens: LINE_BURST,
                refilled: Instant::now(),
            }),
            dropped: AtomicU64::new(0),
        }
    }
}

impl LineBudget {
    /// Takes one line from the bucket: true when it may be logged; false (and counted as
    /// dropped) when the task has spent its rate.
    pub fn take(&self) -> bool {
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let earned = now.duration_since(bucket.refilled).as_secs_f64() * LINES_PER_SECOND;
        bucket.tokens = (bucket.tokens + earned).min(LINE_BURST);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Counts a line dropped for another reason (a stream's byte budget).
    pub fn drop_line(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// The lines dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_and_the_rest_counted() {
        let budget = LineBudget::default();
        let taken = (0..5000).filter(|_| budget.take()).count();
        assert!(
            (LINE_BURST as usize..LINE_BURST as usize + 50).contains(&taken),
            "{taken}"
        );
        assert_eq!(budget.dropped(), 5000 - taken as u64);
        budget.drop_line();
        assert_eq!(budget.dropped(), 5001 - taken as u64);
    }
}
