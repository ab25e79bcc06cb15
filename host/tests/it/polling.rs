//! Poll errors: backoff events while Step Functions is unreachable, the worker giving up
//! and being replaced by its pool, and recovery once the endpoint is back.

use std::time::Duration;

use aws_sdk_sfn::types::ExecutionStatus;
use serde_json::json;
use sfn_wasm_host::events::EventKind;
use tokio::net::TcpListener;

use crate::answers::Proxy;
use crate::runtime::{Setup, names};

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
            EventKind::PollingError { attempt, .. } => Some(attempt),
            _ => None,
        })
        .collect();
    assert_eq!(attempts, [1, 2]);
    assert_eq!(
        events.last().unwrap().kind,
        EventKind::WorkerStopped { exit_code: 10 }
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
