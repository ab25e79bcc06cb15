//! Poll errors: backoff events while Step Functions is unreachable, the worker giving up
//! and being replaced by its pool, and recovery once the endpoint is back.

use std::time::Duration;

use aws_sdk_sfn::types::ExecutionStatus;
use serde_json::json;
use sfn_wasm_host::events::{EventKind, TaskEvent, WorkerEvent};
use tokio::net::TcpListener;

use crate::support::harness::{Setup, names};
use crate::support::proxy::Proxy;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_errors_back_off_restart_the_worker_and_recover() {
    // A port with nothing behind it yet: connections are refused at once.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let extra = "restart_interval_ms = 300\n[activity.polling]\nmax_attempts = 2\ninterval_seconds = 0.1\nbackoff_rate = 2.0";
    let mut h = Setup {
        extra,
        endpoint: format!("http://127.0.0.1:{port}"),
        ..Setup::new("greet")
    }
    .start()
    .await;

    let events = h
        .events_until("worker:stopped", Duration::from_secs(20))
        .await;
    assert_eq!(
        names(&events),
        [
            "worker:starting",
            "worker:running",
            "polling:starting",
            "polling:error",
            "polling:starting",
            "polling:error",
            "worker:error",
            "worker:stopping",
            "worker:stopped",
        ]
    );
    let attempts: Vec<u32> = events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Worker {
                event: WorkerEvent::PollingError { attempt, .. },
                ..
            } => Some(attempt),
            _ => None,
        })
        .collect();
    assert_eq!(attempts, [1, 2]);
    let last = &events.last().unwrap().kind;
    assert!(
        matches!(
            last,
            EventKind::Worker {
                event: WorkerEvent::Stopped { exit_code: 10 },
                ..
            }
        ),
        "{last:?}"
    );

    // The pool replaces the worker after restart_interval_ms.
    let replaced = h
        .events_until("worker:running", Duration::from_secs(10))
        .await;
    assert_eq!(names(&replaced)[0], "worker:starting");

    // The endpoint comes back; the next worker serves tasks again.
    let _proxy = Proxy::on(TcpListener::bind(("127.0.0.1", port)).await.unwrap());
    let ended = h.run(json!({"hello": "again"})).await;
    assert_eq!(ended.status, ExecutionStatus::Succeeded, "{ended:?}");
    assert_eq!(ended.output, Some(json!({"greeting": "Hello, again"})));
    h.consumer.shutdown(Duration::from_secs(1)).await;
}

/// Which tasks ran at the same time: the most `task:start`s without their `task:done`.
fn most_at_once(events: &[sfn_wasm_host::events::Event]) -> usize {
    let (mut running, mut most) = (0usize, 0usize);
    for event in events {
        match event.kind {
            EventKind::Task {
                event: TaskEvent::Start { .. },
                ..
            } => running += 1,
            EventKind::Task {
                event: TaskEvent::Done(_),
                ..
            } => running = running.saturating_sub(1),
            _ => {}
        }
        most = most.max(running);
    }
    most
}

/// Pollers and task slots apart: one poller fills three slots (it polls again while its
/// tasks run); two pollers with one slot run one task at a time, the second poller
/// waiting for the slot instead of fetching a task it could not start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pollers_poll_only_for_free_task_slots() {
    for (pollers, slots, expected) in [(1, 3, 3), (2, 1, 1)] {
        let extra = format!("pollers = {pollers}\nmax_concurrent_tasks = {slots}");
        let mut h = Setup {
            extra: &extra,
            ..Setup::new("scenarios")
        }
        .start()
        .await;
        h.events_until_nth("worker:running", pollers, Duration::from_secs(10))
            .await;
        let executions: Vec<String> = futures::future::join_all((0..3).map(|i| {
            crate::support::emulator::start(
                &h.client,
                &h.state_machine,
                json!({"hello": "Sleep", "ms": 1500 + i}),
            )
        }))
        .await;
        let events = h
            .events_until_nth("task:done", 3, Duration::from_secs(30))
            .await;
        assert_eq!(
            most_at_once(&events),
            expected,
            "{pollers} pollers, {slots} slots: {:?}",
            names(&events)
        );
        for execution in &executions {
            let ended =
                crate::support::emulator::wait(&h.client, execution, Duration::from_secs(30)).await;
            assert_eq!(ended.status, ExecutionStatus::Succeeded, "{ended:?}");
        }
        h.consumer.shutdown(Duration::from_secs(1)).await;
    }
}
