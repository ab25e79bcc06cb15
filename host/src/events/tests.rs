//! What each event logs: its name, level and fields, and that the log line carries
//! exactly those fields.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::Level;

use super::log::{Fields, line};
use super::*;
use crate::outcome::HeartbeatSource;

fn task() -> TaskRef {
    TaskRef {
        task_id: Arc::from("0123456789abcdef"),
        handler_digest: Arc::from("d1"),
        recovered: false,
    }
}

fn worker_event(event: WorkerEvent) -> Event {
    Event {
        kind: EventKind::Worker {
            worker: Arc::from("w:1"),
            event,
        },
        activity: Arc::from("arn"),
        task_source: "activity",
    }
}

fn task_event(event: TaskEvent) -> Event {
    Event {
        kind: EventKind::Task {
            worker: Arc::from("w:1"),
            task: task(),
            event,
        },
        activity: Arc::from("arn"),
        task_source: "activity",
    }
}

fn handler_event(event: HandlerEvent) -> Event {
    Event {
        kind: EventKind::Handler(event),
        activity: Arc::from("arn"),
        task_source: "activity",
    }
}

/// The fields every task event carries.
fn task_fields() -> Fields<'static> {
    Fields {
        worker: Some("w:1"),
        task_id: Some("0123456789abcdef"),
        handler_digest: Some("d1"),
        ..Fields::default()
    }
}

const JUDGED: CanaryJudgement = CanaryJudgement {
    canary_tasks: 10,
    canary_failure_rate: 0.5,
    stable_tasks: 20,
    stable_failure_rate: 0.0,
};

/// The fields of a canary's judgement between `d1` and `d2`.
fn judged_fields() -> Fields<'static> {
    Fields {
        old_digest: Some("d1"),
        new_digest: Some("d2"),
        canary_tasks: Some(10),
        canary_failure_rate: Some(0.5),
        stable_tasks: Some(20),
        stable_failure_rate: Some(0.0),
        ..Fields::default()
    }
}

/// One event, the name and level it logs at, and its fields.
type Case = (Event, &'static str, Level, Fields<'static>);

/// The worker's own events and its polls'.
fn worker_cases() -> Vec<Case> {
    let worker = Fields {
        worker: Some("w:1"),
        ..Fields::default()
    };
    vec![
        (
            worker_event(WorkerEvent::Starting),
            "worker:starting",
            Level::INFO,
            worker.clone(),
        ),
        (
            worker_event(WorkerEvent::Running),
            "worker:running",
            Level::INFO,
            worker.clone(),
        ),
        (
            worker_event(WorkerEvent::Stopping),
            "worker:stopping",
            Level::INFO,
            worker.clone(),
        ),
        (
            worker_event(WorkerEvent::Stopped { exit_code: 10 }),
            "worker:stopped",
            Level::INFO,
            worker.clone(),
        ),
        (
            worker_event(WorkerEvent::Error { error: "e".into() }),
            "worker:error",
            Level::WARN,
            worker.clone(),
        ),
        (
            worker_event(WorkerEvent::PollingStarting),
            "polling:starting",
            Level::DEBUG,
            worker.clone(),
        ),
        (
            worker_event(WorkerEvent::PollingSuccess { task: true }),
            "polling:success",
            Level::DEBUG,
            worker.clone(),
        ),
        (
            worker_event(WorkerEvent::PollingError {
                error: "e".into(),
                attempt: 2,
                throttled: true,
                blocked: false,
            }),
            "polling:error",
            Level::WARN,
            Fields {
                throttled: Some(true),
                blocked: Some(false),
                ..worker.clone()
            },
        ),
    ]
}

/// A task's arrival, start and heartbeats.
fn task_start_cases() -> Vec<Case> {
    vec![
        (
            task_event(TaskEvent::Received),
            "task:received",
            Level::DEBUG,
            task_fields(),
        ),
        (
            task_event(TaskEvent::Start {
                wait: Duration::from_micros(1_500),
            }),
            "task:start",
            Level::INFO,
            Fields {
                wait_ms: Some(1.5),
                ..task_fields()
            },
        ),
        (
            task_event(TaskEvent::Heartbeat {
                source: HeartbeatSource::Auto,
            }),
            "task:heartbeat",
            Level::INFO,
            Fields {
                source: Some("auto"),
                ..task_fields()
            },
        ),
    ]
}

/// A task's answers, and Step Functions' refusal of one.
fn task_answer_cases() -> Vec<Case> {
    vec![
        (
            task_event(TaskEvent::Success {
                attempts: 2,
                probably_delivered: false,
            }),
            "task:success",
            Level::INFO,
            Fields {
                attempts: Some(2),
                probably_delivered: Some(false),
                ..task_fields()
            },
        ),
        (
            task_event(TaskEvent::Failure {
                error: "E".into(),
                attempts: 1,
                probably_delivered: true,
            }),
            "task:failure",
            Level::INFO,
            Fields {
                attempts: Some(1),
                probably_delivered: Some(true),
                ..task_fields()
            },
        ),
        (
            task_event(TaskEvent::Retrying {
                attempt: 1,
                throttled: false,
                error: "e".into(),
                delay_ms: 200,
            }),
            "task:retrying",
            Level::WARN,
            Fields {
                throttled: Some(false),
                ..task_fields()
            },
        ),
        (
            task_event(TaskEvent::Refused {
                code: "InvalidOutput".into(),
                message: "m".into(),
            }),
            "task:refused",
            Level::WARN,
            Fields {
                code: Some("InvalidOutput"),
                ..task_fields()
            },
        ),
    ]
}

/// A task that ends without an answer of its own.
fn task_end_cases() -> Vec<Case> {
    vec![
        (
            task_event(TaskEvent::Undelivered {
                reason: "r".into(),
                probably_delivered: false,
            }),
            "task:undelivered",
            Level::ERROR,
            task_fields(),
        ),
        (
            task_event(TaskEvent::Cancelled { reason: "r".into() }),
            "task:cancelled",
            Level::INFO,
            Fields {
                reason: Some("r"),
                ..task_fields()
            },
        ),
        (
            task_event(TaskEvent::Errored {
                error: "SfnWasmHost.Trap".into(),
            }),
            "task:errored",
            Level::WARN,
            task_fields(),
        ),
    ]
}

/// `task:done`, for a guest that ran and for an answer kept by idempotency key.
fn task_done_cases() -> Vec<Case> {
    let done = TaskDone {
        outcome: TaskOutcome::HostFailure,
        error: DoneError::Host(crate::outcome::FailureKind::Trap),
        elapsed: Duration::from_millis(12),
        cpu: Duration::from_micros(1234),
        memory_peak_bytes: 65536,
        log_lines_dropped: 7,
        deduplicated: false,
    };
    let deduplicated = TaskDone {
        deduplicated: true,
        ..TaskDone::not_run(
            TaskOutcome::Success,
            DoneError::Guest,
            Duration::from_millis(3),
        )
    };
    vec![
        (
            task_event(TaskEvent::Done(done)),
            "task:done",
            Level::INFO,
            Fields {
                outcome: Some("host_failure"),
                error: Some("SfnWasmHost.Trap"),
                elapsed_ms: Some(12),
                cpu_ms: Some(1.234),
                memory_peak_bytes: Some(65536),
                log_lines_dropped: Some(7),
                ..task_fields()
            },
        ),
        (
            task_event(TaskEvent::Done(deduplicated)),
            "task:done",
            Level::INFO,
            Fields {
                outcome: Some("success"),
                error: Some("guest"),
                elapsed_ms: Some(3),
                cpu_ms: Some(0.0),
                memory_peak_bytes: Some(0),
                deduplicated: Some(true),
                ..task_fields()
            },
        ),
    ]
}

/// A handler version loaded, swapped in or rejected.
fn handler_version_cases() -> Vec<Case> {
    vec![
        (
            handler_event(HandlerEvent::Loaded {
                digest: Arc::from("d1"),
                cache: "hit",
                load_ms: 3,
            }),
            "handler:loaded",
            Level::INFO,
            Fields {
                handler_digest: Some("d1"),
                cache: Some("hit"),
                load_ms: Some(3),
                ..Fields::default()
            },
        ),
        (
            handler_event(HandlerEvent::Swapped {
                old_digest: Arc::from("d1"),
                new_digest: Arc::from("d2"),
                compile_ms: 4,
                cache: "miss",
            }),
            "handler:swapped",
            Level::INFO,
            Fields {
                old_digest: Some("d1"),
                new_digest: Some("d2"),
                compile_ms: Some(4),
                cache: Some("miss"),
                ..Fields::default()
            },
        ),
        (
            handler_event(HandlerEvent::Rejected {
                digest: Arc::from("d3"),
                reason: "pin".into(),
            }),
            "handler:rejected",
            Level::WARN,
            Fields {
                digest: Some("d3"),
                reason: Some("pin"),
                ..Fields::default()
            },
        ),
    ]
}

/// A canary, and its judgement.
fn canary_cases() -> Vec<Case> {
    vec![
        (
            handler_event(HandlerEvent::Canary {
                old_digest: Arc::from("d1"),
                new_digest: Arc::from("d2"),
                percent: 10,
            }),
            "handler:canary",
            Level::INFO,
            Fields {
                old_digest: Some("d1"),
                new_digest: Some("d2"),
                percent: Some(10),
                ..Fields::default()
            },
        ),
        (
            handler_event(HandlerEvent::Promoted {
                old_digest: Arc::from("d1"),
                new_digest: Arc::from("d2"),
                judged: JUDGED,
            }),
            "handler:promoted",
            Level::INFO,
            judged_fields(),
        ),
        (
            handler_event(HandlerEvent::RolledBack {
                old_digest: Arc::from("d1"),
                new_digest: Arc::from("d2"),
                judged: JUDGED,
                max_failure_rate_increase: 0.05,
            }),
            "handler:rolledback",
            Level::WARN,
            Fields {
                max_failure_rate_increase: Some(0.05),
                ..judged_fields()
            },
        ),
    ]
}

#[test]
fn each_event_has_its_name_level_and_fields() {
    let cases: Vec<Case> = [
        worker_cases(),
        task_start_cases(),
        task_answer_cases(),
        task_end_cases(),
        task_done_cases(),
        handler_version_cases(),
        canary_cases(),
    ]
    .concat();
    let names: std::collections::BTreeSet<&str> = cases.iter().map(|case| case.1).collect();
    assert_eq!(names.len(), 25, "every event of the seed's and the host's");
    for (event, name, level, fields) in &cases {
        assert_eq!(event.kind.name(), *name);
        let (actual_level, actual_fields) = line(event);
        assert_eq!((actual_level, &actual_fields), (*level, fields), "{name}");
    }
}

/// A writer the test subscriber writes JSON lines into.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The JSON object `event` is logged as.
fn logged(event: &Event) -> serde_json::Value {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_max_level(Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || log::log(event));
    let bytes = captured.0.lock().unwrap().clone();
    serde_json::from_slice(&bytes).expect("one JSON line")
}

#[test]
fn a_log_line_carries_exactly_the_events_fields() {
    let event = task_event(TaskEvent::Done(TaskDone::not_run(
        TaskOutcome::Closed,
        DoneError::Closed,
        Duration::from_millis(7),
    )));
    let line = logged(&event);
    assert_eq!(line["level"], "INFO");
    // Under the module's name, as before the events were split by family.
    assert_eq!(line["target"], "sfn_wasm_host::events");
    assert_eq!(line["message"], "task:done");
    assert_eq!(line["event"], "task:done");
    assert_eq!(line["activity"], "arn");
    assert_eq!(line["worker"], "w:1");
    assert_eq!(line["task_id"], "0123456789abcdef");
    assert_eq!(line["outcome"], "closed");
    assert_eq!(line["error"], "closed");
    assert_eq!(line["elapsed_ms"], 7);
    assert_eq!(line["cpu_ms"], 0.0);
    assert_eq!(line["memory_peak_bytes"], 0);
    for absent in [
        "throttled",
        "reason",
        "digest",
        "cache",
        "percent",
        "attempts",
    ] {
        assert!(line.get(absent).is_none(), "{absent} in {line}");
    }

    let line = logged(&worker_event(WorkerEvent::PollingError {
        error: "connection refused".into(),
        attempt: 3,
        throttled: false,
        blocked: false,
    }));
    assert_eq!(line["level"], "WARN");
    assert_eq!(
        line["message"],
        "polling:error: attempt 3: connection refused"
    );
    assert_eq!(line["throttled"], false);
    assert!(line.get("task_id").is_none(), "{line}");

    let line = logged(&handler_event(HandlerEvent::Rejected {
        digest: Arc::from("d3"),
        reason: "another digest than the pin".into(),
    }));
    assert_eq!(
        line["message"],
        "handler:rejected: another digest than the pin"
    );
    assert!(line.get("worker").is_none(), "{line}");
    assert_eq!(line["digest"], "d3");
}

#[test]
fn emitters_give_each_family_its_subject() {
    let events = Events::default();
    let mut received = events.subscribe();
    let activity = Emitter::for_activity(events, Arc::from("arn"));
    let worker = activity.for_worker(Arc::from("w:1"));
    let task_emitter = worker.for_task(task());
    activity.emit(HandlerEvent::Canary {
        old_digest: Arc::from("d1"),
        new_digest: Arc::from("d2"),
        percent: 5,
    });
    worker.emit(WorkerEvent::Running);
    task_emitter.emit(TaskEvent::Start {
        wait: Duration::ZERO,
    });
    let handler = received.try_recv().unwrap();
    assert_eq!((handler.worker(), handler.task()), (None, None));
    let running = received.try_recv().unwrap();
    assert_eq!(running.worker().map(|w| &**w), Some("w:1"));
    assert_eq!(running.task(), None);
    let start = received.try_recv().unwrap();
    assert_eq!(start.task(), Some(&task()));
    assert_eq!(
        start.task_event(),
        Some(&TaskEvent::Start {
            wait: Duration::ZERO
        })
    );
}
