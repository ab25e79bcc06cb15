//! A scriptable stand-in for Step Functions on a free loopback port: the four activity
//! actions over HTTP/1.1 with keep-alive, each answered as scripted (refusals with an
//! error code, throttling) or else `200`; it notes every request and when it came, and
//! when it handed out each task. Shared by the stand-in tests (`standin.rs`) and the
//! fairness tests (`host/tests/fairness.rs`).
//!
//! The benches keep a stand-in of their own (`host/benches/common/standin.rs`,
//! `KeepAliveStandIn`), on purpose; the two do different jobs:
//! - **Where it runs.** This one is spawned on the test's own runtime (`start` is async),
//!   so a test awaits its host and its stand-in together. The benches' runs on a
//!   runtime of its own, on its own thread, so that its CPU is never counted as the
//!   worker's being measured, and it is started from synchronous bench code.
//! - **What it keeps.** This one keeps every request's body and arrival time (the tests
//!   assert on them), under one lock. The benches' keeps counters only (answered,
//!   answered twice, failed, requests by action): thousands of tasks a run, and no
//!   lock on the answer path beyond the task queue.
//! - **Long polls.** This one answers an empty poll after 200 ms (a test queues its tasks
//!   up front and must end quickly). The benches' holds a poll up to 60 s, as Step
//!   Functions does, until a task is queued, and can queue tasks at a steady rate
//!   (`queue_at`): the latency benches measure the time from queueing to the answer.
//! - **Faults.** Only this one is scripted (refusals with an error code, throttling,
//!   a message quoting the token); the benches' always accepts.
//!
//! One of them serving both would carry the other's state and timing into every run
//! of each (a lock and a growing log into the benches' figures; a thread and a 60 s
//! poll into the fault tests), so both stay, each small. What they do share is the
//! protocol: the JSON `x-amz-target: AWSStepFunctions.ACTION` requests and the
//! `application/x-amz-json-1.0` answers of the four activity actions.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::http1::{header, read_request};

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

    /// `200 {}`: taken.
    pub fn accept() -> Self {
        Self {
            status: 200,
            code: None,
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
    #[allow(dead_code)] // used by the fairness tests (host/tests/fairness.rs)
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
    #[allow(dead_code)] // used by the fairness tests (host/tests/fairness.rs)
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
