//! What Step Functions accepted is what the host reports, against a scriptable stand-in
//! for the service (the faults LocalStack cannot make: refusals with KMS's and the API's
//! error codes, throttling with a 400). The host's clients are the real `aws-sdk-sfn`
//! ones, pointed at the stand-in; the handlers are real components.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use sfn_wasm_host::config::Config;
use sfn_wasm_host::consumer::ActivityConsumer;
use sfn_wasm_host::engine::Handler;
use sfn_wasm_host::events::{Event, EventKind, Events, TaskEvent, WorkerEvent};
use sfn_wasm_host::sfn::{AwsStepFunctions, ERROR_CODES, ErrorClass, SfnError, StepFunctions};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::guests::guest;
use crate::http1::{header, read_request};

const ARN: &str = "arn:aws:states:us-east-1:000000000000:activity:standin";

/// One scripted reply: an HTTP status and, for an error, its code.
#[derive(Clone, Debug)]
pub struct Reply {
    status: u16,
    code: Option<&'static str>,
    /// The message quotes the request's task token, as a `ValidationException` may.
    quote_token: bool,
}

impl Reply {
    pub fn refuse(code: &'static str) -> Self {
        Self {
            status: 400,
            code: Some(code),
            quote_token: false,
        }
    }

    pub fn refuse_quoting_the_token(code: &'static str) -> Self {
        Self {
            quote_token: true,
            ..Self::refuse(code)
        }
    }
}

#[derive(Default)]
struct Script {
    /// Replies per action (`SendTaskSuccess`), used in order; then `200 {}`.
    replies: HashMap<String, VecDeque<Reply>>,
    /// Tasks `GetActivityTask` hands out, once each: (token, input).
    tasks: VecDeque<(String, String)>,
    /// Every request: its action and JSON body.
    received: Vec<(String, Value)>,
    /// When each request arrived, in the order of `received`.
    arrived: Vec<SystemTime>,
    /// Each task handed out: its token and when its response was written.
    handed_out: Vec<(String, SystemTime)>,
}

/// A stand-in for Step Functions on a free loopback port, speaking the JSON protocol
/// (`x-amz-target: AWSStepFunctions.ACTION`), keep-alive, scripted per action.
#[derive(Clone)]
pub struct StandIn {
    pub endpoint: String,
    script: Arc<Mutex<Script>>,
}

impl StandIn {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let script = Arc::new(Mutex::new(Script::default()));
        let served = script.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(socket, served.clone()));
            }
        });
        Self { endpoint, script }
    }

    /// Scripts the next replies to `action`.
    pub fn reply(&self, action: &str, replies: impl IntoIterator<Item = Reply>) {
        self.script
            .lock()
            .unwrap()
            .replies
            .entry(action.to_owned())
            .or_default()
            .extend(replies);
    }

    /// Queues a task for the next poll.
    pub fn task(&self, token: &str, input: Value) {
        self.script
            .lock()
            .unwrap()
            .tasks
            .push_back((token.to_owned(), input.to_string()));
    }

    /// The bodies of the requests made to `action`, in order.
    pub fn received(&self, action: &str) -> Vec<Value> {
        self.script
            .lock()
            .unwrap()
            .received
            .iter()
            .filter(|(a, _)| a == action)
            .map(|(_, body)| body.clone())
            .collect()
    }

    /// As [`received`](Self::received), with when each request arrived.
    pub fn received_at(&self, action: &str) -> Vec<(Value, SystemTime)> {
        let script = self.script.lock().unwrap();
        script
            .received
            .iter()
            .zip(&script.arrived)
            .filter(|((a, _), _)| a == action)
            .map(|((_, body), at)| (body.clone(), *at))
            .collect()
    }

    /// When the task with `token` was handed out (its response written), if it was.
    pub fn handed_out_at(&self, token: &str) -> Option<SystemTime> {
        let script = self.script.lock().unwrap();
        script
            .handed_out
            .iter()
            .find(|(t, _)| t == token)
            .map(|(_, at)| *at)
    }
}

async fn serve(mut socket: TcpStream, script: Arc<Mutex<Script>>) {
    let mut buffer = Vec::new();
    while let Some((head, body)) = read_request(&mut socket, &mut buffer).await {
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let action = header(&head, "x-amz-target")
            .and_then(|t| t.rsplit('.').next())
            .unwrap_or_default()
            .to_owned();
        // The action's name as AWS spells it (the header was lowercased).
        let action = [
            "GetActivityTask",
            "SendTaskSuccess",
            "SendTaskFailure",
            "SendTaskHeartbeat",
        ]
        .into_iter()
        .find(|a| a.to_ascii_lowercase() == action)
        .unwrap_or("Unknown")
        .to_owned();
        let (reply, task) = {
            let mut script = script.lock().unwrap();
            script.received.push((action.clone(), body));
            script.arrived.push(SystemTime::now());
            let reply = script
                .replies
                .get_mut(&action)
                .and_then(VecDeque::pop_front);
            let task = (action == "GetActivityTask" && reply.is_none())
                .then(|| script.tasks.pop_front())
                .flatten();
            (reply, task)
        };
        let mut handed = None;
        let (status, payload) = match (reply, task) {
            (
                Some(Reply {
                    status,
                    code: Some(code),
                    quote_token,
                }),
                _,
            ) => {
                let message = if quote_token {
                    let token = received_token(&script);
                    format!("Value '{token}' at 'taskToken' failed to satisfy constraint")
                } else {
                    format!("the stand-in refuses with {code}")
                };
                (status, json!({"__type": code, "message": message}))
            }
            (
                Some(Reply {
                    status, code: None, ..
                }),
                _,
            ) => (status, json!({})),
            (None, Some((token, input))) => {
                handed = Some(token.clone());
                (200, json!({"taskToken": token, "input": input}))
            }
            (None, None) if action == "GetActivityTask" => {
                // A long poll that ends without a task, shortened.
                tokio::time::sleep(Duration::from_millis(200)).await;
                (200, json!({}))
            }
            (None, None) => (200, json!({})),
        };
        let payload = payload.to_string();
        let error_type = payload_code(&payload);
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/x-amz-json-1.0\r\n{error_type}content-length: {}\r\n\r\n{payload}",
            payload.len()
        );
        if socket.write_all(response.as_bytes()).await.is_err() {
            return;
        }
        if let Some(token) = handed {
            script
                .lock()
                .unwrap()
                .handed_out
                .push((token, SystemTime::now()));
        }
    }
}

/// The task token of the last request received.
fn received_token(script: &Mutex<Script>) -> String {
    let script = script.lock().unwrap();
    script
        .received
        .last()
        .and_then(|(_, body)| body["taskToken"].as_str())
        .unwrap_or_default()
        .to_owned()
}

fn payload_code(payload: &str) -> String {
    serde_json::from_str::<Value>(payload)
        .ok()
        .and_then(|v| {
            v["__type"]
                .as_str()
                .map(|code| format!("x-amzn-errortype: {code}\r\n"))
        })
        .unwrap_or_default()
}

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
    let engine = Arc::new(sfn_wasm_host::load::engine(&config).unwrap());
    let handler = Handler::load(&engine, &path, None).unwrap();
    let sfn = Arc::new(AwsStepFunctions::new(&config.aws).await);
    let events = Events::default();
    let mut receiver = events.subscribe();
    let mut consumer = ActivityConsumer::new(
        &config,
        engine,
        vec![handler],
        sfn,
        events,
        Default::default(),
    )
    .unwrap();
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
            Some(TaskEvent::Done(done)) => Some((done.outcome.name(), done.error)),
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
