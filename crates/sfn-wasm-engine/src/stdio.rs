//! A guest's stdout and stderr, turned into `tracing` events that carry the task id.
//!
//! Output is emitted line by line as the guest writes it, so a long task's logs show up
//! while it runs. A guest cannot flood the host: lines are cut at [`MAX_LINE_BYTES`],
//! each stream logs at most [`MAX_LOGGED_BYTES`] per task, and the task's lines (both
//! streams and the host lines it causes) share one rate limit, the task's
//! [`LineBudget`]: [`LINES_PER_SECOND`](crate::budget::LINES_PER_SECOND) a second after a
//! burst of [`LINE_BURST`](crate::budget::LINE_BURST).
//! The log writer itself never blocks the task (see the CLI's logging setup). Writes never fail (a failing
//! `println!` would panic the guest); what is over budget is dropped and counted. The end
//! of stderr is kept so a panic message can go into the failure's cause.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

use crate::budget::LineBudget;

/// The longest line logged as one event; longer lines are cut.
pub const MAX_LINE_BYTES: usize = 8 * 1024;
/// The most each stream of one task logs; the rest is dropped.
pub const MAX_LOGGED_BYTES: usize = 1024 * 1024;
/// How much of the end of stderr is kept for the failure cause.
const TAIL_BYTES: usize = 4 * 1024;

/// Which of the guest's streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output, logged at INFO.
    Stdout,
    /// Standard error, logged at WARN.
    Stderr,
}

/// One stream of one task. Clones share the same buffer.
#[derive(Clone)]
pub struct GuestOutput {
    capture: Arc<Mutex<Capture>>,
}

struct Capture {
    stream: Stream,
    task_id: Arc<str>,
    line: Vec<u8>,
    logged: usize,
    dropped: usize,
    tail: Vec<u8>,
    /// The task's rate limit on log lines, shared with its other stream and the host
    /// lines it causes.
    lines: Arc<LineBudget>,
}

impl GuestOutput {
    /// A stream of task `task_id`, whose lines count against `lines`.
    pub fn new(stream: Stream, task_id: Arc<str>, lines: Arc<LineBudget>) -> Self {
        let capture = Capture {
            stream,
            task_id,
            line: Vec::new(),
            logged: 0,
            dropped: 0,
            tail: Vec::new(),
            lines,
        };
        Self {
            capture: Arc::new(Mutex::new(capture)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Capture> {
        // A panic while holding this lock can only come from tracing itself; the
        // buffer is still consistent, so carry on with it.
        self.capture
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Logs what is left of a last line without a newline and reports dropped output.
    /// Returns the end of the stream (up to 4 KiB), for failure causes.
    pub fn finish(&self) -> String {
        let mut capture = self.lock();
        if !capture.line.is_empty() {
            let line = std::mem::take(&mut capture.line);
            capture.emit(&line);
        }
        if capture.dropped > 0 {
            tracing::warn!(
                target: "guest",
                task_id = %capture.task_id,
                stream = capture.stream.name(),
                dropped_bytes = capture.dropped,
                "guest output over the per-task budget was dropped"
            );
            capture.dropped = 0;
        }
        let start = capture.tail.len().saturating_sub(TAIL_BYTES);
        String::from_utf8_lossy(&capture.tail[start..])
            .trim()
            .to_owned()
    }

    fn write_bytes(&self, bytes: &[u8]) {
        let mut capture = self.lock();
        capture.keep_tail(bytes);
        for chunk in bytes.split_inclusive(|&b| b == b'\n') {
            let (body, complete) = match chunk.strip_suffix(b"\n") {
                Some(body) => (body, true),
                None => (chunk, false),
            };
            let room = MAX_LINE_BYTES.saturating_sub(capture.line.len());
            capture
                .line
                .extend_from_slice(&body[..body.len().min(room)]);
            if complete || capture.line.len() >= MAX_LINE_BYTES {
                let line = std::mem::take(&mut capture.line);
                capture.emit(&line);
            }
        }
    }
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

impl Capture {
    fn emit(&mut self, line: &[u8]) {
        if self.logged + line.len() > MAX_LOGGED_BYTES {
            self.dropped += line.len();
            self.lines.drop_line();
            return;
        }
        if !self.lines.take() {
            self.dropped += line.len();
            return;
        }
        self.logged += line.len();
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        if text.is_empty() {
            return;
        }
        match self.stream {
            Stream::Stdout => {
                tracing::info!(target: "guest", task_id = %self.task_id, stream = "stdout", "{text}")
            }
            Stream::Stderr => {
                tracing::warn!(target: "guest", task_id = %self.task_id, stream = "stderr", "{text}")
            }
        }
    }

    fn keep_tail(&mut self, bytes: &[u8]) {
        if self.stream != Stream::Stderr {
            return;
        }
        self.tail
            .extend_from_slice(&bytes[bytes.len().saturating_sub(TAIL_BYTES)..]);
        if self.tail.len() > 2 * TAIL_BYTES {
            let excess = self.tail.len() - TAIL_BYTES;
            self.tail.drain(..excess);
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

#[async_trait::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::LINE_BURST;

    #[test]
    fn keeps_the_end_of_stderr_and_cuts_long_lines() {
        let err = GuestOutput::new(Stream::Stderr, "t1".into(), Arc::default());
        err.write_bytes(b"first line\npanicked at src/lib.rs:1:1:\nboom");
        err.write_bytes(&vec![b'x'; 3 * MAX_LINE_BYTES]);
        let tail = err.finish();
        assert!(tail.ends_with(&"x".repeat(100)));
        assert!(tail.len() <= TAIL_BYTES);
        assert!(err.lock().line.is_empty());

        let err = GuestOutput::new(Stream::Stderr, "t2".into(), Arc::default());
        err.write_bytes(b"panicked at src/lib.rs:1:1:\nboom\n");
        assert_eq!(err.finish(), "panicked at src/lib.rs:1:1:\nboom");
    }

    #[test]
    fn lines_past_the_rate_are_dropped() {
        let out = GuestOutput::new(Stream::Stdout, "t".into(), Arc::default());
        for _ in 0..5000 {
            out.write_bytes(b"short\n");
        }
        let capture = out.lock();
        // In bytes: five per line (the newline is not logged).
        assert!(
            capture.logged <= 5 * (LINE_BURST as usize + 10),
            "{}",
            capture.logged
        );
        assert!(capture.dropped >= 5 * 3900, "{}", capture.dropped);
    }

    #[test]
    fn output_over_budget_is_dropped_not_failed() {
        let out = GuestOutput::new(Stream::Stdout, "t".into(), Arc::default());
        let line = [b'y'; 1000];
        for _ in 0..2000 {
            out.write_bytes(&line);
            out.write_bytes(b"\n");
        }
        let capture = out.lock();
        assert!(capture.logged <= MAX_LOGGED_BYTES);
        assert!(capture.dropped > 0);
    }
}
