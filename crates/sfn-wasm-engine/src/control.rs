//! How the host stops a task early: the two tokens every layer that runs or answers a
//! task passes down. A leaf, so that the engine (which obeys them) and the delivery
//! (which pulls them when Step Functions closes a task) need not know each other.

use tokio_util::sync::CancellationToken;

/// How the host stops a task early.
///
/// `cancel` is the polite request: the guest's `cancelled()` turns true and it may answer
/// by itself. `abort` is the order: the guest is stopped within one epoch tick, even in
/// `loop {}`, and the task is answered `SfnWasmHost.Shutdown`. Make them children of
/// process-wide tokens to stop every task at once.
#[derive(Debug, Clone, Default)]
pub struct TaskControl {
    /// Turns the guest's `cancelled()` true.
    pub cancel: CancellationToken,
    /// Stops the guest.
    pub abort: CancellationToken,
}

impl TaskControl {
    /// A task's own tokens, cancelled with `parent`'s (the process-wide ones).
    pub fn child_of(parent: &TaskControl) -> Self {
        Self {
            cancel: parent.cancel.child_token(),
            abort: parent.abort.child_token(),
        }
    }
}
