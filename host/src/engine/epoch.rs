//! The epoch clock: a plain OS thread that advances the engine's epoch every [`TICK`].
//!
//! Every running guest checks its deadline and its abort flag each time the epoch
//! advances, so a guest stuck in `loop {}` is stopped within one tick. The clock is a
//! thread rather than a tokio task so that a runtime kept busy by guests cannot delay it.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the epoch advances: the longest a running guest goes without checking its
/// deadline and abort flag, and the longest it holds a runtime thread without yielding.
pub const TICK: Duration = Duration::from_millis(10);

/// Advances an engine's epoch every [`TICK`] until dropped; the thread is joined on drop.
pub struct EpochTicker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    /// Starts the ticker thread for `engine`.
    pub fn start(engine: wasmtime::Engine) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sfn-wasm-epoch".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(TICK) {
                    engine.increment_epoch();
                }
            })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
