//! The delivery's rules: retries, the first answer, who answered, heartbeats, closed
//! tasks.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;

use super::*;
use crate::outcome::{Answerer, FailureKind};

/// Fails its first `failures` sends with `error`, then accepts; counts everything.
struct Flaky {
    failures: u32,
    error: SfnError,
    sends: AtomicU32,
    heartbeats: AtomicU32,
    heartbeat_error: Option<SfnError>,
}

impl Flaky {
    fn new(failures: u32, error: SfnError) -> Arc<Self> {
        Arc::new(Self {
            failures,
            error,
            sends: AtomicU32::new(0),
            heartbeats: AtomicU32::new(0),
            heartbeat_error: None,
        })
    }
}

#[async_trait]
impl Transport for Flaky {
    async fn send(&self, _answer: &Answer) -> Result<(), SfnError> {
        let n = self.sends.fetch_add(1, Ordering::SeqCst);
        if n < self.failures {
            Err(self.error.clone())
        } else {
            Ok(())
        }
    }
    async fn heartbeat(&self) -> Result<(), SfnError> {
        self.heartbeats.fetch_add(1, Ordering::SeqCst);
        match &self.heartbeat_error {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        }
    }
}

fn setup(transport: Arc<Flaky>, retry_for: Duration) -> (Delivery, TaskControl) {
    let control = TaskControl::default();
    let options = DeliveryOptions {
        retry_for,
        cancel_grace: Duration::from_millis(50),
        ..DeliveryOptions::default()
    };
    (
        Delivery::new(transport, Arc::new(Unobserved), control.clone(), options),
        control,
    )
}

fn success() -> Answer {
    Answer::Success {
        output: "{}".into(),
    }
}

#[tokio::test(start_paused = true)]
async fn transient_errors_are_retried_until_delivered() {
    let transport = Flaky::new(4, SfnError::Unavailable("connection refused".into()));
    let (delivery, _) = setup(transport.clone(), Duration::from_secs(600));
    // The guest hears `ok` as soon as the retry loop has the answer.
    assert_eq!(delivery.answer(success()).await, Ok(()));
    delivery.settled().await;
    assert_eq!(transport.sends.load(Ordering::SeqCst), 5);
    assert_eq!(
        delivery.state(),
        AnswerState::Delivered {
            answer: success(),
            probably: false
        }
    );
    // A host failure after that changes nothing.
    delivery.host_failure(&HostFailure::NoResponse);
    delivery.settled().await;
    assert_eq!(transport.sends.load(Ordering::SeqCst), 5);
}

#[tokio::test(start_paused = true)]
async fn closed_after_a_timed_out_attempt_is_probably_delivered() {
    struct TimeoutThenClosed(AtomicU32);
    #[async_trait]
    impl Transport for TimeoutThenClosed {
        async fn send(&self, _answer: &Answer) -> Result<(), SfnError> {
            match self.0.fetch_add(1, Ordering::SeqCst) {
                0 => Err(SfnError::TimedOut("attempt timeout".into())),
                _ => Err(SfnError::TaskClosed("InvalidToken".into())),
            }
        }
        async fn heartbeat(&self) -> Result<(), SfnError> {
            Ok(())
        }
    }
    let delivery = Delivery::new(
        Arc::new(TimeoutThenClosed(AtomicU32::new(0))),
        Arc::new(Unobserved),
        TaskControl::default(),
        DeliveryOptions::default(),
    );
    assert_eq!(delivery.answer(success()).await, Ok(()));
    delivery.settled().await;
    assert_eq!(
        delivery.state(),
        AnswerState::Delivered {
            answer: success(),
            probably: true
        }
    );
}

#[tokio::test(start_paused = true)]
async fn retries_stop_when_the_budget_runs_out_or_the_host_gives_up() {
    let transport = Flaky::new(u32::MAX, SfnError::Unavailable("down".into()));
    let (delivery, _) = setup(transport.clone(), Duration::from_secs(30));
    assert_eq!(delivery.answer(success()).await, Ok(()));
    delivery.settled().await;
    assert!(matches!(
        delivery.state(),
        AnswerState::Undelivered { ref reason, .. } if reason.contains("gave up")
    ));
    let sends = transport.sends.load(Ordering::SeqCst);
    assert!((5..30).contains(&sends), "{sends} attempts in 30 s");

    let transport = Flaky::new(u32::MAX, SfnError::Unavailable("down".into()));
    let (delivery, _) = setup(transport, Duration::from_secs(600));
    let options = delivery.inner.options.give_up.clone();
    delivery.host_failure(&HostFailure::Shutdown);
    tokio::time::sleep(Duration::from_secs(3)).await;
    options.cancel();
    delivery.settled().await;
    assert!(matches!(delivery.state(), AnswerState::Undelivered { .. }));
}

#[tokio::test(start_paused = true)]
async fn a_rejected_or_closed_answer_is_not_retried() {
    let transport = Flaky::new(
        1,
        SfnError::rejected("ValidationException", "1 validation error detected"),
    );
    let (delivery, _) = setup(transport.clone(), Duration::from_secs(600));
    assert!(matches!(
        delivery.answer(success()).await,
        Err(AnswerError::Unavailable(_))
    ));
    assert_eq!(transport.sends.load(Ordering::SeqCst), 1);

    let transport = Flaky::new(1, SfnError::TaskClosed("TaskTimedOut".into()));
    let (delivery, _) = setup(transport.clone(), Duration::from_secs(600));
    assert_eq!(
        delivery.answer(success()).await,
        Err(AnswerError::TaskClosed("TaskTimedOut".into()))
    );
    assert_eq!(
        delivery.answer(success()).await,
        Err(AnswerError::TaskClosed("TaskTimedOut".into()))
    );
    assert_eq!(transport.sends.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn heartbeats_are_coalesced_to_one_a_second() {
    let transport = Flaky::new(0, SfnError::Unavailable(String::new()));
    let (delivery, _) = setup(transport.clone(), Duration::from_secs(600));
    for _ in 0..10 {
        assert_eq!(delivery.heartbeat(HeartbeatSource::Guest).await, Ok(()));
    }
    assert_eq!(transport.heartbeats.load(Ordering::SeqCst), 1);
    tokio::time::sleep(MIN_HEARTBEAT_INTERVAL).await;
    assert_eq!(delivery.heartbeat(HeartbeatSource::Guest).await, Ok(()));
    assert_eq!(transport.heartbeats.load(Ordering::SeqCst), 2);
    // The host's timer is not coalesced with the guest's calls.
    assert_eq!(delivery.heartbeat(HeartbeatSource::Auto).await, Ok(()));
    assert_eq!(transport.heartbeats.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn a_heartbeat_refused_as_closed_cancels_then_aborts_the_task() {
    let transport = Arc::new(Flaky {
        heartbeat_error: Some(SfnError::TaskClosed("TaskTimedOut".into())),
        ..Arc::into_inner(Flaky::new(0, SfnError::Unavailable(String::new()))).unwrap()
    });
    let (delivery, control) = setup(transport.clone(), Duration::from_secs(600));
    assert!(matches!(
        delivery.heartbeat(HeartbeatSource::Auto).await,
        Err(AnswerError::TaskClosed(_))
    ));
    assert!(delivery.cancelled());
    assert!(!control.abort.is_cancelled());
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert!(control.abort.is_cancelled());
    // Nothing is sent for a closed task, by the guest or the host.
    assert!(matches!(
        delivery.answer(success()).await,
        Err(AnswerError::TaskClosed(_))
    ));
    delivery.host_failure(&HostFailure::Shutdown);
    delivery.settled().await;
    assert_eq!(transport.sends.load(Ordering::SeqCst), 0);
}

/// The toolkit a guest calls, over a delivery that accepts everything.
fn toolkit() -> (sfn_wasm_engine::Toolkit, Delivery) {
    let delivery = Delivery::new(
        Arc::new(LocalTransport),
        Arc::new(Unobserved),
        TaskControl::default(),
        DeliveryOptions::default(),
    );
    (
        sfn_wasm_engine::Toolkit::new(Arc::new(delivery.clone()), None),
        delivery,
    )
}

#[tokio::test]
async fn through_the_toolkit_only_the_first_answer_counts() {
    use sfn_wasm_engine::bindings::sfn::activity::toolkit::Host;
    use sfn_wasm_engine::bindings::sfn::activity::types::ToolkitError;
    let (mut toolkit, delivery) = toolkit();
    toolkit.success("{}".into()).await.unwrap();
    assert_eq!(
        toolkit.failure("E".into(), "c".into()).await,
        Err(ToolkitError::AlreadyResponded)
    );
    assert_eq!(
        toolkit.heartbeat().await,
        Err(ToolkitError::AlreadyResponded)
    );
    delivery.settled().await;
    assert_eq!(
        delivery.state(),
        AnswerState::Delivered {
            answer: Answer::Success {
                output: "{}".into()
            },
            probably: false,
        }
    );
    assert_eq!(delivery.answered_by(), Some(Answerer::Guest));
}

#[tokio::test]
async fn through_the_toolkit_an_invalid_output_leaves_the_task_unanswered() {
    use sfn_wasm_engine::bindings::sfn::activity::toolkit::Host;
    use sfn_wasm_engine::bindings::sfn::activity::types::ToolkitError;
    let (mut toolkit, delivery) = toolkit();
    assert!(matches!(
        toolkit.success("nope".into()).await,
        Err(ToolkitError::InvalidOutput(_))
    ));
    assert_eq!(delivery.state(), AnswerState::Pending);
    assert_eq!(delivery.answered_by(), None);
}

#[tokio::test]
async fn the_host_failure_is_the_hosts_answer_even_when_a_guest_names_it() {
    // A guest may answer with any error name, even `SfnWasmHost.Trap`: the account
    // follows who answered, not the name.
    let (_, delivery) = toolkit();
    delivery
        .answer(Answer::failure(HostFailure::Shutdown.name(), "mine"))
        .await
        .unwrap();
    assert_eq!(delivery.answered_by(), Some(Answerer::Guest));
    let (_, delivery) = toolkit();
    delivery.host_failure(&HostFailure::Shutdown);
    delivery.settled().await;
    assert_eq!(
        delivery.answered_by(),
        Some(Answerer::Host(FailureKind::Shutdown))
    );
}

/// Answers each send with the next scripted result (then accepts), and keeps what was
/// sent and what was refused.
#[derive(Default)]
struct Scripted {
    results: Mutex<std::collections::VecDeque<Result<(), SfnError>>>,
    sent: Mutex<Vec<Answer>>,
    refused: Mutex<Vec<String>>,
}

impl Scripted {
    fn new(results: impl IntoIterator<Item = Result<(), SfnError>>) -> Arc<Self> {
        Arc::new(Self {
            results: Mutex::new(results.into_iter().collect()),
            ..Self::default()
        })
    }

    fn sent(&self) -> Vec<Answer> {
        self.sent.lock().unwrap().clone()
    }
}

#[async_trait]
impl Transport for Scripted {
    async fn send(&self, answer: &Answer) -> Result<(), SfnError> {
        self.sent.lock().unwrap().push(answer.clone());
        self.results.lock().unwrap().pop_front().unwrap_or(Ok(()))
    }
    async fn heartbeat(&self) -> Result<(), SfnError> {
        Ok(())
    }
}

impl DeliveryObserver for Scripted {
    fn observe(&self, event: &DeliveryEvent<'_>) {
        if let DeliveryEvent::Refused { error, .. } = event {
            self.refused.lock().unwrap().push(error.to_string());
        }
    }
}

fn invalid_output() -> SfnError {
    SfnError::rejected("InvalidOutput", "the output is not valid JSON")
}

fn scripted(transport: &Arc<Scripted>) -> Delivery {
    Delivery::new(
        transport.clone(),
        transport.clone(),
        TaskControl::default(),
        DeliveryOptions::default(),
    )
}

#[tokio::test(start_paused = true)]
async fn a_refused_answer_is_no_answer_and_the_guest_may_answer_again() {
    let transport = Scripted::new([Err(invalid_output())]);
    let delivery = scripted(&transport);
    assert_eq!(
        delivery.answer(success()).await,
        Err(AnswerError::Unavailable(
            "InvalidOutput: the output is not valid JSON".into()
        ))
    );
    assert_eq!(delivery.state(), AnswerState::Pending);
    assert_eq!(delivery.answered_by(), None);
    assert!(!delivery.answered());
    // The guest fails the task itself: that answer stands.
    let failure = Answer::failure("BadOutput", "could not shape the output");
    assert_eq!(delivery.answer(failure.clone()).await, Ok(()));
    delivery.conclude().await;
    assert_eq!(
        delivery.state(),
        AnswerState::Delivered {
            answer: failure,
            probably: false
        }
    );
    assert_eq!(delivery.answered_by(), Some(Answerer::Guest));
    assert_eq!(transport.refused.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_guest_that_returns_after_a_refusal_gets_answer_refused() {
    let transport = Scripted::new([Err(invalid_output())]);
    let delivery = scripted(&transport);
    assert!(delivery.answer(success()).await.is_err());
    // What the engine does when the guest returns without an answer.
    delivery.host_failure(&HostFailure::NoResponse);
    delivery.conclude().await;
    let AnswerState::Delivered {
        answer: Answer::Failure { error, cause },
        ..
    } = delivery.state()
    else {
        panic!("{:?}", delivery.state());
    };
    assert_eq!(error, "SfnWasmHost.AnswerRefused");
    assert!(
        cause.contains("InvalidOutput: the output is not valid JSON"),
        "{cause}"
    );
    assert_eq!(
        delivery.answered_by(),
        Some(Answerer::Host(FailureKind::AnswerRefused))
    );
}

#[tokio::test(start_paused = true)]
async fn a_refusal_after_the_guest_returned_is_answered_by_the_host() {
    // Throttled twice (the guest hears `ok` and returns), then refused for good.
    let transport = Scripted::new([
        Err(SfnError::Throttled(
            "KmsThrottlingException: slow down".into(),
        )),
        Err(SfnError::Throttled(
            "KmsThrottlingException: slow down".into(),
        )),
        Err(SfnError::rejected("KmsAccessDeniedException", "no grant")),
    ]);
    let delivery = scripted(&transport);
    assert_eq!(delivery.answer(success()).await, Ok(()));
    delivery.conclude().await;
    let sent = transport.sent();
    assert_eq!(sent.len(), 4, "{sent:?}");
    assert!(
        matches!(&sent[3], Answer::Failure { error, .. } if error == "SfnWasmHost.AnswerRefused")
    );
    assert!(delivery.state().is_delivered());
    assert_eq!(
        delivery.answered_by(),
        Some(Answerer::Host(FailureKind::AnswerRefused))
    );
}

#[tokio::test(start_paused = true)]
async fn a_refused_host_answer_is_followed_by_the_bare_failure_once() {
    let kms = || SfnError::rejected("KmsAccessDeniedException", "no grant");
    let transport = Scripted::new([Err(kms())]);
    let delivery = scripted(&transport);
    delivery.host_failure(&HostFailure::Shutdown);
    delivery.conclude().await;
    assert_eq!(
        delivery.state(),
        AnswerState::Delivered {
            answer: Answer::bare_failure(),
            probably: false
        }
    );
    assert_eq!(
        delivery.answered_by(),
        Some(Answerer::Host(FailureKind::Shutdown))
    );

    // Refused too: given up, never retried again.
    let transport = Scripted::new([Err(kms()), Err(kms())]);
    let delivery = scripted(&transport);
    delivery.host_failure(&HostFailure::Shutdown);
    delivery.conclude().await;
    assert!(matches!(delivery.state(), AnswerState::Undelivered { .. }));
    assert_eq!(transport.sent().len(), 2);
    assert_eq!(transport.refused.lock().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_kms_throttle_is_retried_until_accepted() {
    let transport = Scripted::new([
        Err(SfnError::Throttled(
            "KmsThrottlingException: slow down".into(),
        )),
        Err(SfnError::Throttled(
            "KmsThrottlingException: slow down".into(),
        )),
    ]);
    let delivery = scripted(&transport);
    assert_eq!(delivery.answer(success()).await, Ok(()));
    delivery.conclude().await;
    assert_eq!(transport.sent().len(), 3);
    assert_eq!(
        delivery.state(),
        AnswerState::Delivered {
            answer: success(),
            probably: false
        }
    );
}

/// Counts what the delivery reports as the handler's errors.
#[derive(Default)]
struct Errors(AtomicU32);

impl DeliveryObserver for Errors {
    fn observe(&self, event: &DeliveryEvent<'_>) {
        if let DeliveryEvent::Errored { .. } = event {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A guest that answers again in a loop is reported once (`task:errored`), not once per
/// call: each report is a WARN line the guest would otherwise cause at will.
#[tokio::test]
async fn a_second_answer_in_a_loop_is_reported_once() {
    let errors = Arc::new(Errors::default());
    let delivery = Delivery::new(
        Arc::new(LocalTransport),
        errors.clone(),
        TaskControl::default(),
        DeliveryOptions::default(),
    );
    delivery.answer(success()).await.unwrap();
    for _ in 0..10_000 {
        assert_eq!(
            delivery.answer(success()).await,
            Err(AnswerError::AlreadyResponded)
        );
    }
    assert_eq!(errors.0.load(Ordering::SeqCst), 1);
}

/// Keeps every event the delivery tells its observer, in a few words each.
#[derive(Default)]
struct Seen(Mutex<Vec<String>>);

impl Seen {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl DeliveryObserver for Seen {
    fn observe(&self, event: &DeliveryEvent<'_>) {
        let name = |answer: &Answer| match answer {
            Answer::Success { .. } => "success".to_owned(),
            _ if answer.is_bare_failure() => "bare-failure".to_owned(),
            Answer::Failure { error, .. } => error.clone(),
        };
        let seen = match *event {
            DeliveryEvent::Answering { answer, by } => format!("answering {} {by:?}", name(answer)),
            DeliveryEvent::Retrying { attempt, error, .. } => format!("retrying {attempt} {error}"),
            DeliveryEvent::Refused { answer, error } => format!("refused {} {error}", name(answer)),
            DeliveryEvent::Delivered { answer, how } => format!(
                "delivered {} {} {}",
                name(answer),
                how.attempts,
                how.probably
            ),
            DeliveryEvent::Closed { answer, reason } => format!("closed {} {reason}", name(answer)),
            DeliveryEvent::GaveUp { answer, .. } => format!("gave_up {}", name(answer)),
            DeliveryEvent::Undelivered { answer, reason } => {
                format!("undelivered {} {reason}", name(answer))
            }
            DeliveryEvent::HeartbeatSent { source } => format!("heartbeat {source:?}"),
            DeliveryEvent::Cancelled { reason } => format!("cancelled {reason}"),
            DeliveryEvent::Errored { error } => format!("errored {}", error.name()),
        };
        self.0.lock().unwrap().push(seen);
    }
}

fn observed(transport: &Arc<Scripted>) -> (Delivery, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let delivery = Delivery::new(
        transport.clone(),
        seen.clone(),
        TaskControl::default(),
        DeliveryOptions::default(),
    );
    (delivery, seen)
}

/// The one observer hears an answer retried, then delivered, in the order it happened.
#[tokio::test(start_paused = true)]
async fn the_observer_sees_a_retried_answer_delivered_in_order() {
    let transport = Scripted::new([
        Err(SfnError::Unavailable("connection refused".into())),
        Err(SfnError::Throttled("slow down".into())),
    ]);
    let (delivery, seen) = observed(&transport);
    assert_eq!(delivery.heartbeat(HeartbeatSource::Guest).await, Ok(()));
    assert_eq!(delivery.answer(success()).await, Ok(()));
    delivery.conclude().await;
    assert_eq!(
        seen.take(),
        [
            "heartbeat Guest",
            "answering success Guest",
            "retrying 1 connection refused",
            "retrying 2 throttled: slow down",
            "delivered success 3 false",
        ]
    );
}

/// The one observer hears a refused guest answer, the host's answer for it, and a
/// refused host answer followed by the bare failure, in order.
#[tokio::test(start_paused = true)]
async fn the_observer_sees_a_refused_answer_in_order() {
    let transport = Scripted::new([Err(invalid_output())]);
    let (delivery, seen) = observed(&transport);
    assert!(delivery.answer(success()).await.is_err());
    delivery.host_failure(&HostFailure::NoResponse);
    delivery.conclude().await;
    assert_eq!(
        seen.take(),
        [
            "answering success Guest",
            "refused success InvalidOutput: the output is not valid JSON",
            "errored SfnWasmHost.AnswerRefused",
            "answering SfnWasmHost.AnswerRefused Host(AnswerRefused)",
            "delivered SfnWasmHost.AnswerRefused 1 false",
        ]
    );

    let kms = || SfnError::rejected("KmsAccessDeniedException", "no grant");
    let transport = Scripted::new([Err(kms()), Err(kms())]);
    let (delivery, seen) = observed(&transport);
    delivery.host_failure(&HostFailure::Shutdown);
    delivery.conclude().await;
    // The bare failure is the same answer, sent again: no second `answering`.
    assert_eq!(
        seen.take(),
        [
            "errored SfnWasmHost.Shutdown",
            "answering SfnWasmHost.Shutdown Host(Shutdown)",
            "refused SfnWasmHost.Shutdown KmsAccessDeniedException: no grant",
            "refused bare-failure KmsAccessDeniedException: no grant",
            "undelivered bare-failure KmsAccessDeniedException: no grant",
        ]
    );
}
