//! Answer delivery: from the moment a task's answer is accepted, the host owns it.
//!
//! A guest's `success`/`failure` (once validated) and the host's own failures go through
//! the task's [`Delivery`]. It records the answer first, then sends it: the guest's on
//! the spot, in the guest's own call, the host's from a task of its own. Whatever is left
//! of a delivery when the guest's call returns (retries) or is dropped (a deadline, an
//! abort) goes on in a task of its own, so nothing cuts a request off halfway.
//! Transient errors (network, 5xx, throttling) are retried with exponential backoff and
//! jitter until the answer is delivered, Step Functions says the task is closed, or the
//! retry budget (`[host] answer_retry_seconds`) runs out. A retry refused as closed after
//! an attempt that timed out most likely means that attempt went through: it counts as
//! delivered, marked "probably".
//!
//! What the host accounts for is what Step Functions accepted. An answer it refuses for
//! good (a final error code: `InvalidOutput`, `KmsAccessDeniedException`...) is no
//! answer: the guest's call returns `unavailable` with the code and message, and the
//! guest may answer again; a guest that returns without another gets the host's
//! `SfnWasmHost.AnswerRefused`, which says what was refused. A refused answer of the
//! host's own is followed, once, by a failure with neither error nor cause, which needs
//! no KMS permission.
//!
//! Heartbeats go through the delivery too. The guest's are coalesced (at most one request
//! per [`MIN_HEARTBEAT_INTERVAL`]), and one refused as closed means Step Functions has closed
//! the task (timed out, stopped): the guest's `cancelled()` turns true, it is aborted after
//! the activity's `cancel_grace_seconds`, and no answer is sent, since none can be.
//!
//! The [`Transport`] underneath only sends: one attempt per call, to Step Functions in
//! `serve`, nowhere in `invoke`. What becomes of the answer and the heartbeats is told,
//! as one stream of [`DeliveryEvent`]s, to the delivery's one [`DeliveryObserver`] (in
//! `serve`, the `task:*` events and the outbox). A `Delivery` is the engine's
//! [`AnswerSink`](sfn_wasm_engine::AnswerSink) for its task, and records who gave the answer
//! ([`Answerer`]), so that what a task came to never depends on an error's name.

mod observer;
mod spot;
mod state;
#[cfg(test)]
mod tests;
mod transport;

pub use observer::{Delivered, DeliveryEvent, DeliveryObserver, Fanout, TaskError, Unobserved};
pub use state::AnswerState;
pub use transport::{LocalTransport, Transport};
// Where the heartbeat calls' type lived before it moved to `outcome` (events name it too).
use sfn_wasm_engine::AnswerSink;
use sfn_wasm_engine::control::TaskControl;

pub use crate::outcome::HeartbeatSource;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::runtime::Handle;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::spot::on_the_spot;
use crate::outcome::{Answer, AnswerError, Answerer, HostFailure};
use crate::sfn::SfnError;

/// At most one heartbeat request per task this often; more calls return `ok` at once.
pub const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// The wait before the first retry of an answer; it doubles up to [`MAX_RETRY_DELAY`].
pub const FIRST_RETRY_DELAY: Duration = Duration::from_millis(200);
/// The longest wait between two attempts, so that an answer goes out soon after an
/// outage ends.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

/// How deliveries behave; shared by every task of an activity.
#[derive(Debug, Clone)]
pub struct DeliveryOptions {
    /// How long an answer is retried through transient errors.
    pub retry_for: Duration,
    /// How long a guest whose task was closed may run on before it is aborted.
    pub cancel_grace: Duration,
    /// Cancelled at the end of a shutdown: deliveries still retrying give up.
    pub give_up: CancellationToken,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        Self {
            retry_for: Duration::from_secs(600),
            cancel_grace: Duration::from_secs(5),
            give_up: CancellationToken::new(),
        }
    }
}

/// One task's answer and heartbeats. Cheap to clone; clones share the task.
#[derive(Clone)]
pub struct Delivery {
    inner: Arc<Inner>,
}

struct Inner {
    transport: Arc<dyn Transport>,
    observer: Arc<dyn DeliveryObserver>,
    control: TaskControl,
    options: DeliveryOptions,
    state: Mutex<State>,
    /// Bumped whenever a delivery ends.
    settled: watch::Sender<u64>,
    /// A second answer was reported (`task:errored`): a guest that answers again in a
    /// loop is heard once, not once per call.
    second_answer_reported: std::sync::atomic::AtomicBool,
}

struct State {
    answer: AnswerState,
    /// Who gave the answer in `answer`, once there is one.
    answered_by: Option<Answerer>,
    /// Step Functions' refusal of the guest's last answer (`CODE: message`): the task
    /// has no answer, and the host's, if the guest gives no other, says why.
    refused: Option<String>,
    heartbeat_in_flight: bool,
    last_heartbeat: Option<Instant>,
}

/// What the first attempt of a delivery tells the guest.
enum FirstAttempt {
    /// Delivered (or probably).
    Delivered,
    /// Failed transiently; the retry loop has it.
    Retrying,
    /// Refused: the task is closed.
    Closed(String),
    /// Refused for another reason, or no retry budget left.
    Failed(String),
}

impl Delivery {
    /// The delivery of a task answered through `transport`, what becomes of it told to
    /// `observer`; `control` is the task's, so that a closed task can be cancelled and
    /// aborted.
    pub fn new(
        transport: Arc<dyn Transport>,
        observer: Arc<dyn DeliveryObserver>,
        control: TaskControl,
        options: DeliveryOptions,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                transport,
                observer,
                control,
                options,
                state: Mutex::new(State {
                    answer: AnswerState::Pending,
                    answered_by: None,
                    refused: None,
                    heartbeat_in_flight: false,
                    last_heartbeat: None,
                }),
                settled: watch::channel(0).0,
                second_answer_reported: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// Tells the observer.
    fn report(&self, event: &DeliveryEvent<'_>) {
        self.inner.observer.observe(event);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update leaves the state whole; a panic elsewhere must not lose an answer.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Where the answer stands now.
    pub fn state(&self) -> AnswerState {
        self.lock().answer.clone()
    }

    /// Who gave the task's answer (the one being delivered, or delivered), if it has one:
    /// the account of a task (its outcome, its record) follows this, not the answer's
    /// error name.
    pub fn answered_by(&self) -> Option<Answerer> {
        self.lock().answered_by
    }

    /// Whether the task has an answer (or can no longer have one).
    pub fn answered(&self) -> bool {
        !matches!(self.lock().answer, AnswerState::Pending)
    }

    /// The guest's `cancelled()`: the host is stopping, or Step Functions closed the task.
    pub fn cancelled(&self) -> bool {
        self.inner.control.cancel.is_cancelled()
    }

    /// Waits until no answer is being delivered.
    pub async fn settled(&self) {
        let mut settled = self.inner.settled.subscribe();
        let _ = settled
            .wait_for(|_| !matches!(self.lock().answer, AnswerState::Delivering(_)))
            .await;
    }

    /// The guest's answer: recorded, then sent. Returns once it is delivered or handed
    /// to the retry loop; [`AnswerError::TaskClosed`] when Step Functions refused it as
    /// closed; [`AnswerError::Unavailable`] with the service's code and message when it
    /// refused it for good (the task is then still unanswered, and the guest may answer
    /// again); [`AnswerError::AlreadyResponded`] when the task already had one.
    ///
    /// Dropping the returned future (a deadline, an abort) does not stop the delivery.
    pub async fn answer(&self, answer: Answer) -> Result<(), AnswerError> {
        if let Err(err) = self.record(&answer, Answerer::Guest) {
            if err == AnswerError::AlreadyResponded
                && !self
                    .inner
                    .second_answer_reported
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                self.report(&DeliveryEvent::Errored {
                    error: &TaskError::AlreadyResponded,
                });
            }
            return Err(err);
        }
        let (first, told) = oneshot::channel();
        match on_the_spot(self.clone().deliver(answer, first), told).await {
            Ok(FirstAttempt::Delivered | FirstAttempt::Retrying) => Ok(()),
            Ok(FirstAttempt::Closed(reason)) => Err(AnswerError::TaskClosed(reason)),
            Ok(FirstAttempt::Failed(reason)) => Err(AnswerError::Unavailable(reason)),
            Err(_) => Err(AnswerError::Unavailable(
                "the host is stopping; the answer could not be sent".into(),
            )),
        }
    }

    /// What went wrong with the handler, reported; and, if the task has no answer yet,
    /// the host's failure answer sent for it. An answer the guest gave stands. A guest
    /// whose answer Step Functions refused and that returned without another (or with an
    /// error) gets `SfnWasmHost.AnswerRefused` instead, which says what was refused.
    pub fn host_failure(&self, failure: &HostFailure) {
        // Looked at in place: the answer itself (up to 256 KiB) is not copied.
        let (pending, closed_unanswered, refused) = {
            let state = self.lock();
            match &state.answer {
                AnswerState::Pending => (true, false, state.refused.clone()),
                AnswerState::Closed {
                    attempted: None, ..
                } => (false, true, None),
                _ => (false, false, None),
            }
        };
        let substituted;
        let failure = match (failure, refused) {
            (HostFailure::NoResponse | HostFailure::HandlerError(_), Some(refusal)) => {
                substituted = HostFailure::AnswerRefused(refusal);
                &substituted
            }
            (failure, _) => failure,
        };
        if closed_unanswered {
            // Step Functions closed the task and the guest was stopped for it; the
            // cancellation was reported, and no answer can be sent.
            tracing::debug!(error = failure.name(), "the closed task's guest stopped");
            return;
        }
        self.report(&DeliveryEvent::Errored {
            error: &TaskError::Failed(failure.clone()),
        });
        if pending {
            self.begin(failure.answer(), Answerer::Host(failure.kind()));
        } else {
            tracing::warn!(
                error = failure.name(),
                "the handler went wrong after answering; the answer stands"
            );
        }
    }

    /// The guest has stopped: waits until the answer is settled. If Step Functions
    /// refused the guest's answer after the guest had returned (a retry found a final
    /// error), the host answers `SfnWasmHost.AnswerRefused` and waits for that.
    pub async fn conclude(&self) {
        self.settled().await;
        let refused = {
            let state = self.lock();
            match state.answer {
                AnswerState::Pending => state.refused.clone(),
                _ => None,
            }
        };
        if let Some(refusal) = refused {
            self.host_failure(&HostFailure::AnswerRefused(refusal));
            self.settled().await;
        }
    }

    /// Answers with the host's `failure` without reporting a handler error: for a task
    /// that no handler ran (it arrived while the host was stopping).
    pub fn decline(&self, failure: &HostFailure) {
        self.begin(failure.answer(), Answerer::Host(failure.kind()));
    }

    /// Records `answer`, given `by` the guest or the host, as the one being delivered;
    /// fails when the task already has one or is closed.
    fn record(&self, answer: &Answer, by: Answerer) -> Result<(), AnswerError> {
        let mut state = self.lock();
        match &state.answer {
            AnswerState::Pending => {}
            AnswerState::Closed { reason, .. } => {
                return Err(AnswerError::TaskClosed(reason.clone()));
            }
            _ => return Err(AnswerError::AlreadyResponded),
        }
        state.answer = AnswerState::Delivering(answer.clone());
        state.answered_by = Some(by);
        drop(state);
        self.report(&DeliveryEvent::Answering { answer, by });
        Ok(())
    }

    /// Delivers `answer`, given `by` the guest or the host before this process (an
    /// outbox entry found at start), from a task of its own.
    pub fn resume(&self, answer: Answer, by: Answerer) {
        self.begin(answer, by);
    }

    /// Records `answer` and delivers it from a task of its own: for the host's answers,
    /// given from code that cannot wait for them (a guest's end, a drop guard).
    fn begin(&self, answer: Answer, by: Answerer) {
        if self.record(&answer, by).is_ok() {
            let (first, _) = oneshot::channel();
            self.spawn(self.clone().deliver(answer, first));
        }
    }

    fn spawn<F>(&self, future: F) -> Option<tokio::task::JoinHandle<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        Handle::try_current()
            .ok()
            .map(|runtime| runtime.spawn(future))
    }

    /// Sends `answer` until Step Functions accepts it, closes the task, refuses it, or
    /// the retries run out. A refused answer of the guest's is not an answer: the task
    /// waits for another (see [`conclude`](Self::conclude)). A refused answer of the
    /// host's is followed by the bare failure ([`Answer::bare_failure`]), once.
    async fn deliver(self, mut answer: Answer, first: oneshot::Sender<FirstAttempt>) {
        let mut first = Some(first);
        let mut attempts = 0;
        let mut end = self.attempts(&answer, &mut attempts, &mut first).await;
        if let Ended::Refused(error) = &end
            && self.answered_by() != Some(Answerer::Guest)
            && !answer.is_bare_failure()
        {
            self.report(&DeliveryEvent::Refused {
                answer: &answer,
                error,
            });
            answer = Answer::bare_failure();
            self.lock().answer = AnswerState::Delivering(answer.clone());
            end = self.attempts(&answer, &mut attempts, &mut first).await;
        }
        // Report first, then move the answer into its final state (no copy).
        let (outcome, state, refusal) = self.ended(end, answer, attempts);
        {
            let mut locked = self.lock();
            locked.answer = state;
            if refusal.is_some() {
                // No answer now: the guest may give another.
                locked.answered_by = None;
                locked.refused = refusal;
            }
        }
        if let Some(first) = first {
            let _ = first.send(outcome);
        }
        self.inner.settled.send_modify(|n| *n += 1);
    }

    /// Tells the observer how the delivery of `answer` ended (after `attempts`); returns
    /// what the guest's call hears, the answer's final state, and the refusal of a
    /// guest's answer (which leaves the task unanswered).
    fn ended(
        &self,
        end: Ended,
        answer: Answer,
        attempts: u32,
    ) -> (FirstAttempt, AnswerState, Option<String>) {
        match end {
            Ended::Delivered { probably } => {
                let how = Delivered { attempts, probably };
                self.report(&DeliveryEvent::Delivered {
                    answer: &answer,
                    how,
                });
                (
                    FirstAttempt::Delivered,
                    AnswerState::Delivered { answer, probably },
                    None,
                )
            }
            Ended::Closed(reason) => {
                self.report(&DeliveryEvent::Closed {
                    answer: &answer,
                    reason: &reason,
                });
                (
                    FirstAttempt::Closed(reason.clone()),
                    AnswerState::Closed {
                        attempted: Some(answer),
                        reason,
                    },
                    None,
                )
            }
            Ended::Refused(error) if self.answered_by() == Some(Answerer::Guest) => {
                self.report(&DeliveryEvent::Refused {
                    answer: &answer,
                    error: &error,
                });
                let refused = error.to_string();
                (
                    FirstAttempt::Failed(refused.clone()),
                    AnswerState::Pending,
                    Some(refused),
                )
            }
            Ended::Refused(error) => {
                self.report(&DeliveryEvent::Refused {
                    answer: &answer,
                    error: &error,
                });
                let reason = error.to_string();
                self.report(&DeliveryEvent::Undelivered {
                    answer: &answer,
                    reason: &reason,
                });
                (
                    FirstAttempt::Failed(reason.clone()),
                    AnswerState::Undelivered { answer, reason },
                    None,
                )
            }
            Ended::Undelivered(reason) => {
                self.report(&DeliveryEvent::GaveUp {
                    answer: &answer,
                    reason: &reason,
                });
                (
                    FirstAttempt::Failed(reason.clone()),
                    AnswerState::Undelivered { answer, reason },
                    None,
                )
            }
        }
    }

    /// Attempts `answer`, retrying through transient errors with backoff and jitter,
    /// until it ends; tells the guest (`first`) as soon as a retry begins.
    async fn attempts(
        &self,
        answer: &Answer,
        attempts: &mut u32,
        first: &mut Option<oneshot::Sender<FirstAttempt>>,
    ) -> Ended {
        let started = Instant::now();
        let transport = &self.inner.transport;
        let give_up = &self.inner.options.give_up;
        let mut timed_out = false;
        let mut delay = FIRST_RETRY_DELAY;
        loop {
            *attempts += 1;
            let result = tokio::select! {
                biased;
                () = give_up.cancelled() => Err(None),
                result = transport.send(answer) => result.map_err(Some),
            };
            let error = match result {
                Ok(()) => return Ended::Delivered { probably: false },
                Err(None) => {
                    return Ended::Undelivered("the host stopped before it was delivered".into());
                }
                Err(Some(SfnError::TaskClosed(reason))) if timed_out => {
                    tracing::debug!(%reason, "a retry found the task closed after a timed-out attempt");
                    return Ended::Delivered { probably: true };
                }
                Err(Some(SfnError::TaskClosed(reason))) => return Ended::Closed(reason),
                Err(Some(error)) if !error.is_transient() => return Ended::Refused(error),
                Err(Some(error)) => error,
            };
            timed_out |= matches!(error, SfnError::TimedOut(_));
            // Full jitter on the upper half: spreads the retries of many tasks after an
            // outage, and never waits less than half the step.
            let wait = delay.mul_f64(0.5 + fastrand::f64() * 0.5);
            if started.elapsed() + wait > self.inner.options.retry_for {
                return Ended::Undelivered(format!(
                    "gave up after {attempts} attempts in {} s: {error}",
                    started.elapsed().as_secs()
                ));
            }
            self.report(&DeliveryEvent::Retrying {
                attempt: *attempts,
                error: &error,
                delay: wait,
            });
            if let Some(first) = first.take() {
                let _ = first.send(FirstAttempt::Retrying);
            }
            tokio::select! {
                biased;
                () = give_up.cancelled() => return Ended::Undelivered("the host stopped before it was delivered".into()),
                () = tokio::time::sleep(wait) => {}
            }
            delay = (delay * 2).min(MAX_RETRY_DELAY);
        }
    }

    /// A heartbeat, from the guest or the host's timer. Coalesced: while one is in
    /// flight, or (for the guest's) within [`MIN_HEARTBEAT_INTERVAL`] of the last, it
    /// returns `ok` without a request. One refused as closed closes the task (see the
    /// module docs).
    pub async fn heartbeat(&self, source: HeartbeatSource) -> Result<(), AnswerError> {
        {
            let mut state = self.lock();
            match &state.answer {
                AnswerState::Pending => {}
                AnswerState::Closed { reason, .. } => {
                    return Err(AnswerError::TaskClosed(reason.clone()));
                }
                _ if source == HeartbeatSource::Auto => return Ok(()),
                _ => return Err(AnswerError::AlreadyResponded),
            }
            // The guest's calls are coalesced to one a second. The host's own come on a
            // timer the operator set; coalescing them against the previous tick would
            // drop every other one whenever the timer fires a hair early.
            let recent = source == HeartbeatSource::Guest
                && state
                    .last_heartbeat
                    .is_some_and(|at| at.elapsed() < MIN_HEARTBEAT_INTERVAL);
            if state.heartbeat_in_flight || recent {
                return Ok(());
            }
            state.heartbeat_in_flight = true;
            state.last_heartbeat = Some(Instant::now());
        }
        let this = self.clone();
        let (done, told) = oneshot::channel();
        let sent = async move {
            let result = this.inner.transport.heartbeat().await;
            let _ = done.send(this.heartbeat_done(source, result));
        };
        on_the_spot(sent, told)
            .await
            .unwrap_or_else(|_| Err(AnswerError::Unavailable("the host is stopping".into())))
    }

    fn heartbeat_done(
        &self,
        source: HeartbeatSource,
        result: Result<(), SfnError>,
    ) -> Result<(), AnswerError> {
        self.lock().heartbeat_in_flight = false;
        match result {
            Ok(()) => {
                self.report(&DeliveryEvent::HeartbeatSent { source });
                Ok(())
            }
            Err(SfnError::TaskClosed(reason)) => {
                self.close(&reason);
                Err(AnswerError::TaskClosed(reason))
            }
            Err(error) => Err(AnswerError::Unavailable(error.to_string())),
        }
    }

    /// Step Functions closed the task under a running guest: cancel it, and abort it
    /// after the grace unless it returns first.
    fn close(&self, reason: &str) {
        {
            let mut state = self.lock();
            match &state.answer {
                AnswerState::Pending => {
                    state.answer = AnswerState::Closed {
                        attempted: None,
                        reason: reason.to_owned(),
                    };
                }
                // An answer in flight finds out by itself.
                AnswerState::Delivering(_) => {}
                _ => return,
            }
        }
        let control = &self.inner.control;
        if control.cancel.is_cancelled() && control.abort.is_cancelled() {
            return;
        }
        control.cancel.cancel();
        self.report(&DeliveryEvent::Cancelled { reason });
        let abort = control.abort.clone();
        let grace = self.inner.options.cancel_grace;
        self.spawn(async move {
            tokio::time::sleep(grace).await;
            abort.cancel();
        });
    }
}

#[async_trait]
impl AnswerSink for Delivery {
    fn answered(&self) -> bool {
        Delivery::answered(self)
    }
    async fn answer(&self, answer: Answer) -> Result<(), AnswerError> {
        Delivery::answer(self, answer).await
    }
    async fn heartbeat(&self) -> Result<(), AnswerError> {
        Delivery::heartbeat(self, HeartbeatSource::Guest).await
    }
    async fn auto_heartbeat(&self) {
        // Errors are the delivery's to act on (a closed task is cancelled there); the
        // next one tries again.
        let _ = Delivery::heartbeat(self, HeartbeatSource::Auto).await;
    }
    fn cancelled(&self) -> bool {
        Delivery::cancelled(self)
    }
    fn host_failure(&self, failure: &HostFailure) {
        Delivery::host_failure(self, failure);
    }
}

/// How a delivery loop ended.
enum Ended {
    Delivered {
        probably: bool,
    },
    Closed(String),
    /// Step Functions refused the answer itself (a final error code).
    Refused(SfnError),
    Undelivered(String),
}
