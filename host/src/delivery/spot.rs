//! Work begun in the caller's own future that must finish even if that future is
//! dropped: the first attempt of an answer or a heartbeat, on the spot.

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// Runs `work` on the caller's own future until `told` says how it went, then lets
/// what is left of it (an answer's retries) go on in a task of its own, as it does if the
/// caller's future is dropped first (a deadline, an abort): nothing cuts a request off
/// halfway, and the common case (one attempt, accepted) costs no task and no hand-off.
pub(super) async fn on_the_spot<T>(
    work: impl Future<Output = ()> + Send + 'static,
    mut told: oneshot::Receiver<T>,
) -> Result<T, oneshot::error::RecvError> {
    let mut work = Detached(Some(Box::pin(work)));
    std::future::poll_fn(|cx| {
        if let Some(running) = work.0.as_mut()
            && running.as_mut().poll(cx).is_ready()
        {
            work.0 = None;
        }
        std::pin::Pin::new(&mut told).poll(cx)
    })
    .await
}

/// Work that must finish: spawned, if it has not, when dropped.
struct Detached(Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>>);

impl Drop for Detached {
    fn drop(&mut self) {
        if let Some(rest) = self.0.take()
            && let Ok(runtime) = Handle::try_current()
        {
            runtime.spawn(rest);
        }
    }
}
