//! The outbox's side of a live (or recovered) task: its transport writes the task's
//! answer to the outbox before each attempt, and its observer of the delivery removes
//! the entry once the answer is settled.

use async_trait::async_trait;

use super::*;

pub(super) struct Written {
    pub(super) status: String,
    pub(super) size: u64,
}

/// A live task's idempotency claim, as its outbox entry knows it.
pub(super) enum ClaimState {
    /// No claim (or not yet known).
    None,
    /// The task holds this claim: entries carry it, and a settled answer's entry stays
    /// until the claim is settled too ([`Kept::finished`]), so that a host killed in
    /// between still settles it at the next start.
    Held(ClaimRef),
    /// The answer settled while the claim was held: the entry goes at `finished`.
    SettledAnswer,
}

/// A task's answers kept in the outbox (see [`Outbox::keep`]): a transport to deliver
/// through and an observer to tell, which share the task's entry.
pub struct Kept(pub(super) Arc<KeptEntry>);

impl Kept {
    /// The transport to deliver through: the task's own, after the entry is written.
    pub fn transport(&self) -> Arc<dyn Transport> {
        self.0.clone()
    }

    /// The observer to tell what became of the answer: it removes a settled answer's
    /// entry, and leaves one given up for the next start.
    pub fn observer(&self) -> Arc<dyn DeliveryObserver> {
        self.0.clone()
    }

    /// The task holds `claim`: its entries carry it until [`Kept::finished`].
    pub fn claimed(&self, claim: &Claim) {
        *self.0.claim_lock() = ClaimState::Held(claim.to_ref());
    }

    /// Whether the answer was given up with its entry left for the next start, which
    /// then settles the task's claim (the live task must leave it alone).
    pub fn stayed(&self) -> bool {
        self.0.stayed.load(Ordering::Relaxed)
    }

    /// The task's claim is settled: a settled answer's entry can go.
    pub fn finished(&self) {
        let state = std::mem::replace(&mut *self.0.claim_lock(), ClaimState::None);
        if matches!(state, ClaimState::SettledAnswer) {
            self.0.remove_entry();
        }
    }
}

/// A task's outbox entry: written before each attempt through `inner`, removed once the
/// answer is settled.
pub(super) struct KeptEntry {
    pub(super) inner: Arc<dyn Transport>,
    pub(super) outbox: Arc<Outbox>,
    pub(super) name: String,
    pub(super) token: String,
    pub(super) activity: String,
    pub(super) task_id: String,
    pub(super) handler_digest: String,
    /// The entry on disk, if any: which answer, and its size.
    pub(super) written: Mutex<Option<Written>>,
    /// The answer being sent is the guest's.
    pub(super) guest: std::sync::atomic::AtomicBool,
    /// The answer was given up with its entry on disk, for the next start.
    pub(super) stayed: std::sync::atomic::AtomicBool,
    /// The task's idempotency claim, if it holds one.
    pub(super) claim: Mutex<ClaimState>,
}

impl KeptEntry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Written>> {
        self.written
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn claim_lock(&self) -> std::sync::MutexGuard<'_, ClaimState> {
        self.claim
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes the entry for `answer` unless it is already on disk.
    async fn ensure_written(&self, answer: &Answer) {
        let stored = EntryAnswer::from(answer);
        let status = status_of(&stored);
        if self.lock().as_ref().is_some_and(|w| w.status == status) {
            return;
        }
        let entry = Entry {
            activity: self.activity.clone(),
            task_id: self.task_id.clone(),
            handler_digest: self.handler_digest.clone(),
            written_at_ms: now_ms(),
            token: self.token.clone(),
            answer: stored,
            guest: self.guest.load(Ordering::Relaxed),
            claim: match &*self.claim_lock() {
                ClaimState::Held(claim) => Some(claim.clone()),
                _ => None,
            },
        };
        let previous = self.lock().take();
        if let Some(previous) = previous {
            self.outbox.held.fetch_sub(previous.size, Ordering::Relaxed);
        }
        if let Some(size) = self.outbox.write(&self.name, &entry).await {
            *self.lock() = Some(Written { status, size });
        }
    }

    /// The answer is settled: its entry goes, or, while the task holds a claim, once
    /// the claim is settled ([`Kept::finished`]).
    fn settled(&self) {
        {
            let mut claim = self.claim_lock();
            if matches!(*claim, ClaimState::Held(_)) {
                *claim = ClaimState::SettledAnswer;
                return;
            }
        }
        self.remove_entry();
    }

    fn remove_entry(&self) {
        let written = self.lock().take();
        if let Some(written) = written {
            self.outbox.remove(&self.name, written.size);
        }
    }
}

#[async_trait]
impl Transport for KeptEntry {
    async fn send(&self, answer: &Answer) -> Result<(), SfnError> {
        self.ensure_written(answer).await;
        self.inner.send(answer).await
    }

    async fn heartbeat(&self) -> Result<(), SfnError> {
        self.inner.heartbeat().await
    }
}

impl DeliveryObserver for KeptEntry {
    fn observe(&self, event: &DeliveryEvent<'_>) {
        match event {
            DeliveryEvent::Answering { by, .. } => {
                self.guest.store(*by == Answerer::Guest, Ordering::Relaxed);
            }
            // Refused for good: not this answer, ever (another may follow and be kept).
            DeliveryEvent::Refused { .. } => self.remove_entry(),
            // Delivered; or closed, or refused to the last: Step Functions will not take
            // it.
            DeliveryEvent::Delivered { .. }
            | DeliveryEvent::Closed { .. }
            | DeliveryEvent::Undelivered { .. } => self.settled(),
            // The host stopped, or the outage outlasted the retries: the entry stays (and
            // counts against the bound) for the next start, and so does the task's claim,
            // which the next start settles.
            DeliveryEvent::GaveUp { .. } => {
                if self.lock().take().is_some() {
                    self.stayed.store(true, Ordering::Relaxed);
                }
            }
            DeliveryEvent::Retrying { .. }
            | DeliveryEvent::HeartbeatSent { .. }
            | DeliveryEvent::Cancelled { .. }
            | DeliveryEvent::Errored { .. } => {}
        }
    }
}
