//! What Step Functions accepted is what the host reports, against a scriptable stand-in
//! for the service (the faults LocalStack cannot make: refusals with KMS's and the API's
//! error codes, throttling with a 400). The host's clients are the real `aws-sdk-sfn`
//! ones, pointed at the stand-in; the handlers are real components.

use std::time::Duration;

use serde_json::json;
use sfn_wasm_host::config::Config;
use sfn_wasm_host::events::{Event, EventKind, TaskEvent, WorkerEvent};
use sfn_wasm_host::sfn::{AwsStepFunctions, ERROR_CODES, ErrorClass, SfnError, StepFunctions};

use crate::support::guests::guest;
use crate::support::harness::consumer;
use crate::support::standin::{Reply, StandIn};

const ARN: &str = "arn:aws:states:us-east-1:000000000000:activity:standin";

/// The host serving `guest_name` against `standin` until `tasks` tasks are done; the
/// events it emitted.
async fn serve_tasks(standin: &StandIn, guest_name: &str, tasks: usize) -> Vec<Event> {
    serve_with(standin, guest_name, tasks, "").await
}

/// As [`serve_tasks`], with `extra` lines in the activity's table.
async fn serve_with(standin: &StandIn, guest_name: &str, tasks: usize, extra: &str) -> Vec<Event> {
    let path = guest(guest_name);
    let text = format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n[host]\ncache = false\n\
         [[activity]]\narn = \"{ARN}\"\nhandler = \"{}\"\ntask_timeout_seconds = 20\n{extra}\n",
        standin.endpoint,
        path.display(),
    );
    let config = Config::parse(std::path::Path::new("/tests/standin.toml"), &text).unwrap();
    let (mut consumer, mut receiver) = consumer(&config, &path).await;
    consumer.start();
    let mut seen = Vec::new();
    let mut done = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while done < tasks {
        let event = tokio::time::timeout_at(deadline, receiver.recv())
            .await
            .expect("the tasks end within a minute")
            .expect("events");
        if matches!(event.task_event(), Some(TaskEvent::Done(_))) {
            done += 1;
        }
        seen.push(event);
    }
    consumer.shutdown(Duration::from_secs(1)).await;
    seen
}

fn done(events: &[Event]) -> (&'static str, &'static str) {
    events
        .iter()
        .find_map(|e| match e.task_event() {
            Some(TaskEvent::Done(done)) => Some((done.outcome.name(), done.error.name())),
            _ => None,
        })
        .expect("task:done")
}

fn refused_codes(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e.task_event() {
            Some(TaskEvent::Refused { code, .. }) => Some(code.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_success_is_no_answer_and_ends_in_answer_refused() {
    for code in [
        "InvalidOutput",
        "ValidationException",
        "KmsAccessDeniedException",
    ] {
        let standin = StandIn::start().await;
        standin.task("token-1", json!({"hello": "World"}));
        standin.reply("SendTaskSuccess", [Reply::refuse(code)]);
        let events = serve_tasks(&standin, "greet", 1).await;
        // The guest heard the refusal (its `success` returned `unavailable`) and returned
        // the error; the host answered for it, saying what Step Functions refused.
        assert_eq!(standin.received("SendTaskSuccess").len(), 1, "{code}");
        let failures = standin.received("SendTaskFailure");
        assert_eq!(failures.len(), 1, "{code}: {failures:?}");
        assert_eq!(failures[0]["error"], "SfnWasmHost.AnswerRefused", "{code}");
        let cause = failures[0]["cause"].as_str().unwrap();
        assert!(cause.contains(code), "{code}: {cause}");
        assert_eq!(refused_codes(&events), [code]);
        assert_eq!(done(&events), ("host_failure", "SfnWasmHost.AnswerRefused"));
    }
}

/// A stored answer (idempotency) that Step Functions refuses for good (the KMS key of
/// another state machine) ends as a guest's refused answer does: the host answers
/// `SfnWasmHost.AnswerRefused`, and no task is left without an answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_stored_answer_ends_in_answer_refused() {
    let standin = StandIn::start().await;
    let store = tempfile::tempdir().unwrap();
    standin.task("token-1", json!({"hello": "World", "orderId": "o-1"}));
    standin.task("token-2", json!({"hello": "World", "orderId": "o-1"}));
    // The first (the guest's) is taken; the second (the stored one) is refused.
    standin.reply(
        "SendTaskSuccess",
        [Reply::accept(), Reply::refuse("KmsAccessDeniedException")],
    );
    let events = serve_with(
        &standin,
        "greet",
        2,
        &format!(
            "workers = 1\n[activity.idempotency]\nkey = \"/orderId\"\nstore = \"{}\"",
            store.path().join("answers").display()
        ),
    )
    .await;
    let successes = standin.received("SendTaskSuccess");
    assert_eq!(successes.len(), 2, "the guest's, then the stored one");
    assert_eq!(successes[0]["output"], successes[1]["output"]);
    let failures = standin.received("SendTaskFailure");
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0]["taskToken"], "token-2");
    assert_eq!(failures[0]["error"], "SfnWasmHost.AnswerRefused");
    let done: Vec<(&str, &str, bool)> = events
        .iter()
        .filter_map(|e| match e.task_event() {
            Some(TaskEvent::Done(done)) => {
                Some((done.outcome.name(), done.error.name(), done.deduplicated))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        done,
        [
            ("success", "guest", false),
            ("host_failure", "SfnWasmHost.AnswerRefused", true)
        ]
    );
}

/// An answer that reaches Step Functions after it closed the task (it timed out) is no
/// answer either: the task ended `closed`, whatever the guest answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_after_the_task_closed_is_closed() {
    let standin = StandIn::start().await;
    standin.task("token-1", json!({"hello": "Late"}));
    standin.reply("SendTaskSuccess", [Reply::refuse("TaskTimedOut")]);
    let events = serve_tasks(&standin, "greet", 1).await;
    assert_eq!(standin.received("SendTaskSuccess").len(), 1);
    assert!(standin.received("SendTaskFailure").is_empty());
    assert_eq!(done(&events), ("closed", "closed"));
}

/// A refusal whose message quotes the task token (a credential): neither the guest, nor
/// the cause sent to Step Functions, nor an event carries it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_quoting_the_task_token_passes_it_to_nobody() {
    let token = "secret-task-token-0123456789";
    let standin = StandIn::start().await;
    standin.task(token, json!({"hello": "World"}));
    standin.reply(
        "SendTaskSuccess",
        [Reply::refuse_quoting_the_token("ValidationException")],
    );
    let events = serve_tasks(&standin, "greet", 1).await;
    let failures = standin.received("SendTaskFailure");
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0]["taskToken"], token);
    let cause = failures[0]["cause"].as_str().unwrap();
    assert!(cause.contains("ValidationException"), "{cause}");
    assert!(cause.contains("<task token>"), "{cause}");
    assert!(!cause.contains(token), "{cause}");
    for event in &events {
        assert!(!format!("{event:?}").contains(token), "{event:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kms_throttle_is_waited_out_then_the_answer_is_accepted() {
    let standin = StandIn::start().await;
    standin.task("token-1", json!({"hello": "World"}));
    standin.reply(
        "SendTaskSuccess",
        [
            Reply::refuse("KmsThrottlingException"),
            Reply::refuse("KmsThrottlingException"),
        ],
    );
    let events = serve_tasks(&standin, "greet", 1).await;
    let successes = standin.received("SendTaskSuccess");
    assert_eq!(successes.len(), 3, "{successes:?}");
    assert_eq!(successes[2]["output"], r#"{"greeting":"Hello, World"}"#);
    let retries: Vec<bool> = events
        .iter()
        .filter_map(|e| match e.task_event() {
            Some(TaskEvent::Retrying { throttled, .. }) => Some(*throttled),
            _ => None,
        })
        .collect();
    assert_eq!(retries, [true, true]);
    assert_eq!(done(&events), ("success", "guest"));
    assert!(standin.received("SendTaskFailure").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_host_failure_is_followed_by_the_bare_failure() {
    let standin = StandIn::start().await;
    // The handler returns without answering: the host fails the task, and Step
    // Functions refuses that (the activity's KMS key is not usable), then takes a
    // failure with neither error nor cause.
    standin.task("token-1", json!({"hello": "Forgot", "ms": 0}));
    standin.reply(
        "SendTaskFailure",
        [Reply::refuse("KmsAccessDeniedException")],
    );
    let events = serve_tasks(&standin, "scenarios", 1).await;
    let failures = standin.received("SendTaskFailure");
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert_eq!(failures[0]["error"], "SfnWasmHost.NoResponse");
    assert!(failures[1].get("error").is_none(), "{}", failures[1]);
    assert!(failures[1].get("cause").is_none(), "{}", failures[1]);
    assert_eq!(failures[1]["taskToken"], "token-1");
    assert_eq!(refused_codes(&events), ["KmsAccessDeniedException"]);
    assert_eq!(done(&events), ("host_failure", "SfnWasmHost.NoResponse"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_code_is_classed_through_the_real_client() {
    let standin = StandIn::start().await;
    let aws = sfn_wasm_host::config::AwsConfig {
        region: Some("us-east-1".into()),
        endpoint_url: Some(standin.endpoint.clone()),
        ..Default::default()
    };
    let sfn = AwsStepFunctions::new(&aws).await;
    for (code, class) in ERROR_CODES {
        standin.reply("SendTaskHeartbeat", [Reply::refuse(code)]);
        let error = sfn.send_heartbeat("token").await.expect_err(code);
        let got = match &error {
            SfnError::TaskClosed(_) => ErrorClass::Closed,
            SfnError::Throttled(_) => ErrorClass::Throttled,
            SfnError::Unavailable(_) | SfnError::TimedOut(_) => ErrorClass::Transient,
            SfnError::Rejected { code: said, .. } => {
                assert_eq!(said, code);
                ErrorClass::Final
            }
        };
        assert_eq!(got, *class, "{code}: {error}");
        assert!(error.to_string().contains(code), "{code}: {error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_activity_keeps_the_worker_waiting_not_restarting() {
    let standin = StandIn::start().await;
    standin.reply(
        "GetActivityTask",
        [
            Reply::refuse("ActivityDoesNotExist"),
            Reply::refuse("ActivityDoesNotExist"),
            Reply::refuse("ActivityDoesNotExist"),
        ],
    );
    standin.task("token-1", json!({"hello": "Back"}));
    // One failed poll would make the worker give up; these do not count.
    let events = serve_with(
        &standin,
        "greet",
        1,
        "[activity.polling]\nmax_attempts = 1\ninterval_seconds = 0.05",
    )
    .await;
    let blocked: Vec<u32> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Worker {
                event:
                    WorkerEvent::PollingError {
                        attempt,
                        blocked: true,
                        error,
                        ..
                    },
                ..
            } => {
                assert!(error.starts_with("ActivityDoesNotExist"), "{error}");
                Some(*attempt)
            }
            _ => None,
        })
        .collect();
    assert_eq!(blocked, [1, 2, 3]);
    assert!(
        !events.iter().any(|e| matches!(
            e.kind,
            EventKind::Worker {
                event: WorkerEvent::Error { .. } | WorkerEvent::Stopped { .. },
                ..
            }
        )),
        "the worker neither gave up nor stopped"
    );
    assert_eq!(done(&events), ("success", "guest"));
}
