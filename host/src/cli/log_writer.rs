//! The log writer: log lines go into a bounded buffer, and a thread of their own writes
//! the buffer out in batches, at most every [`BATCH`].
//!
//! Why not `tracing_appender::non_blocking`: it hands every line to its thread through a
//! channel, which wakes the thread (a context switch) and writes (a syscall) per line;
//! with three lines per task that was most of the host's context switches and 30–45 µs
//! of CPU per task (the e2e bench's thread table). Batching costs a line at most
//! [`BATCH`] of delay. What stays the same: a stalled log pipe never stops polls, answers
//! or heartbeats (lines past [`MAX_BUFFERED_BYTES`] are dropped and counted, and the
//! count is written once the pipe moves again), and the guard flushes at exit.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the writer gathers lines before it writes them out: the most a line waits.
/// Each batch costs the thread two wake-ups (the first line's, the end of the gathering);
/// at 10 ms, tasks a few tens of milliseconds apart (against LocalStack) spread their
/// lines over 2–3 batches each, 4.1–4.8 wake-ups a task; at 50 ms, 2.6–3.4 (the e2e
/// bench's thread columns, `BENCHMARKS.md`).
pub const BATCH: Duration = Duration::from_millis(50);
/// The most bytes held for a slow reader; lines past it are dropped (and counted).
pub const MAX_BUFFERED_BYTES: usize = 16 << 20;
/// How long the guard waits at exit for what is buffered to be written.
const FLUSH_AT_EXIT: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Buffer {
    bytes: Vec<u8>,
    dropped: u64,
    /// The writer thread waits for a line: only then does a line need to wake it.
    idle: bool,
    stop: bool,
    done: bool,
}

#[derive(Default)]
struct Shared {
    buffer: Mutex<Buffer>,
    /// Wakes the writer (a first line, or the stop).
    wake: Condvar,
    /// Tells the guard the writer has written everything and stopped.
    finished: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Buffer> {
        // A buffer of bytes and counters: whole even if a holder panicked.
        self.buffer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Where the fmt layer writes lines: cheap to clone, never blocks on the output.
#[derive(Clone)]
pub struct BatchedWriter {
    shared: Arc<Shared>,
}

/// Stops the writer thread when dropped, after it has written what is buffered (waiting
/// at most a second: a stalled pipe must not hold the exit).
pub struct LogGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the writer thread (`sfn-wasm-log`) writing to `sink`.
///
/// # Errors
/// When the thread cannot be started.
pub fn start(sink: Box<dyn Write + Send>) -> std::io::Result<(BatchedWriter, LogGuard)> {
    let shared = Arc::new(Shared::default());
    let writer = shared.clone();
    let thread = std::thread::Builder::new()
        .name("sfn-wasm-log".into())
        .spawn(move || write_out(&writer, sink))?;
    Ok((
        BatchedWriter {
            shared: shared.clone(),
        },
        LogGuard {
            shared,
            thread: Some(thread),
        },
    ))
}

/// The writer thread: waits for a line, gathers for [`BATCH`], writes everything.
fn write_out(shared: &Shared, mut sink: Box<dyn Write + Send>) {
    let mut batch = Vec::new();
    loop {
        let (dropped, stop) = {
            let mut buffer = shared.lock();
            while buffer.bytes.is_empty() && buffer.dropped == 0 && !buffer.stop {
                buffer.idle = true;
                buffer = shared
                    .wake
                    .wait(buffer)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                buffer.idle = false;
            }
            if !buffer.stop {
                drop(buffer);
                std::thread::sleep(BATCH);
                buffer = shared.lock();
            }
            std::mem::swap(&mut batch, &mut buffer.bytes);
            (std::mem::take(&mut buffer.dropped), buffer.stop)
        };
        // A failed write has nowhere to be reported; the next batch tries again.
        let _ = sink.write_all(&batch);
        if dropped > 0 {
            let _ = writeln!(
                sink,
                "sfn-wasm-host: the log output was too slow; {dropped} log lines were dropped"
            );
        }
        let _ = sink.flush();
        batch.clear();
        if stop {
            let mut buffer = shared.lock();
            if buffer.bytes.is_empty() {
                buffer.done = true;
                shared.finished.notify_all();
                return;
            }
        }
    }
}

impl Write for BatchedWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut buffer = self.shared.lock();
        if buffer.bytes.len() + line.len() > MAX_BUFFERED_BYTES {
            buffer.dropped += 1;
        } else {
            buffer.bytes.extend_from_slice(line);
            if buffer.idle {
                buffer.idle = false;
                self.shared.wake.notify_one();
            }
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchedWriter {
    type Writer = BatchedWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        let mut buffer = self.shared.lock();
        buffer.stop = true;
        self.shared.wake.notify_one();
        let (buffer, _) = self
            .shared
            .finished
            .wait_timeout_while(buffer, FLUSH_AT_EXIT, |b| !b.done)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let done = buffer.done;
        drop(buffer);
        if done && let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink the test can read, or hold still.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_are_written_in_order_and_flushed_at_exit() {
        let sink = Sink::default();
        let (mut writer, guard) = start(Box::new(sink.clone())).unwrap();
        for n in 0..1000 {
            writer.write_all(format!("line {n}\n").as_bytes()).unwrap();
        }
        drop(guard);
        let written = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = written.lines().collect();
        assert_eq!(lines.len(), 1000);
        assert_eq!(lines[999], "line 999");
    }

    #[test]
    fn a_stalled_output_drops_and_counts_lines_instead_of_blocking() {
        let sink = Sink::default();
        let held = sink.0.lock().unwrap();
        let (mut writer, guard) = start(Box::new(sink.clone())).unwrap();
        let line = vec![b'x'; 1 << 20];
        // The writer takes the first batch and blocks on the held sink; the buffer then
        // fills and the rest are dropped, and no write blocks.
        writer.write_all(&line).unwrap();
        std::thread::sleep(BATCH * 5);
        for _ in 0..40 {
            writer.write_all(&line).unwrap();
        }
        assert!(writer.shared.lock().dropped > 0);
        drop(held);
        drop(guard);
        let written = String::from_utf8_lossy(&sink.0.lock().unwrap()).into_owned();
        assert!(
            written.contains("log lines were dropped"),
            "{}",
            &written[written.len().saturating_sub(200)..]
        );
    }
}
