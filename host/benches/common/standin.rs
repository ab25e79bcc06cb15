//! A keep-alive stand-in for Step Functions, for benchmarks: the four activity actions
//! over HTTP/1.1 with persistent connections (so the AWS SDK pools them, as it does
//! against AWS; LocalStack closes every connection, which hides a client's own cost
//! under the cost of opening them). Tasks are queued up front or arrive at a steady
//! rate; long polls wait for one. It runs on a thread of its own, in the bench's process,
//! so its CPU is never counted as the worker's.
//!
//! The tests' stand-in (`host/tests/it/support/standin.rs`) is the scriptable one (faults,
//! every request kept); why the two stay apart is written there.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::Semaphore;

/// How long an empty long poll waits before it answers without a task, as Step
/// Functions' does.
const LONG_POLL: Duration = Duration::from_secs(60);

/// The stand-in: its URL, and what it has handed out and been answered.
pub struct KeepAliveStandIn {
    endpoint: String,
    state: Arc<State>,
    runtime: Option<tokio::runtime::Runtime>,
}

struct State {
    tasks: Mutex<VecDeque<usize>>,
    /// One permit per queued task: a long poll waits on it.
    queued: Semaphore,
    /// Per task: how many answers it got (success or failure).
    answers: Vec<AtomicU8>,
    answered: AtomicUsize,
    failed: AtomicUsize,
    input: String,
    /// Requests by action: workers of one run must send the same ones.
    polls: AtomicUsize,
    answers_sent: AtomicUsize,
}

impl KeepAliveStandIn {
    /// A stand-in for `total` tasks, each with `input` (where `{n}` becomes the task's
    /// number), on a free loopback port.
    pub fn start(total: usize, input: &str) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("bench-standin")
            .enable_all()
            .build()
            .expect("the stand-in's runtime");
        let state = Arc::new(State {
            tasks: Mutex::new(VecDeque::with_capacity(total)),
            queued: Semaphore::new(0),
            answers: (0..total).map(|_| AtomicU8::new(0)).collect(),
            answered: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            input: input.to_owned(),
            polls: AtomicUsize::new(0),
            answers_sent: AtomicUsize::new(0),
        });
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("a loopback port");
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let served = state.clone();
        runtime.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let state = served.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(state.respond(request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            endpoint,
            state,
            runtime: Some(runtime),
        }
    }

    /// Its URL, for `[aws] endpoint_url`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Queues every task at once.
    pub fn queue_all(&self) {
        let total = self.state.answers.len();
        self.state.tasks.lock().unwrap().extend(0..total);
        self.state.queued.add_permits(total);
    }

    /// Queues the tasks at `per_second`, evenly spaced, from now on.
    pub fn queue_at(&self, per_second: f64) {
        let state = self.state.clone();
        let total = state.answers.len();
        self.runtime.as_ref().unwrap().spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second));
            for n in 0..total {
                ticks.tick().await;
                state.tasks.lock().unwrap().push_back(n);
                state.queued.add_permits(1);
            }
        });
    }

    /// Tasks answered (once or more).
    pub fn answered(&self) -> usize {
        self.state.answered.load(Ordering::Relaxed)
    }

    /// `GetActivityTask` and `SendTask{Success,Failure}` requests received so far.
    pub fn requests(&self) -> (usize, usize) {
        (
            self.state.polls.load(Ordering::Relaxed),
            self.state.answers_sent.load(Ordering::Relaxed),
        )
    }

    /// Tasks answered with `SendTaskFailure`.
    pub fn failed(&self) -> usize {
        self.state.failed.load(Ordering::Relaxed)
    }

    /// Tasks answered more than once.
    pub fn answered_twice(&self) -> usize {
        self.state
            .answers
            .iter()
            .filter(|n| n.load(Ordering::Relaxed) > 1)
            .count()
    }
}

impl Drop for KeepAliveStandIn {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A task token as long as a real one (several hundred characters), with its number.
fn token(n: usize) -> String {
    format!("t-{n:08}-{}", "x".repeat(400))
}

fn number(token: &str) -> Option<usize> {
    token.strip_prefix("t-")?.get(..8)?.parse().ok()
}

impl State {
    async fn respond(&self, request: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let action = request
            .headers()
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit('.').next())
            .unwrap_or_default()
            .to_owned();
        let body = match request.into_body().collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) => Bytes::new(),
        };
        let payload = match action.as_str() {
            "GetActivityTask" => {
                self.polls.fetch_add(1, Ordering::Relaxed);
                self.poll().await
            }
            "SendTaskSuccess" | "SendTaskFailure" => {
                self.answers_sent.fetch_add(1, Ordering::Relaxed);
                self.answer(&body, action == "SendTaskFailure");
                "{}".to_owned()
            }
            _ => "{}".to_owned(),
        };
        let mut response = Response::new(Full::new(Bytes::from(payload)));
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/x-amz-json-1.0"),
        );
        response
    }

    async fn poll(&self) -> String {
        let Ok(Ok(permit)) = tokio::time::timeout(LONG_POLL, self.queued.acquire()).await else {
            return "{}".to_owned();
        };
        permit.forget();
        let Some(n) = self.tasks.lock().unwrap().pop_front() else {
            return "{}".to_owned();
        };
        // `{n}` in the input is the task's number: tasks that must differ (an
        // idempotency key) can.
        let input = self.input.replace("{n}", &n.to_string());
        serde_json::json!({"taskToken": token(n), "input": input}).to_string()
    }

    fn answer(&self, body: &[u8], failed: bool) {
        let body: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let Some(n) = body["taskToken"].as_str().and_then(number) else {
            return;
        };
        if let Some(count) = self.answers.get(n)
            && count.fetch_add(1, Ordering::Relaxed) == 0
        {
            self.answered.fetch_add(1, Ordering::Relaxed);
            if failed {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
