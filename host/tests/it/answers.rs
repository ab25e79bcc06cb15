//! Answers the host owns, against LocalStack: delivery through a network outage, an
//! answer at the deadline, automatic heartbeats, cancellation of a task Step Functions
//! closed, and guests that cannot starve polls, answers or heartbeats.

use std::time::Duration;

use aws_sdk_sfn::types::ExecutionStatus;
use serde_json::json;
use sfn_wasm_host::events::{Event, EventKind, TaskEvent, WorkerEvent};

use crate::support::emulator;
use crate::support::harness::{Harness, Setup, assert_none_of, names};
use crate::support::proxy::Proxy;

/// Whether every worker that was throttled started a poll after its last throttled one.
fn polls_after_throttling(events: &[Event]) -> bool {
    let mut last: std::collections::HashMap<&str, bool> = std::collections::HashMap::new();
    for event in events {
        let Some(worker) = event.worker().map(|w| &**w) else {
            continue;
        };
        match event.kind {
            EventKind::Worker {
                event:
                    WorkerEvent::PollingError {
                        throttled: true, ..
                    },
                ..
            } => {
                last.insert(worker, false);
            }
            EventKind::Worker {
                event: WorkerEvent::PollingStarting,
                ..
            } => {
                last.entry(worker).and_modify(|polled| *polled = true);
            }
            _ => {}
        }
    }
    !last.is_empty() && last.values().all(|polled| *polled)
}

fn task_ids(events: &[Event], kind: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.kind.name() == kind)
        .map(|e| e.task().unwrap().task_id.to_string())
        .collect()
}

/// Takes in events until `until` has been seen for `n` different tasks.
async fn until_tasks(h: &mut Harness, until: &str, n: usize, limit: Duration) -> Vec<Event> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let mut ids = task_ids(&seen, until);
        ids.sort();
        ids.dedup();
        if ids.len() >= n {
            return seen;
        }
        let event = tokio::time::timeout_at(deadline, h.events.recv())
            .await
            .unwrap_or_else(|_| panic!("no {n} x {until} within {limit:?}: {:?}", names(&seen)))
            .expect("event channel");
        seen.push(event);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_survive_a_network_outage() {
    let proxy = Proxy::start().await;
    let mut h = Setup {
        workers: 4,
        endpoint: proxy.endpoint(),
        ..Setup::new("scenarios")
    }
    .start()
    .await;
    h.events_until_nth("worker:running", 4, Duration::from_secs(10))
        .await;
    let executions: Vec<String> = futures::future::join_all((0..4).map(|i| {
        emulator::start(
            &h.client,
            &h.state_machine,
            json!({"hello": "Sleep", "ms": 1000 + i}),
        )
    }))
    .await;
    let mut events = until_tasks(&mut h, "task:start", 4, Duration::from_secs(20)).await;
    // The guests answer while the network is down; it comes back 15 s later.
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(15)).await;
    proxy.restore();
    events.extend(until_tasks(&mut h, "task:done", 4, Duration::from_secs(60)).await);
    for (i, execution) in executions.iter().enumerate() {
        let ended = emulator::wait(&h.client, execution, Duration::from_secs(60)).await;
        assert_eq!(ended.status, ExecutionStatus::Succeeded, "{ended:?}");
        assert_eq!(ended.output, Some(json!({"slept_ms": 1000 + i})));
    }
    let retried = task_ids(&events, "task:retrying");
    let delivered: Vec<&Event> = events
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::Task {
                    event: TaskEvent::Success { .. },
                    ..
                }
            )
        })
        .collect();
    assert_eq!(delivered.len(), 4, "{:?}", names(&events));
    for event in delivered {
        let id = event.task().unwrap().task_id.to_string();
        assert!(retried.contains(&id), "task {id} was not retried");
        assert!(
            matches!(event.kind, EventKind::Task { event: TaskEvent::Success { attempts, .. }, .. } if attempts > 1),
            "{event:?}"
        );
    }
    assert_none_of(&events, &["task:failure"]);
    h.consumer.shutdown(Duration::from_secs(1)).await;
}

/// Step Functions throttling polls and answers for 5 s: the workers wait it out without
/// counting it as failed polls (two failures in a row would stop them here: the one when
/// the proxy drops their long polls, and one more), the answer is retried and delivered,
/// and both are reported as throttled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_waited_out_not_counted_as_failures() {
    let proxy = Proxy::start().await;
    let mut h = Setup {
        workers: 2,
        endpoint: proxy.endpoint(),
        extra: "[activity.polling]\nmax_attempts = 2\ninterval_seconds = 0.1",
        ..Setup::new("scenarios")
    }
    .start()
    .await;
    h.events_until_nth("worker:running", 2, Duration::from_secs(10))
        .await;
    let execution = emulator::start(
        &h.client,
        &h.state_machine,
        json!({"hello": "Sleep", "ms": 1500}),
    )
    .await;
    let mut events = h.events_until("task:start", Duration::from_secs(20)).await;
    proxy.throttle();
    tokio::time::sleep(Duration::from_secs(5)).await;
    proxy.restore();
    events.extend(h.events_until("task:done", Duration::from_secs(60)).await);
    let ended = emulator::wait(&h.client, &execution, Duration::from_secs(60)).await;
    assert_eq!(ended.status, ExecutionStatus::Succeeded, "{ended:?}");
    assert_eq!(ended.output, Some(json!({"slept_ms": 1500})));

    let throttled_polls = events
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::Worker {
                    event: WorkerEvent::PollingError {
                        throttled: true,
                        ..
                    },
                    ..
                }
            )
        })
        .count();
    assert!(throttled_polls >= 2, "{:?}", names(&events));
    assert!(
        events.iter().any(|e| matches!(
            e.kind,
            EventKind::Task {
                event: TaskEvent::Retrying {
                    throttled: true,
                    ..
                },
                ..
            }
        )),
        "{:?}",
        names(&events)
    );
    // The workers poll on: each polls again after its last throttled poll (its backoff
    // is at most 10 s). (A new execution would prove it only after a minute: the long
    // polls the proxy dropped still wait in LocalStack and would take its task.)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !polls_after_throttling(&events) {
        let event = tokio::time::timeout_at(deadline, h.events.recv())
            .await
            .unwrap_or_else(|_| panic!("the workers did not poll again: {:?}", names(&events)))
            .expect("event channel");
        events.push(event);
    }
    assert_none_of(&events, &["worker:error", "worker:stopped", "task:failure"]);
    h.consumer.shutdown(Duration::from_secs(1)).await;
}

/// A guest that answers just before its deadline races the host's own answer for it
/// (`SfnWasmHost.Timeout`). Which one wins within a tick or two of the deadline is up to
/// the machine's scheduler (a loaded machine wakes the guest late), so the test holds the
/// host to what it promises either way: exactly one answer, the one Step Functions
/// records. An answer well before the deadline is the guest's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_at_the_deadline_is_the_one_answer() {
    let mut h = Setup {
        task_timeout: 1.0,
        ..Setup::new("scenarios")
    }
    .start()
    .await;
    // Milliseconds before the deadline, as the guest measures it (its `deadline-ms`).
    for margin_ms in [250, 25, 15, 10, 0] {
        let ended = h.run(json!({"hello": "Deadline", "ms": margin_ms})).await;
        let events = h.events_until("task:done", Duration::from_secs(10)).await;
        let answers: Vec<&str> = names(&events)
            .into_iter()
            .filter(|n| matches!(*n, "task:success" | "task:failure"))
            .collect();
        match answers.as_slice() {
            ["task:success"] => {
                assert_eq!(
                    ended.status,
                    ExecutionStatus::Succeeded,
                    "{margin_ms}: {ended:?}"
                );
                assert_eq!(ended.output, Some(json!({"greeting": "Hello, Deadline"})));
            }
            ["task:failure"] if margin_ms < 250 => {
                assert_eq!(
                    ended.status,
                    ExecutionStatus::Failed,
                    "{margin_ms}: {ended:?}"
                );
                assert_eq!(
                    ended.error.as_deref(),
                    Some("SfnWasmHost.Timeout"),
                    "{margin_ms}: {ended:?}"
                );
            }
            other => panic!("{margin_ms}: answers {other:?} in {:?}", names(&events)),
        }
    }
    h.consumer.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_heartbeats_keep_a_long_task_alive() {
    let mut h = Setup {
        heartbeat: Some(3),
        extra: "heartbeat_seconds = 1",
        ..Setup::new("scenarios")
    }
    .start()
    .await;
    let ended = h.run(json!({"hello": "Sleep", "ms": 10_000})).await;
    assert_eq!(ended.status, ExecutionStatus::Succeeded, "{ended:?}");
    assert_eq!(ended.output, Some(json!({"slept_ms": 10_000})));
    let events = h.events_until("task:done", Duration::from_secs(10)).await;
    let auto = events
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::Task {
                    event: TaskEvent::Heartbeat {
                        source: sfn_wasm_host::outcome::HeartbeatSource::Auto
                    },
                    ..
                }
            )
        })
        .count();
    assert!(
        (7..=11).contains(&auto),
        "{auto} automatic heartbeats in 10 s"
    );
    h.consumer.shutdown(Duration::from_secs(1)).await;
}

/// A closed task, as the test saw it happen.
struct Closed {
    events: Vec<Event>,
    ended: emulator::Ended,
    /// From `task:start` to `task:cancelled`, and to `task:done`.
    to_cancelled: Duration,
    to_done: Duration,
}

/// The state times out (`HeartbeatSeconds` = 2) before the host's first automatic
/// heartbeat (every 3 s), which Step Functions then refuses: the task is closed.
async fn closed_under(hello: &str, grace: &str) -> Closed {
    let extra = format!("heartbeat_seconds = 3\ncancel_grace_seconds = {grace}");
    let mut h = Setup {
        heartbeat: Some(2),
        extra: &extra,
        ..Setup::new("scenarios")
    }
    .start()
    .await;
    let execution = emulator::start(
        &h.client,
        &h.state_machine,
        json!({"hello": hello, "ms": 60_000}),
    )
    .await;
    let limit = Duration::from_secs(20);
    let mut events = h.events_until("task:start", limit).await;
    let started = tokio::time::Instant::now();
    events.extend(h.events_until("task:cancelled", limit).await);
    let to_cancelled = started.elapsed();
    events.extend(h.events_until("task:done", limit).await);
    let to_done = started.elapsed();
    let ended = emulator::wait(&h.client, &execution, limit).await;
    h.consumer.shutdown(Duration::from_secs(1)).await;
    Closed {
        events,
        ended,
        to_cancelled,
        to_done,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_task_cancels_its_guest_and_sends_nothing() {
    let closed = closed_under("Patient", "5").await;
    assert_eq!(
        closed.ended.status,
        ExecutionStatus::Failed,
        "{:?}",
        closed.ended
    );
    assert_eq!(
        closed.ended.error.as_deref(),
        Some("States.Timeout"),
        "{:?}",
        closed.ended
    );
    let cancelled = closed
        .events
        .iter()
        .find(|e| e.kind.name() == "task:cancelled")
        .unwrap();
    assert!(
        matches!(&cancelled.kind, EventKind::Task { event: TaskEvent::Cancelled { reason }, .. } if !reason.is_empty()),
        "{cancelled:?}"
    );
    // Found closed by the first automatic heartbeat: within heartbeat_seconds + 1 s.
    assert!(
        closed.to_cancelled < Duration::from_secs(3 + 1),
        "{:?}",
        closed.to_cancelled
    );
    // The guest saw cancelled() and returned by itself, long before the 5 s grace.
    assert!(
        closed.to_done - closed.to_cancelled < Duration::from_secs(2),
        "{:?}",
        closed.to_done
    );
    assert_none_of(
        &closed.events,
        &["task:success", "task:failure", "task:errored"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_task_whose_guest_ignores_it_is_aborted_after_the_grace() {
    let closed = closed_under("Sleep", "1").await;
    assert_eq!(
        closed.ended.error.as_deref(),
        Some("States.Timeout"),
        "{:?}",
        closed.ended
    );
    // heartbeat_seconds + cancel_grace_seconds + 1; the guest would sleep for 60 s.
    assert!(
        closed.to_done < Duration::from_secs(3 + 1 + 1),
        "{:?}",
        closed.to_done
    );
    // Aborted by the grace, not before it.
    assert!(
        closed.to_done - closed.to_cancelled >= Duration::from_millis(900),
        "{:?} {:?}",
        closed.to_cancelled,
        closed.to_done
    );
    assert_none_of(&closed.events, &["task:success", "task:failure"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_bound_guests_do_not_starve_heartbeats() {
    // Four guests burn CPU for 6 s on a 2-core machine; the state times out after 2 s
    // without a heartbeat. Only heartbeats sent on time keep them alive.
    let mut h = Setup {
        workers: 4,
        heartbeat: Some(2),
        extra: "heartbeat_seconds = 0.5",
        ..Setup::new("pushy")
    }
    .start()
    .await;
    h.events_until_nth("worker:running", 4, Duration::from_secs(10))
        .await;
    let executions: Vec<String> = futures::future::join_all((0..4).map(|_| {
        emulator::start(
            &h.client,
            &h.state_machine,
            json!({"push": "spin", "ms": 6000}),
        )
    }))
    .await;
    for execution in &executions {
        let ended = emulator::wait(&h.client, execution, Duration::from_secs(60)).await;
        assert_eq!(ended.status, ExecutionStatus::Succeeded, "{ended:?}");
        assert_eq!(ended.output, Some(json!({"survived": "spin"})));
    }
    h.consumer.shutdown(Duration::from_secs(1)).await;
}
