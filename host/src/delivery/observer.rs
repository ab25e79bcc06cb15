//! What becomes of a task's answer and heartbeats, as one stream of [`DeliveryEvent`]s
//! told to the delivery's one [`DeliveryObserver`]: the `task:*` events, the outbox's
//! bookkeeping and the tests all listen there. Observers compose ([`Fanout`]).

use std::sync::Arc;
use std::time::Duration;

use crate::outcome::{Answer, Answerer, HeartbeatSource, HostFailure};
use crate::sfn::SfnError;

/// One thing that became of a task's answer or a heartbeat, in the order the
/// [`Delivery`](super::Delivery) saw it.
#[derive(Debug, Clone, Copy)]
pub enum DeliveryEvent<'a> {
    /// `answer` is recorded as the task's, given `by` the guest or the host, before its
    /// first attempt.
    Answering {
        /// The answer.
        answer: &'a Answer,
        /// Who gave it.
        by: Answerer,
    },
    /// An attempt failed with a transient error; the next one follows in `delay`.
    Retrying {
        /// The attempt that failed (the first is 1).
        attempt: u32,
        /// How it failed.
        error: &'a SfnError,
        /// The wait before the next attempt.
        delay: Duration,
    },
    /// Step Functions refused an attempt for good (`error` is an
    /// [`SfnError::Rejected`]): a guest's answer is then no answer, and the host's is
    /// followed by the bare failure.
    Refused {
        /// The answer refused.
        answer: &'a Answer,
        /// What Step Functions said.
        error: &'a SfnError,
    },
    /// The answer was delivered.
    Delivered {
        /// The answer.
        answer: &'a Answer,
        /// How it got there.
        how: Delivered,
    },
    /// Step Functions said the task is closed (timed out, stopped, or already
    /// answered): the answer will not be delivered.
    Closed {
        /// The answer.
        answer: &'a Answer,
        /// What Step Functions said.
        reason: &'a str,
    },
    /// The delivery gave the answer up without an answer from Step Functions: out of
    /// retries through an outage, or the host stopped. Step Functions may still take it
    /// (an outbox keeps it for the next start).
    GaveUp {
        /// The answer.
        answer: &'a Answer,
        /// Why.
        reason: &'a str,
    },
    /// The host's answer was refused to the last (after the bare failure, or being the
    /// bare failure): it will not be delivered.
    Undelivered {
        /// The answer.
        answer: &'a Answer,
        /// Why.
        reason: &'a str,
    },
    /// A heartbeat was delivered.
    HeartbeatSent {
        /// Whose it was.
        source: HeartbeatSource,
    },
    /// Step Functions closed the task under a running guest (a heartbeat was refused):
    /// the guest is being cancelled, and nothing can be answered.
    Cancelled {
        /// What Step Functions said.
        reason: &'a str,
    },
    /// A handler error, when it happens: before the host sends its own failure for it,
    /// or when the guest tries to answer twice.
    Errored {
        /// What the handler did wrong.
        error: &'a TaskError,
    },
}

/// Hears everything that becomes of one task's answer and heartbeats, synchronously and
/// in order, from the task's [`Delivery`](super::Delivery). It must not block: the
/// delivery (and the guest's call) waits for it.
pub trait DeliveryObserver: Send + Sync {
    /// One event.
    fn observe(&self, event: &DeliveryEvent<'_>);
}

/// Observes nothing: a delivery no one listens to (`invoke`, benchmarks).
#[derive(Debug, Default, Clone, Copy)]
pub struct Unobserved;

impl DeliveryObserver for Unobserved {
    fn observe(&self, _event: &DeliveryEvent<'_>) {}
}

/// Several observers as one: each event goes to each, in their order.
#[derive(Default, Clone)]
pub struct Fanout(Vec<Arc<dyn DeliveryObserver>>);

impl Fanout {
    /// The observers `observers`, told in this order.
    pub fn new(observers: impl IntoIterator<Item = Arc<dyn DeliveryObserver>>) -> Self {
        Self(observers.into_iter().collect())
    }
}

impl DeliveryObserver for Fanout {
    fn observe(&self, event: &DeliveryEvent<'_>) {
        for observer in &self.0 {
            observer.observe(event);
        }
    }
}

/// How an answer reached Step Functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Attempts it took, this one included.
    pub attempts: u32,
    /// An earlier attempt timed out and a later one was refused as closed: the timed-out
    /// attempt most likely went through.
    pub probably: bool,
}

/// Something a handler did wrong, as told in [`DeliveryEvent::Errored`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    /// The handler did not answer properly; the host answers with this failure (unless
    /// an answer was already given, which stands).
    #[error("{0}")]
    Failed(HostFailure),
    /// The handler tried to answer a task that already had an answer.
    #[error("the handler answered twice; the first answer stands")]
    AlreadyResponded,
}

impl TaskError {
    /// The error name alone (`SfnWasmHost.Trap`), without the cause: what may be logged
    /// at `info` and above.
    pub fn name(&self) -> &'static str {
        match self {
            TaskError::Failed(failure) => failure.name(),
            TaskError::AlreadyResponded => "already-responded",
        }
    }
}
