//! The runtime in process against LocalStack: one consumer serving one fresh activity
//! ([`Setup`] → [`Harness`]), and what its events were.

use std::sync::Arc;
use std::time::Duration;

use sfn_wasm_host::config::Config;
use sfn_wasm_host::consumer::ActivityConsumer;
use sfn_wasm_host::engine::Handler;
use sfn_wasm_host::events::{Event, EventKind, Events, HandlerEvent};
use sfn_wasm_host::sfn::AwsStepFunctions;
use tokio::sync::broadcast;

use super::emulator::{self, Ended};
use super::guests::guest;

/// A consumer serving one fresh activity.
pub struct Harness {
    pub client: aws_sdk_sfn::Client,
    pub activity: String,
    pub state_machine: String,
    pub consumer: ActivityConsumer,
    pub events: broadcast::Receiver<Event>,
}

/// What to serve, and how.
pub struct Setup<'a> {
    pub handler: &'a str,
    pub workers: u32,
    /// `HeartbeatSeconds` of the state machine's task state.
    pub heartbeat: Option<u32>,
    /// The activity's `task_timeout_seconds`.
    pub task_timeout: f64,
    /// More `[[activity]]` keys.
    pub extra: &'a str,
    /// Where the host (not the test client) reaches Step Functions.
    pub endpoint: String,
}

impl<'a> Setup<'a> {
    pub fn new(handler: &'a str) -> Self {
        Self {
            handler,
            workers: 1,
            heartbeat: None,
            task_timeout: 20.0,
            extra: "",
            endpoint: emulator::endpoint(),
        }
    }

    pub async fn start(self) -> Harness {
        let client = emulator::client().await;
        let activity = emulator::activity(&client, self.handler).await;
        let state_machine = emulator::state_machine(&client, &activity, self.heartbeat).await;
        let path = guest(self.handler);
        let text = format!(
            "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n\
             [[activity]]\narn = \"{activity}\"\nhandler = \"{}\"\nworkers = {}\n\
             task_timeout_seconds = {:?}\nmemory_limit_mb = 64\n{}\n",
            self.endpoint,
            path.display(),
            self.workers,
            self.task_timeout,
            self.extra,
        );
        let config =
            Config::parse(std::path::Path::new("/tests/config.toml"), &text).expect("config");
        let (mut consumer, mut receiver) = consumer(&config, &path).await;
        let loaded = receiver.try_recv().expect("handler:loaded comes first");
        assert!(matches!(
            loaded.kind,
            EventKind::Handler(HandlerEvent::Loaded {
                cache: "disabled",
                ..
            })
        ));
        assert_eq!(loaded.worker(), None);
        consumer.start();
        Harness {
            client,
            activity,
            state_machine,
            consumer,
            events: receiver,
        }
    }
}

/// A consumer (not started) of `config`'s one activity, serving the handler at `path`
/// through the real AWS SDK client, and the receiver of every event it emits from its
/// `handler:loaded` on.
pub async fn consumer(
    config: &Config,
    path: &std::path::Path,
) -> (ActivityConsumer, broadcast::Receiver<Event>) {
    let engine = Arc::new(sfn_wasm_host::load::engine(config).unwrap());
    let handler = Handler::load(&engine, path, None).unwrap();
    let sfn = Arc::new(AwsStepFunctions::new(&config.aws).await);
    let events = Events::default();
    let receiver = events.subscribe();
    let consumer = ActivityConsumer::new(
        config,
        engine,
        vec![handler.into()],
        sfn,
        events,
        Default::default(),
    )
    .unwrap();
    (consumer, receiver)
}

impl Harness {
    pub fn pool(&self) -> &sfn_wasm_host::pool::ActivityPoolManager {
        self.consumer
            .pool(&self.activity)
            .expect("the harness's pool")
    }

    pub async fn run(&self, input: serde_json::Value) -> Ended {
        let execution = emulator::start(&self.client, &self.state_machine, input).await;
        emulator::wait(&self.client, &execution, Duration::from_secs(60)).await
    }

    /// Events, as they come, until `until` (inclusive) or the timeout.
    pub async fn events_until(&mut self, until: &str, limit: Duration) -> Vec<Event> {
        self.events_until_nth(until, 1, limit).await
    }

    /// Events, as they come, until the `n`th `until` (inclusive) or the timeout.
    pub async fn events_until_nth(&mut self, until: &str, n: usize, limit: Duration) -> Vec<Event> {
        let mut seen = Vec::new();
        let mut found = 0;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!("no {n} x {until} within {limit:?}; saw {:?}", names(&seen))
                })
                .expect("event channel");
            found += usize::from(event.kind.name() == until);
            seen.push(event);
            if found == n {
                return seen;
            }
        }
    }
}

pub fn names(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind.name()).collect()
}

/// Asserts that none of `unwanted` is among `events`.
pub fn assert_none_of(events: &[Event], unwanted: &[&str]) {
    let names = names(events);
    for name in unwanted {
        assert!(!names.contains(name), "{name} in {names:?}");
    }
}
