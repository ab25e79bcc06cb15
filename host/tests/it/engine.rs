//! The engine as the runtime uses it: shared handler, many tasks, early stops, and a
//! transport and observer that record every call so "exactly one answer" can be checked.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::json;
use sfn_wasm_host::delivery::{
    AnswerState, Delivery, DeliveryEvent, DeliveryObserver, DeliveryOptions, Transport,
};
use sfn_wasm_host::engine::{
    Capabilities, EngineConfig, GUEST_THREAD_NAME, Handler, LoadError, TaskControl, TaskLimits,
    TaskReport, TaskRequest, WasmEngine,
};
use sfn_wasm_host::outcome::{Answer, HostFailure};
use sfn_wasm_host::sfn::SfnError;

use crate::support::guests::guest;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Success(String),
    Failure(String),
    Heartbeat,
    Errored(String),
}

/// Records every call; `refuse` makes answers fail the way Step Functions would.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<Call>>,
    refuse: Option<SfnError>,
    /// The name of the thread each answer was sent from.
    threads: Mutex<Vec<String>>,
    /// How long each answer takes to be sent.
    delay: Duration,
}

impl Recorder {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn answers(&self) -> usize {
        self.calls()
            .iter()
            .filter(|c| matches!(c, Call::Success(_) | Call::Failure(_)))
            .count()
    }

    fn record(&self, call: Call) -> Result<(), SfnError> {
        self.calls.lock().unwrap().push(call);
        self.refuse.clone().map_or(Ok(()), Err)
    }
}

#[async_trait]
impl Transport for Recorder {
    async fn send(&self, answer: &Answer) -> Result<(), SfnError> {
        let thread = std::thread::current().name().unwrap_or_default().to_owned();
        self.threads.lock().unwrap().push(thread);
        tokio::time::sleep(self.delay).await;
        self.record(match answer {
            Answer::Success { output } => Call::Success(output.clone()),
            Answer::Failure { error, .. } => Call::Failure(error.clone()),
        })
    }
    async fn heartbeat(&self) -> Result<(), SfnError> {
        self.calls.lock().unwrap().push(Call::Heartbeat);
        Ok(())
    }
}

impl DeliveryObserver for Recorder {
    fn observe(&self, event: &DeliveryEvent<'_>) {
        if let DeliveryEvent::Errored { error } = event {
            self.calls
                .lock()
                .unwrap()
                .push(Call::Errored(error.to_string()));
        }
    }
}

struct Fixture {
    engine: WasmEngine,
    scenarios: Handler,
}

fn fixture() -> Fixture {
    let engine = WasmEngine::new(EngineConfig {
        max_concurrent_tasks: 4,
        max_memory_bytes: 64 << 20,
        pooling: true,
        ..EngineConfig::default()
    })
    .expect("engine");
    let scenarios = Handler::load_file(&engine, &guest("scenarios")).expect("scenarios loads");
    Fixture { engine, scenarios }
}

fn request(hello: &str, control: TaskControl) -> TaskRequest {
    TaskRequest {
        input: json!({"hello": hello, "ms": 30_000}).to_string(),
        activity_arn: "arn:aws:states:us-east-1:000000000000:activity:test".into(),
        worker_name: "test:1".into(),
        task_id: format!("task-{hello}").into(),
        limits: TaskLimits {
            memory_bytes: 64 << 20,
            timeout: Duration::from_secs(30),
            heartbeat_every: None,
        },
        control,
        capabilities: Capabilities::none(),
    }
}

/// Runs `request` through `handler` with `recorder` as the transport and observer, until its answer
/// is settled.
async fn run_with(
    handler: &Handler,
    engine: &WasmEngine,
    request: TaskRequest,
    recorder: Arc<Recorder>,
) -> (TaskReport, AnswerState) {
    let delivery = Delivery::new(
        recorder.clone(),
        recorder,
        request.control.clone(),
        DeliveryOptions::default(),
    );
    let report = handler.run(engine, request, delivery.clone()).await;
    delivery.settled().await;
    (report, delivery.state())
}

impl Fixture {
    async fn run(&self, hello: &str, control: TaskControl) -> (TaskReport, Arc<Recorder>) {
        let (report, _, recorder) = self.run_state(hello, control).await;
        (report, recorder)
    }

    async fn run_state(
        &self,
        hello: &str,
        control: TaskControl,
    ) -> (TaskReport, AnswerState, Arc<Recorder>) {
        let recorder = Arc::new(Recorder::default());
        let (report, state) = run_with(
            &self.scenarios,
            &self.engine,
            request(hello, control),
            recorder.clone(),
        )
        .await;
        (report, state, recorder)
    }
}

fn failure_name(state: &AnswerState) -> Option<&str> {
    match state.answer() {
        Some(Answer::Failure { error, .. }) => Some(error),
        _ => None,
    }
}

#[tokio::test]
async fn the_seed_scenarios_call_the_transport_as_expected() {
    let f = fixture();
    let greeting = |name: &str| Call::Success(format!(r#"{{"greeting":"Hello, {name}"}}"#));

    let (_, r) = f.run("World", TaskControl::default()).await;
    assert_eq!(r.calls(), [greeting("World")]);

    let (_, r) = f.run("Heartbeat", TaskControl::default()).await;
    assert_eq!(r.calls(), [Call::Heartbeat, greeting("Heartbeat")]);

    let (_, r) = f.run("Failure", TaskControl::default()).await;
    assert_eq!(r.calls(), [Call::Failure("InvalidName".into())]);

    let (_, r) = f.run("Duplicate", TaskControl::default()).await;
    assert_eq!(
        r.calls(),
        [
            greeting("Duplicate"),
            Call::Errored("the handler answered twice; the first answer stands".into())
        ]
    );

    let (report, r) = f.run("Forgot", TaskControl::default()).await;
    assert_eq!(report.error, Some(HostFailure::NoResponse));
    assert!(
        matches!(&r.calls()[..], [Call::Errored(_), Call::Failure(name)] if name == "SfnWasmHost.NoResponse")
    );

    let (_, state, r) = f.run_state("Error", TaskControl::default()).await;
    assert_eq!(failure_name(&state), Some("SfnWasmHost.Trap"));
    assert!(
        matches!(&r.calls()[..], [Call::Errored(_), Call::Failure(name)] if name == "SfnWasmHost.Trap")
    );
}

/// A `pushy` task of `input` for an engine with guest threads.
fn pushy_request(input: serde_json::Value) -> TaskRequest {
    TaskRequest {
        input: input.to_string(),
        ..request("pushy", TaskControl::default())
    }
}

/// An engine with one guest thread, and the `pushy` guest loaded in it.
fn with_guest_threads() -> (WasmEngine, Handler) {
    let engine = WasmEngine::new(EngineConfig {
        max_concurrent_tasks: 4,
        max_memory_bytes: 64 << 20,
        guest_threads: 1,
        ..EngineConfig::default()
    })
    .expect("engine");
    let pushy = Handler::load_file(&engine, &guest("pushy")).expect("pushy loads");
    (engine, pushy)
}

/// A guest that computes past an epoch tick moves to the guest threads and answers from
/// there; a guest that answers within its first tick stays on the task's thread (no
/// hand-off). Fails if guests never move, or always do.
#[tokio::test]
async fn a_guest_that_computes_moves_to_the_guest_threads_and_a_quick_one_stays() {
    let (engine, pushy) = with_guest_threads();
    let here = std::thread::current().name().unwrap_or_default().to_owned();
    assert_ne!(here, GUEST_THREAD_NAME);

    // Each quick task arms the epoch clock for what is left of a tick, which these ten
    // together do not use up: only a machine that stalls the test's thread that long
    // moves one.
    let quick = Arc::new(Recorder::default());
    for _ in 0..10 {
        let (report, _) = run_with(
            &pushy,
            &engine,
            pushy_request(json!({"push": "clock"})),
            quick.clone(),
        )
        .await;
        assert_eq!(report.error, None);
    }
    let threads = quick.threads.lock().unwrap().clone();
    let stayed = threads.iter().filter(|name| **name == here).count();
    assert!(stayed >= 8, "{threads:?}");

    // 20 epoch ticks of computing: at least one tick finds it running.
    let spinning = Arc::new(Recorder::default());
    let (report, _) = run_with(
        &pushy,
        &engine,
        pushy_request(json!({"push": "spin", "ms": 100})),
        spinning.clone(),
    )
    .await;
    assert_eq!(report.error, None);
    assert_eq!(
        *spinning.threads.lock().unwrap(),
        [GUEST_THREAD_NAME.to_owned()]
    );
    assert_eq!(engine.guests_moved(), 1 + 10 - stayed as u64);
}

/// A quick guest whose answer is on the wire while ticks go by (another guest computes)
/// does not move when it returns to its own code after the answer: the tick finds it
/// back from a wait, not computing. The guest that computes moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quick_guest_ticked_past_while_it_waits_for_its_answer_stays() {
    let engine = Arc::new(
        WasmEngine::new(EngineConfig {
            max_concurrent_tasks: 4,
            max_memory_bytes: 64 << 20,
            guest_threads: 1,
            ..EngineConfig::default()
        })
        .expect("engine"),
    );
    let pushy = Arc::new(Handler::load_file(&engine, &guest("pushy")).expect("pushy loads"));
    let spinner = {
        let (engine, pushy) = (engine.clone(), pushy.clone());
        tokio::spawn(async move {
            let request = pushy_request(json!({"push": "spin", "ms": 300}));
            run_with(&pushy, &engine, request, Arc::default()).await
        })
    };
    // The spinner keeps the epoch clock ticking through the quick guests' answers.
    tokio::time::sleep(Duration::from_millis(20)).await;
    for _ in 0..3 {
        let slow = Arc::new(Recorder {
            delay: Duration::from_millis(30),
            ..Recorder::default()
        });
        let request = pushy_request(json!({"push": "clock"}));
        let (report, _) = run_with(&pushy, &engine, request, slow).await;
        assert_eq!(report.error, None);
    }
    let (report, _) = spinner.await.unwrap();
    assert_eq!(report.error, None);
    assert_eq!(engine.guests_moved(), 1, "only the spinner moves");
}

/// A moved guest whose task's future is dropped (the host gave up on it) stops: it does
/// not run on, unwatched, on the guest threads and answer later.
#[tokio::test]
async fn a_moved_guest_stops_when_its_task_is_dropped() {
    let (engine, pushy) = with_guest_threads();
    let recorder = Arc::new(Recorder::default());
    let run = run_with(
        &pushy,
        &engine,
        pushy_request(json!({"push": "spin", "ms": 400})),
        recorder.clone(),
    );
    // Dropped while it computes (past its first ticks, so on the guest threads).
    assert!(
        tokio::time::timeout(Duration::from_millis(100), run)
            .await
            .is_err()
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(recorder.calls(), [], "the dropped guest answered anyway");
}

#[tokio::test]
async fn an_abort_stops_a_loop_within_a_tick_or_so() {
    let f = fixture();
    let control = TaskControl::default();
    let abort = control.abort.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        abort.cancel();
    });
    let started = Instant::now();
    let (report, state, r) = f.run_state("Loop", control).await;
    assert_eq!(report.error, Some(HostFailure::Shutdown));
    assert_eq!(failure_name(&state), Some("SfnWasmHost.Shutdown"));
    assert_eq!(r.answers(), 1);
    // A liveness bound, not a performance claim: without the epoch check the loop
    // would run for the whole 30 s deadline.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_reaches_a_loop_even_when_the_runtime_is_busy() {
    let f = Arc::new(fixture());
    // Two looping guests keep both runtime threads busy; the abort comes from a plain
    // thread, and both must still stop.
    let controls: Vec<TaskControl> = (0..2).map(|_| TaskControl::default()).collect();
    let tasks: Vec<_> = controls
        .iter()
        .cloned()
        .map(|control| {
            let f = f.clone();
            tokio::spawn(async move { f.run("Loop", control).await.0 })
        })
        .collect();
    let aborts: Vec<_> = controls.iter().map(|c| c.abort.clone()).collect();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        aborts.iter().for_each(|a| a.cancel());
    });
    for task in tasks {
        let report = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("stopped")
            .unwrap();
        assert_eq!(report.error, Some(HostFailure::Shutdown));
    }
}

#[tokio::test]
async fn an_abort_stops_a_guest_waiting_in_a_host_call() {
    let f = fixture();
    let control = TaskControl::default();
    let abort = control.abort.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        abort.cancel();
    });
    let (report, r) = f.run("Sleep", control).await;
    assert_eq!(report.error, Some(HostFailure::Shutdown));
    assert_eq!(r.answers(), 1);
}

#[tokio::test]
async fn a_cooperative_guest_answers_by_itself_when_cancelled() {
    let f = fixture();
    let control = TaskControl::default();
    let cancel = control.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        cancel.cancel();
    });
    let (report, r) = f.run("Patient", control).await;
    assert_eq!(report.error, None);
    assert_eq!(
        r.calls(),
        [Call::Success(r#"{"stopped":"cancelled"}"#.into())]
    );
}

fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

#[tokio::test]
async fn failures_do_not_harm_the_next_task() {
    let f = fixture();
    for hello in ["Hog", "Error", "Forgot"] {
        let (report, r) = f.run(hello, TaskControl::default()).await;
        assert!(report.error.is_some(), "{hello}");
        assert_eq!(r.answers(), 1, "{hello}");
        let (report, r) = f.run("World", TaskControl::default()).await;
        assert_eq!(report.error, None, "World after {hello}");
        assert_eq!(r.answers(), 1);
    }
    let (report, _) = f.run("Hog", TaskControl::default()).await;
    assert!(
        matches!(report.error, Some(HostFailure::OutOfMemory(_))),
        "{:?}",
        report.error
    );
    // The 1 GiB the guest asked for was never given.
    assert!(
        resident_bytes() < 512 << 20,
        "resident: {} MiB",
        resident_bytes() >> 20
    );
}

#[tokio::test]
async fn a_closed_task_is_not_answered_again_by_the_host() {
    let f = fixture();
    let recorder = Arc::new(Recorder {
        refuse: Some(SfnError::TaskClosed("InvalidToken".into())),
        ..Recorder::default()
    });
    let (_, state) = run_with(
        &f.scenarios,
        &f.engine,
        request("World", TaskControl::default()),
        recorder.clone(),
    )
    .await;
    // The guest's success was refused; the guest returned the error, and the host did not
    // try to answer a closed task.
    assert!(matches!(state, AnswerState::Closed { .. }), "{state:?}");
    assert_eq!(recorder.answers(), 1);
}

#[tokio::test]
async fn tasks_run_concurrently_on_one_handler() {
    let f = Arc::new(fixture());
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let f = f.clone();
            tokio::spawn(async move {
                let mut req = request("Sleep", TaskControl::default());
                req.input = json!({"hello": "Sleep", "ms": 100}).to_string();
                let recorder = Arc::new(Recorder::default());
                let (report, _) = run_with(&f.scenarios, &f.engine, req, recorder.clone()).await;
                (report, recorder)
            })
        })
        .collect();
    for task in tasks {
        let (report, recorder) = task.await.unwrap();
        assert_eq!(report.error, None);
        assert_eq!(recorder.answers(), 1);
    }
}

/// A transport that takes `delay` for every answer.
struct Slow {
    inner: Recorder,
    delay: Duration,
}

#[async_trait]
impl Transport for Slow {
    async fn send(&self, answer: &Answer) -> Result<(), SfnError> {
        tokio::time::sleep(self.delay).await;
        self.inner.send(answer).await
    }
    async fn heartbeat(&self) -> Result<(), SfnError> {
        self.inner.heartbeat().await
    }
}

impl DeliveryObserver for Slow {
    fn observe(&self, event: &DeliveryEvent<'_>) {
        self.inner.observe(event);
    }
}

#[tokio::test]
async fn a_deadline_never_cuts_off_an_answer_in_flight() {
    let f = fixture();
    let slow = Arc::new(Slow {
        inner: Recorder::default(),
        delay: Duration::from_millis(300),
    });
    let mut req = request("Deadline", TaskControl::default());
    // The guest answers 50 ms before its 1 s deadline; the answer takes 300 ms.
    req.input = json!({"hello": "Deadline", "ms": 50}).to_string();
    req.limits.timeout = Duration::from_secs(1);
    let delivery = Delivery::new(
        slow.clone(),
        slow.clone(),
        req.control.clone(),
        DeliveryOptions::default(),
    );
    let report = f.scenarios.run(&f.engine, req, delivery.clone()).await;
    // The guest was stopped by its deadline while it waited for the answer...
    assert!(
        matches!(report.error, Some(HostFailure::Timeout(_))),
        "{:?}",
        report.error
    );
    delivery.settled().await;
    // ...but its answer went out, and it is the only one.
    assert_eq!(
        slow.inner.calls(),
        [
            Call::Errored(
                "SfnWasmHost.Timeout: the handler did not finish within its 1000 ms deadline"
                    .into()
            ),
            Call::Success(r#"{"greeting":"Hello, Deadline"}"#.into())
        ]
    );
    assert!(delivery.state().is_delivered(), "{:?}", delivery.state());
}

/// `deadline-ms` is the time left when the handler is called (after its input was
/// checked and its instance made), not the whole timeout: a guest that plans to answer
/// just before its deadline does not count that time twice.
#[tokio::test]
async fn deadline_ms_is_the_time_left_when_the_handler_is_called() {
    let f = fixture();
    let recorder = Arc::new(Recorder::default());
    let mut req = request("Left", TaskControl::default());
    req.input = json!({"hello": "Left"}).to_string();
    req.limits.timeout = Duration::from_secs(1);
    let (report, _) = run_with(&f.scenarios, &f.engine, req, recorder.clone()).await;
    assert!(report.error.is_none(), "{:?}", report.error);
    let calls = recorder.calls();
    let [Call::Success(output)] = calls.as_slice() else {
        panic!("one success: {calls:?}");
    };
    let left = serde_json::from_str::<serde_json::Value>(output).unwrap()["deadline_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("a number: {output}"));
    assert!(
        (1..1_000).contains(&left),
        "{left} ms of a 1,000 ms deadline"
    );
}

async fn push(f: &Fixture, handler: &Handler, push: &str) -> (TaskReport, AnswerState, usize) {
    let recorder = Arc::new(Recorder::default());
    let mut req = request(push, TaskControl::default());
    req.input = json!({ "push": push }).to_string();
    let (report, state) = run_with(handler, &f.engine, req, recorder.clone()).await;
    (report, state, recorder.answers())
}

#[tokio::test]
async fn guests_that_push_on_the_bounds_get_one_answer_each() {
    let f = fixture();
    let handler = Handler::load_file(&f.engine, &guest("pushy")).expect("pushy loads");

    // A 16 MiB error message is cut to Step Functions' cause limit before it goes on.
    let (report, state, answers) = push(&f, &handler, "error").await;
    let Some(HostFailure::HandlerError(message)) = &report.error else {
        panic!("{:?}", report.error);
    };
    assert_eq!(message.chars().count(), 32_768);
    assert!(
        matches!(state.answer(), Some(Answer::Failure { error, cause }) if error == "SfnWasmHost.HandlerError" && cause.len() == 32_768)
    );
    assert_eq!(answers, 1);

    // 100,000 leaked resources hit the table's cap; 1 GiB of randomness is refused.
    for name in ["resources", "random"] {
        let (report, _, answers) = push(&f, &handler, name).await;
        assert!(
            matches!(report.error, Some(HostFailure::Trap(_))),
            "{name}: {:?}",
            report.error
        );
        assert_eq!(answers, 1, "{name}");
    }
    assert!(
        resident_bytes() < 512 << 20,
        "resident: {} MiB",
        resident_bytes() >> 20
    );
    // And the next task is served as usual.
    let (report, _, answers) = push(&f, &handler, "chatty").await;
    assert_eq!(report.error, None);
    assert_eq!(answers, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_with_no_free_instance_slot_is_answered_capacity() {
    // One task's worth of slots, plus the spares kept for hot swaps.
    let engine = Arc::new(
        WasmEngine::new(EngineConfig {
            max_concurrent_tasks: 1,
            max_memory_bytes: 64 << 20,
            pooling: true,
            ..EngineConfig::default()
        })
        .unwrap(),
    );
    let handler = Handler::load_file(&engine, &guest("scenarios")).unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (engine, handler) = (engine.clone(), handler.clone());
            tokio::spawn(async move {
                let mut req = request("Sleep", TaskControl::default());
                req.input = json!({"hello": "Sleep", "ms": 1000}).to_string();
                let recorder = Arc::new(Recorder::default());
                let (report, state) = run_with(&handler, &engine, req, recorder.clone()).await;
                (report, state, recorder.answers())
            })
        })
        .collect();
    let mut capacity = 0;
    for task in tasks {
        let (report, state, answers) = task.await.unwrap();
        assert_eq!(answers, 1);
        match report.error {
            None => {}
            Some(HostFailure::Capacity(_)) => {
                capacity += 1;
                assert!(
                    matches!(state.answer(), Some(Answer::Failure { error, .. }) if error == "SfnWasmHost.Capacity")
                );
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(capacity, 3, "8 tasks, 5 slots");
}

/// A component that instantiates two core modules, each with its own linear memory. No
/// guest toolchain we know of makes one; hand-encoded (it is malformed for a host with
/// one memory slot per task).
fn two_memories() -> Vec<u8> {
    let module = [0, b'a', b's', b'm', 1, 0, 0, 0, 5, 3, 1, 0, 1];
    let mut component = vec![0, b'a', b's', b'm', 0x0d, 0, 1, 0];
    for _ in 0..2 {
        component.extend([1, module.len() as u8]);
        component.extend(module);
    }
    // core:instance section: instantiate module 0 and module 1, no arguments.
    component.extend([2, 7, 2, 0, 0, 0, 0, 1, 0]);
    component
}

#[test]
fn handlers_with_more_memories_than_a_task_gets_are_refused_at_load() {
    let path = std::path::Path::new("two-memories.wasm");
    let big = WasmEngine::new(EngineConfig {
        max_concurrent_tasks: 10_000,
        ..EngineConfig::default()
    })
    .expect("an engine with 10,000 task slots");
    assert_eq!(big.memories_per_task(), 1);
    let err = Handler::load_bytes(&big, path, &two_memories())
        .err()
        .expect("refused");
    assert!(
        matches!(
            err,
            LoadError::TooManyMemories {
                memories: 2,
                allowed: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("`max_concurrent_tasks`"), "{err}");
    Handler::load_file(&big, &guest("greet")).expect("one memory fits");

    // With few tasks there is room; the same component then fails only on its world.
    let small = WasmEngine::new(EngineConfig::default()).expect("engine");
    assert_eq!(small.memories_per_task(), 4);
    let err = Handler::load_bytes(&small, path, &two_memories())
        .err()
        .expect("refused");
    assert!(matches!(err, LoadError::WrongWorld { .. }), "{err}");
}
