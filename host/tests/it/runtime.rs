//! The runtime against a real Step Functions API (LocalStack): workers and pools in
//! process, with the seed's event orders.

use std::time::Duration;

use aws_sdk_sfn::types::ExecutionStatus;
use serde_json::json;
use sfn_wasm_host::events::{Event, EventKind, TaskEvent, WorkerEvent};

use crate::support::emulator;
use crate::support::harness::{Setup, assert_none_of, names};

/// The events of the one task in `events`, from the poll that brought it.
fn task_events(events: &[Event]) -> Vec<&'static str> {
    let received = events
        .iter()
        .position(|e| {
            matches!(
                e.kind,
                EventKind::Task {
                    event: TaskEvent::Received,
                    ..
                }
            )
        })
        .expect("task:received");
    let start = events[..received]
        .iter()
        .rposition(|e| {
            matches!(
                e.kind,
                EventKind::Worker {
                    event: WorkerEvent::PollingStarting,
                    ..
                }
            )
        })
        .unwrap_or_else(|| panic!("no polling:starting before the task: {:?}", names(events)));
    names(&events[start..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_scenarios_end_to_end() {
    let mut h = Setup::new("scenarios").start().await;
    h.events_until("worker:running", Duration::from_secs(10))
        .await;
    let prefix = [
        "polling:starting",
        "polling:success",
        "task:received",
        "task:start",
    ];
    let cases: [(&str, &[&str], ExecutionStatus, Option<&str>); 6] = [
        (
            "World",
            &["task:success", "task:done"],
            ExecutionStatus::Succeeded,
            None,
        ),
        (
            "Heartbeat",
            &["task:heartbeat", "task:success", "task:done"],
            ExecutionStatus::Succeeded,
            None,
        ),
        (
            "Failure",
            &["task:failure", "task:done"],
            ExecutionStatus::Failed,
            Some("InvalidName"),
        ),
        (
            "Error",
            &["task:errored", "task:failure", "task:done"],
            ExecutionStatus::Failed,
            Some("SfnWasmHost.Trap"),
        ),
        (
            "Forgot",
            &["task:errored", "task:failure", "task:done"],
            ExecutionStatus::Failed,
            Some("SfnWasmHost.NoResponse"),
        ),
        (
            "Duplicate",
            &["task:success", "task:errored", "task:done"],
            ExecutionStatus::Succeeded,
            None,
        ),
    ];
    for (hello, tail, status, error) in cases {
        let ended = h.run(json!({"hello": hello})).await;
        let events = h.events_until("task:done", Duration::from_secs(10)).await;
        let expected: Vec<&str> = prefix.iter().chain(tail).copied().collect();
        assert_eq!(task_events(&events), expected, "{hello}: {events:?}");
        assert_eq!(ended.status, status, "{hello}: {ended:?}");
        assert_eq!(ended.error.as_deref(), error, "{hello}: {ended:?}");
        if status == ExecutionStatus::Succeeded {
            assert_eq!(
                ended.output,
                Some(json!({"greeting": format!("Hello, {hello}")}))
            );
        }
        // Every task event names the task and the handler version.
        let task = events
            .iter()
            .find(|e| {
                matches!(
                    e.kind,
                    EventKind::Task {
                        event: TaskEvent::Start { .. },
                        ..
                    }
                )
            })
            .unwrap()
            .task()
            .cloned()
            .unwrap();
        assert_eq!(task.task_id.len(), 16);
        assert_eq!(task.handler_digest.len(), 64);
    }
    h.consumer.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_no_task_starts_and_stops_promptly() {
    let mut h = Setup::new("greet").start().await;
    let started = h
        .events_until("polling:starting", Duration::from_secs(10))
        .await;
    assert_eq!(
        names(&started),
        ["worker:starting", "worker:running", "polling:starting"]
    );
    let stopping = std::time::Instant::now();
    let report = h.consumer.shutdown(Duration::from_secs(2)).await;
    // The idle long poll is kept for the grace (a task it brought would be answered),
    // then dropped rather than waited out for its 60 s.
    assert!(report.aborted);
    assert!(
        stopping.elapsed() >= Duration::from_secs(2) && stopping.elapsed() < Duration::from_secs(4),
        "stop took {:?}",
        stopping.elapsed()
    );
    let stopped = h
        .events_until("worker:stopped", Duration::from_secs(1))
        .await;
    assert_eq!(names(&stopped), ["worker:stopping", "worker:stopped"]);
    assert!(
        matches!(
            stopped[1].kind,
            EventKind::Worker {
                event: WorkerEvent::Stopped { exit_code: 0 },
                ..
            }
        ),
        "{:?}",
        stopped[1].kind
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_of_four_answers_many_executions_exactly_once() {
    let mut h = Setup {
        workers: 4,
        ..Setup::new("greet")
    }
    .start()
    .await;
    h.events_until_nth("worker:running", 4, Duration::from_secs(10))
        .await;
    let executions: Vec<String> = futures::future::join_all((0..40).map(|i| {
        emulator::start(
            &h.client,
            &h.state_machine,
            json!({"hello": format!("n{i}")}),
        )
    }))
    .await;
    for (i, execution) in executions.iter().enumerate() {
        let ended = emulator::wait(&h.client, execution, Duration::from_secs(120)).await;
        assert_eq!(ended.status, ExecutionStatus::Succeeded, "{ended:?}");
        assert_eq!(
            ended.output,
            Some(json!({"greeting": format!("Hello, n{i}")}))
        );
    }
    h.consumer.shutdown(Duration::from_secs(1)).await;
    let mut answers = std::collections::HashMap::<String, usize>::new();
    let mut workers = std::collections::HashSet::new();
    while let Ok(event) = h.events.try_recv() {
        if matches!(
            event.kind,
            EventKind::Task {
                event: TaskEvent::Success { .. },
                ..
            } | EventKind::Task {
                event: TaskEvent::Failure { .. },
                ..
            }
        ) {
            *answers
                .entry(event.task().unwrap().task_id.to_string())
                .or_default() += 1;
            workers.insert(event.worker().cloned());
        }
    }
    assert_eq!(answers.len(), 40, "every task answered");
    assert!(
        answers.values().all(|n| *n == 1),
        "each exactly once: {answers:?}"
    );
    assert!(workers.len() > 1, "the pool shared the work");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_heartbeat_times_the_execution_out() {
    let mut h = Setup {
        heartbeat: Some(1),
        ..Setup::new("scenarios")
    }
    .start()
    .await;
    let ended = h.run(json!({"hello": "Sleep", "ms": 3000})).await;
    assert_eq!(ended.status, ExecutionStatus::Failed, "{ended:?}");
    assert_eq!(ended.error.as_deref(), Some("States.Timeout"), "{ended:?}");
    // The late success is refused as a closed task; nothing else is sent for it.
    let events = h.events_until("task:done", Duration::from_secs(10)).await;
    assert_none_of(&events, &["task:success", "task:failure"]);
    h.consumer.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_resizes_up_and_down_at_runtime() {
    let mut h = Setup {
        workers: 2,
        ..Setup::new("greet")
    }
    .start()
    .await;
    h.events_until_nth("worker:running", 2, Duration::from_secs(10))
        .await;
    h.pool().set_desired_capacity(4);
    assert_eq!(h.pool().desired_capacity(), 4);
    h.events_until_nth("worker:running", 2, Duration::from_secs(10))
        .await;
    h.pool().set_desired_capacity(1);
    // Retired workers finish their poll (LocalStack holds an idle one for 60 s) and the
    // task it brings, then stop; the tasks keep being answered meanwhile.
    let mut stopped = 0;
    for i in 0..12 {
        let ended = h.run(json!({"hello": format!("r{i}")})).await;
        assert_eq!(ended.status, ExecutionStatus::Succeeded, "{ended:?}");
        while let Ok(event) = h.events.try_recv() {
            if let EventKind::Worker {
                event: WorkerEvent::Stopped { exit_code },
                ..
            } = event.kind
            {
                assert_eq!(exit_code, 0);
                stopped += 1;
            }
        }
        if stopped == 3 {
            break;
        }
    }
    assert_eq!(stopped, 3, "three workers retired");
    // The one worker left still serves.
    let ended = h.run(json!({"hello": "one"})).await;
    assert_eq!(ended.status, ExecutionStatus::Succeeded, "{ended:?}");
    h.consumer.shutdown(Duration::from_secs(1)).await;
}
