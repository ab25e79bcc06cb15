//! What the benchmarks share: building and finding the guests, and a task request.
#![allow(dead_code)] // each benchmark uses a part

pub mod standin;

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use sfn_wasm_host::sfn::{ActivityTask, SfnError, StepFunctions};

use sfn_wasm_host::delivery::{Delivery, DeliveryOptions, LocalTransport, Unobserved};
use sfn_wasm_host::engine::{Capabilities, TaskControl, TaskLimits, TaskRequest};

/// The workspace root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
}

/// Builds the guest components (plus the packages in `extra`, as `-p NAME`).
pub fn build_guests(extra: &[&str]) {
    let status = std::process::Command::new(root().join("scripts/build-guests.sh"))
        .arg("--quiet")
        .args(extra)
        .status()
        .expect("run scripts/build-guests.sh");
    assert!(status.success(), "building the guests failed");
}

/// The built guest `name` (`-` as `_`).
pub fn guest(name: &str) -> PathBuf {
    root()
        .join("target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"))
}

/// A task with `input` and a 10 s deadline.
pub fn request(input: &str, memory_mb: u64) -> TaskRequest {
    TaskRequest {
        input: input.to_owned(),
        activity_arn: "arn:aws:states:us-east-1:000000000000:activity:bench".into(),
        worker_name: "bench:1".into(),
        task_id: "bench".into(),
        limits: TaskLimits {
            memory_bytes: memory_mb << 20,
            timeout: Duration::from_secs(10),
            heartbeat_every: None,
        },
        control: TaskControl::default(),
        // The served path's: every task of `serve` has its activity's grants.
        capabilities: Capabilities::none().with(Arc::new(sfn_wasm_host::grants::Grants::default())),
    }
}

/// A delivery that accepts every answer, for `request`.
pub fn local_delivery(request: &TaskRequest) -> Delivery {
    Delivery::new(
        Arc::new(LocalTransport),
        Arc::new(Unobserved),
        request.control.clone(),
        DeliveryOptions::default(),
    )
}

/// An in-memory Step Functions for benchmarks that leave the network out: hands out
/// `total` tasks with `input` (`{n}` in it replaced by the task's number), then
/// long-polls empty; counts answers.
pub struct Queue {
    total: u64,
    input: String,
    /// Tasks handed out so far.
    pub handed_out: AtomicU64,
    /// `SendTaskSuccess` calls.
    pub succeeded: AtomicU64,
    /// `SendTaskFailure` calls.
    pub failed: AtomicU64,
}

impl Queue {
    /// A queue of `total` tasks, each with `input`.
    pub fn new(total: u64, input: String) -> Self {
        Self {
            total,
            input,
            handed_out: AtomicU64::new(0),
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// Answers received, either kind.
    pub fn answered(&self) -> u64 {
        self.succeeded.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl StepFunctions for Queue {
    async fn poll(&self, _arn: &str, _worker: &str) -> Result<Option<ActivityTask>, SfnError> {
        let n = self.handed_out.fetch_add(1, Ordering::Relaxed);
        if n >= self.total {
            self.handed_out.fetch_sub(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(60)).await;
            return Ok(None);
        }
        // As long as a real token (they are several hundred characters). `{n}` in the
        // input becomes the task's number (a key of its own per task).
        let input = if self.input.contains("{n}") {
            self.input.replace("{n}", &n.to_string())
        } else {
            self.input.clone()
        };
        Ok(Some(ActivityTask {
            token: format!("token-{n:08}-{}", "x".repeat(400)),
            input,
            id: None,
        }))
    }

    async fn send_success(&self, _token: &str, _output: &str) -> Result<(), SfnError> {
        self.succeeded.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn send_failure(&self, _token: &str, _error: &str, _cause: &str) -> Result<(), SfnError> {
        self.failed.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn send_heartbeat(&self, _token: &str) -> Result<(), SfnError> {
        Ok(())
    }
}

/// What `serve` starts its runtime from, for one activity of `guest` with `settings`
/// (TOML lines of its `[[activity]]` table) and `host_settings` (of `[host]`),
/// answering through `sfn`.
pub fn parts(
    guest_name: &str,
    settings: &str,
    host_settings: &str,
    sfn: Arc<dyn StepFunctions>,
) -> sfn_wasm_host::runtime::RuntimeParts {
    use sfn_wasm_host::engine::Handler;
    let handler_path = guest(guest_name);
    let text = format!(
        "[aws]\nregion = \"us-east-1\"\n[host]\ncache = false\n{host_settings}\n\
         [[activity]]\narn = \"arn:aws:states:us-east-1:123456789012:activity:bench\"\n\
         handler = \"{}\"\nwatch = false\n{settings}\n",
        handler_path.display()
    );
    let config =
        sfn_wasm_host::config::Config::parse(Path::new("bench.toml"), &text).expect("config");
    let engine =
        Arc::new(sfn_wasm_host::load::engine(&config).expect("an engine with these slots"));
    let handler = Handler::load(&engine, &handler_path, None).expect("the guest loads");
    sfn_wasm_host::runtime::RuntimeParts {
        loaded: sfn_wasm_host::load::Loaded {
            config,
            engine,
            cache: None,
            activities: vec![handler.into()],
            secrets: Arc::default(),
        },
        sfn,
    }
}

/// The consumer `serve`'s runtime runs, from [`parts`] with no `[host]` settings; not
/// started. Call inside a tokio runtime (it runs everything).
#[allow(dead_code)] // not every bench uses it
pub fn consumer(
    guest_name: &str,
    settings: &str,
    sfn: Arc<dyn StepFunctions>,
) -> sfn_wasm_host::consumer::ActivityConsumer {
    let parts = parts(guest_name, settings, "", sfn);
    sfn_wasm_host::consumer::ActivityConsumer::new(
        &parts.loaded.config,
        parts.loaded.engine,
        parts.loaded.activities,
        parts.sfn,
        sfn_wasm_host::events::Events::default(),
        Arc::default(),
    )
    .expect("a consumer")
}

/// A stand-in OTLP/HTTP collector: reads each request and answers 200. Its URL.
#[allow(dead_code)] // not every bench uses it
pub fn collector() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = std::io::BufReader::new(&stream);
            let mut length = 0usize;
            let mut line = String::new();
            while std::io::BufRead::read_line(&mut reader, &mut line).is_ok_and(|n| n > 0) {
                if line.trim().is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0; length];
            let _ = std::io::Read::read_exact(&mut reader, &mut body);
            let _ = std::io::Write::write_all(
                &mut &stream,
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    url
}
