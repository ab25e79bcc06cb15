//! The answer outbox (`[host] outbox_dir`): every answer the host has taken for a task
//! is written to a durable folder before its first attempt, and removed once it is
//! settled (Step Functions took it, or can no longer take it). An answer whose delivery
//! the host gave up (it stopped, or an outage outlasted `answer_retry_seconds`) stays,
//! and so does one the host was killed holding: at the next start the host delivers what
//! it finds there. So an answer outlives a `kill -9`, an OOM kill or a node loss (with a
//! volume that outlives the node).
//!
//! The outbox is a [`Responder`] around the task's own: it sees each answer before its
//! first attempt and hears how the answer's delivery ended, without the delivery knowing
//! it is there.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::control::TaskControl;
use crate::delivery::{
    Delivered, Delivery, DeliveryOptions, HeartbeatSource, Responder, TaskError,
};
use crate::events::{Emitter, Events, TaskRef};
use crate::ids::sha256_hex;
use crate::outcome::{Answer, Answerer};
use crate::responder::SfnResponder;
use crate::sfn::{SfnError, StepFunctions};
use crate::store::{FolderStore, Store, StoreError};

/// Who answered a recovered task, as far as its delivery knows: the outbox.
pub const RECOVERED: &str = "outbox";

/// The longest a task token lives: a standard workflow's longest execution (a year).
/// An entry older than this can no longer be delivered and is dropped.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(366 * 24 * 3600);

/// The outbox folder, and how much it holds.
pub struct Outbox {
    dir: PathBuf,
    store: FolderStore,
    max_bytes: u64,
    /// The bytes of the entries written and not yet removed (by this process).
    held: AtomicU64,
}

/// One answer, as written to the outbox. The file is private (0600): it holds the task
/// token.
#[derive(Serialize, Deserialize)]
struct Entry {
    activity: String,
    task_id: String,
    handler_digest: String,
    written_at_ms: u64,
    token: String,
    answer: EntryAnswer,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
enum EntryAnswer {
    Success { output: String },
    Failure { error: String, cause: String },
}

impl From<&Answer> for EntryAnswer {
    fn from(answer: &Answer) -> Self {
        match answer {
            Answer::Success { output } => Self::Success {
                output: output.clone(),
            },
            Answer::Failure { error, cause } => Self::Failure {
                error: error.clone(),
                cause: cause.clone(),
            },
        }
    }
}

impl From<EntryAnswer> for Answer {
    fn from(answer: EntryAnswer) -> Self {
        match answer {
            EntryAnswer::Success { output } => Answer::Success { output },
            EntryAnswer::Failure { error, cause } => Answer::Failure { error, cause },
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Outbox {
    /// The outbox in `dir` (created, private, if missing), holding at most `max_bytes`
    /// of answers: past that, answers are delivered without an entry (logged).
    ///
    /// # Errors
    /// [`StoreError`] when the folder cannot be created.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, StoreError> {
        Ok(Self {
            dir: dir.to_owned(),
            store: FolderStore::open(dir)?,
            max_bytes,
            held: AtomicU64::new(0),
        })
    }

    /// The entry name of a task token: a digest (the token never names a file).
    fn name(token: &str) -> String {
        format!("{}.json", sha256_hex(token.as_bytes()))
    }

    /// `responder`, for the task with `token`, with its answers kept here until settled.
    pub fn keep(
        self: &Arc<Self>,
        responder: Arc<dyn Responder>,
        token: &str,
        task: &TaskRef,
        activity: &str,
    ) -> Arc<dyn Responder> {
        Arc::new(KeptResponder {
            inner: responder,
            outbox: self.clone(),
            name: Self::name(token),
            token: token.to_owned(),
            activity: activity.to_owned(),
            task_id: task.task_id.to_string(),
            handler_digest: task.handler_digest.to_string(),
            written: Mutex::new(None),
        })
    }

    /// Writes `entry` as `name`; returns its size, or `None` when it was not written
    /// (the outbox is full, or the folder refused: logged).
    async fn write(&self, name: &str, entry: &Entry) -> Option<u64> {
        let data = match serde_json::to_vec(entry) {
            Ok(data) => data,
            Err(_) => return None,
        };
        let size = data.len() as u64;
        if self.held.fetch_add(size, Ordering::Relaxed) + size > self.max_bytes {
            self.held.fetch_sub(size, Ordering::Relaxed);
            tracing::warn!(
                event = "outbox:full",
                activity = %entry.activity,
                task_id = %entry.task_id,
                "outbox:full: the answer is sent without an outbox entry; raise `outbox_max_mb`"
            );
            return None;
        }
        match self.store.put(name, &data).await {
            Ok(()) => Some(size),
            Err(err) => {
                self.held.fetch_sub(size, Ordering::Relaxed);
                tracing::warn!(
                    event = "outbox:unavailable",
                    activity = %entry.activity,
                    task_id = %entry.task_id,
                    code = %err.code,
                    "outbox:unavailable: the answer is sent without an outbox entry: {err}"
                );
                None
            }
        }
    }

    /// Removes a settled answer's entry (an unlink: no need to wait for the disk, a
    /// leftover entry is only sent again and refused as closed).
    fn remove(&self, name: &str, size: u64) {
        self.held.fetch_sub(size, Ordering::Relaxed);
        match std::fs::remove_file(self.dir.join(name)) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                tracing::warn!(event = "outbox:unavailable", error = %err, "outbox:unavailable: a settled answer's entry could not be removed")
            }
        }
    }

    /// Delivers every answer found in the outbox (left by a host that stopped or was
    /// killed before they were settled), each as its task would have: `task:success` or
    /// `task:failure` with `recovered: true` once delivered, `task:undelivered` when Step
    /// Functions no longer takes it. Entries older than [`MAX_TOKEN_LIFETIME`] and files
    /// that are not entries are dropped, with a warning. Returns how many are being
    /// delivered; each delivery goes on in a task of its own, retried as any answer.
    pub fn recover(
        self: &Arc<Self>,
        sfn: &Arc<dyn StepFunctions>,
        events: &Events,
        options: &DeliveryOptions,
    ) -> usize {
        let Ok(files) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut recovered = 0;
        for file in files.flatten() {
            let path = file.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                continue;
            };
            // Temporary files of a write that never finished.
            if name.starts_with('.') {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let entry = std::fs::read(&path)
                .ok()
                .and_then(|data| serde_json::from_slice::<Entry>(&data).ok());
            let Some(entry) = entry else {
                tracing::warn!(event = "outbox:dropped", file = %path.display(), "outbox:dropped: not an outbox entry");
                let _ = std::fs::remove_file(&path);
                continue;
            };
            let age = Duration::from_millis(now_ms().saturating_sub(entry.written_at_ms));
            if age > MAX_TOKEN_LIFETIME {
                tracing::warn!(event = "outbox:dropped", activity = %entry.activity, task_id = %entry.task_id, "outbox:dropped: older than any task token lives");
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let size = std::fs::metadata(&path).map_or(0, |m| m.len());
            self.held.fetch_add(size, Ordering::Relaxed);
            let task = TaskRef {
                task_id: entry.task_id.as_str().into(),
                handler_digest: entry.handler_digest.as_str().into(),
                recovered: true,
            };
            let emitter = Emitter::for_activity(events.clone(), entry.activity.as_str().into())
                .for_worker("outbox".into())
                .for_task(task);
            let responder: Arc<dyn Responder> = Arc::new(KeptResponder {
                inner: Arc::new(SfnResponder::new(sfn.clone(), entry.token.clone(), emitter)),
                outbox: self.clone(),
                name,
                token: entry.token.clone(),
                activity: entry.activity.clone(),
                task_id: entry.task_id.clone(),
                handler_digest: entry.handler_digest.clone(),
                written: Mutex::new(Some(Written {
                    status: status_of(&entry.answer),
                    size,
                })),
            });
            // No guest is left to answer again: a refusal is followed by the host's bare
            // failure, as for any answer of the host's.
            let delivery = Delivery::new(responder, TaskControl::default(), options.clone());
            delivery.resume(entry.answer.into(), Answerer::Host(RECOVERED));
            recovered += 1;
        }
        recovered
    }
}

/// Which answer an entry holds, to tell when a delivery moved on to another.
fn status_of(answer: &EntryAnswer) -> String {
    match answer {
        EntryAnswer::Success { output } => format!("s{}", sha256_hex(output.as_bytes())),
        EntryAnswer::Failure { error, cause } => {
            format!("f{}", sha256_hex(format!("{error}\n{cause}").as_bytes()))
        }
    }
}

struct Written {
    status: String,
    size: u64,
}

/// A task's responder with its answers kept in the outbox until settled.
struct KeptResponder {
    inner: Arc<dyn Responder>,
    outbox: Arc<Outbox>,
    name: String,
    token: String,
    activity: String,
    task_id: String,
    handler_digest: String,
    /// The entry on disk, if any: which answer, and its size.
    written: Mutex<Option<Written>>,
}

impl KeptResponder {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Written>> {
        self.written
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes the entry for `answer` unless it is already on disk.
    async fn ensure_written(&self, answer: &Answer) {
        let stored = EntryAnswer::from(answer);
        let status = status_of(&stored);
        if self.lock().as_ref().is_some_and(|w| w.status == status) {
            return;
        }
        let entry = Entry {
            activity: self.activity.clone(),
            task_id: self.task_id.clone(),
            handler_digest: self.handler_digest.clone(),
            written_at_ms: now_ms(),
            token: self.token.clone(),
            answer: stored,
        };
        let previous = self.lock().take();
        if let Some(previous) = previous {
            self.outbox.held.fetch_sub(previous.size, Ordering::Relaxed);
        }
        if let Some(size) = self.outbox.write(&self.name, &entry).await {
            *self.lock() = Some(Written { status, size });
        }
    }

    /// The answer is settled: its entry goes.
    fn settled(&self) {
        let written = self.lock().take();
        if let Some(written) = written {
            self.outbox.remove(&self.name, written.size);
        }
    }
}

#[async_trait]
impl Responder for KeptResponder {
    async fn send(&self, answer: &Answer) -> Result<(), SfnError> {
        self.ensure_written(answer).await;
        self.inner.send(answer).await
    }

    async fn heartbeat(&self) -> Result<(), SfnError> {
        self.inner.heartbeat().await
    }

    fn delivered(&self, answer: &Answer, how: Delivered) {
        self.settled();
        self.inner.delivered(answer, how);
    }

    fn retrying(&self, attempt: u32, error: &SfnError, delay: Duration) {
        self.inner.retrying(attempt, error, delay);
    }

    fn refused(&self, answer: &Answer, error: &SfnError) {
        // Refused for good: not this answer, ever (another may follow and be kept).
        self.settled();
        self.inner.refused(answer, error);
    }

    fn undelivered(&self, answer: &Answer, reason: &str) {
        // Closed, or refused to the last: Step Functions will not take it.
        self.settled();
        self.inner.undelivered(answer, reason);
    }

    fn gave_up(&self, answer: &Answer, reason: &str) {
        // The host stopped, or the outage outlasted the retries: the entry stays (and
        // counts against the bound) for the next start.
        self.lock().take();
        self.inner.gave_up(answer, reason);
    }

    fn heartbeat_sent(&self, source: HeartbeatSource) {
        self.inner.heartbeat_sent(source);
    }

    fn cancelled(&self, reason: &str) {
        self.inner.cancelled(reason);
    }

    fn errored(&self, error: &TaskError) {
        self.inner.errored(error);
    }
}
