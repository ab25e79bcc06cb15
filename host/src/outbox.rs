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
//!
//! An entry holds a task token, and what is found there is sent with the host's
//! credentials: so only what this host wrote is ever sent. The folder is the host's own
//! (its owner and mode are checked, and no `[[activity.dir]]` grant may overlap it), and
//! each entry carries an HMAC-SHA256, under a key the folder keeps private
//! (`outbox_dir/.key`, 0600), over the format, its file name and its content. At
//! recovery an entry without one, or whose MAC does not check out (planted by hand,
//! changed, renamed, or left by a host with another key or an older version), is logged
//! (`outbox:refused`) and set aside, renamed `NAME.refused`, never sent; such files are
//! skipped at later starts, for an operator to look at and delete.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::control::TaskControl;
use crate::delivery::{AnswerState, Delivered, Delivery, DeliveryOptions, Responder, TaskError};
use crate::events::{DoneError, Emitter, Events, TaskDone, TaskEvent, TaskOutcome, TaskRef};
use crate::idempotency::{ActivityIdempotency, Claim, ClaimRef, Settled};
use crate::ids::sha256_hex;
use crate::outcome::{Answer, Answerer, FailureKind, HeartbeatSource};
use crate::responder::SfnResponder;
use crate::sfn::{SfnError, StepFunctions};
use crate::store::{FolderStore, Store, StoreError};

/// The longest a task token lives: a standard workflow's longest execution (a year).
/// An entry older than this can no longer be delivered and is dropped.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(366 * 24 * 3600);

/// The first line of an entry: this, the MAC in hex, a line break; the JSON follows.
const HEADER: &str = "sfn-wasm-host outbox v1 ";
/// What an entry's MAC says it is, besides its name and content.
const FORMAT: &[u8] = b"sfn-wasm-host outbox entry v1";
/// The longest an entry's durable write may take before the answer is sent without it
/// (a hung volume must not stall every answer): logged as `outbox:unavailable`, code
/// `Timeout`, the answer not made durable.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(2);

/// How long writes are skipped after one ran past [`WRITE_DEADLINE`].
const HUNG_BACKOFF_MS: u64 = 30_000;

/// The suffix an entry gets when it is refused: set aside, never sent.
pub const REFUSED_SUFFIX: &str = ".refused";

/// The outbox folder, and how much it holds.
pub struct Outbox {
    dir: PathBuf,
    store: Arc<dyn Store>,
    /// Until when writes are skipped after one ran past [`WRITE_DEADLINE`] (ms since the
    /// Unix epoch; 0: none): a hung volume would park a blocking thread per attempt.
    hung_until_ms: AtomicU64,
    /// The folder's MAC key.
    key: ring::hmac::Key,
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
    /// The guest gave the answer (not the host): only a guest's answer is stored under
    /// its idempotency key.
    #[serde(default)]
    guest: bool,
    /// The idempotency claim the task held, settled once the answer is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    claim: Option<ClaimRef>,
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

/// The bytes of lowercase or uppercase `hex`; `None` unless it is whole bytes of hex.
fn decode_hex(hex: &[u8]) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    hex.chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(text, 16).ok()
        })
        .collect()
}

impl Outbox {
    /// The outbox in `dir` (created, private, if missing), holding at most `max_bytes`
    /// of answers: past that, answers are delivered without an entry (logged).
    ///
    /// # Errors
    /// [`StoreError`] when the folder cannot be created, another user owns it or others
    /// can write to it, or its key cannot be made or is not private.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, StoreError> {
        let store = FolderStore::open(dir)?;
        let key = FolderStore::host_key(dir).map_err(|message| StoreError {
            code: "UntrustedKey".into(),
            message,
        })?;
        Ok(Self {
            dir: dir.to_owned(),
            store: Arc::new(store),
            hung_until_ms: AtomicU64::new(0),
            key,
            max_bytes,
            held: AtomicU64::new(0),
        })
    }

    /// The file for the entry `name` with JSON `body`: the header with its MAC, then
    /// the body.
    fn seal(&self, name: &str, body: &[u8]) -> Vec<u8> {
        let mac = FolderStore::seal(&self.key, &[FORMAT, name.as_bytes(), body]);
        let mut data = Vec::with_capacity(HEADER.len() + 2 * mac.len() + 1 + body.len());
        data.extend_from_slice(HEADER.as_bytes());
        for byte in mac {
            data.extend_from_slice(format!("{byte:02x}").as_bytes());
        }
        data.push(b'\n');
        data.extend_from_slice(body);
        data
    }

    /// The entry in the file `name` holding `data`, if this host wrote it: else why not.
    fn unseal(&self, name: &str, data: &[u8]) -> Result<Entry, &'static str> {
        let unsealed =
            "no MAC: not an entry this host wrote (planted by hand, or left by an older version)";
        let rest = data.strip_prefix(HEADER.as_bytes()).ok_or(unsealed)?;
        let newline = rest.iter().position(|&b| b == b'\n').ok_or(unsealed)?;
        let (hex, body) = (&rest[..newline], &rest[newline + 1..]);
        let mac = decode_hex(hex).ok_or(unsealed)?;
        if !FolderStore::is_sealed(&self.key, &[FORMAT, name.as_bytes(), body], &mac) {
            return Err(
                "its MAC does not check out: planted, changed or renamed, or written under another key",
            );
        }
        serde_json::from_slice(body).map_err(|_| "sealed, but not an outbox entry of this version")
    }

    /// Sets the file `name` aside, never to be sent: renamed `NAME.refused` (deleted if
    /// it cannot be renamed), and logged.
    fn refuse(&self, name: &str, reason: &str) {
        let path = self.dir.join(name);
        let aside = self.dir.join(format!("{name}{REFUSED_SUFFIX}"));
        let how = match std::fs::rename(&path, &aside) {
            Ok(()) => "set aside",
            Err(_) => {
                let _ = std::fs::remove_file(&path);
                "deleted"
            }
        };
        tracing::warn!(
            event = "outbox:refused",
            file = %path.display(),
            reason,
            outcome = how,
            "outbox:refused: an outbox file this host did not write is never sent: {reason}; {how}"
        );
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
    ) -> Kept {
        Kept(Arc::new(KeptResponder {
            inner: responder,
            outbox: self.clone(),
            name: Self::name(token),
            token: token.to_owned(),
            activity: activity.to_owned(),
            task_id: task.task_id.to_string(),
            handler_digest: task.handler_digest.to_string(),
            written: Mutex::new(None),
            guest: std::sync::atomic::AtomicBool::new(false),
            stayed: std::sync::atomic::AtomicBool::new(false),
            claim: Mutex::new(ClaimState::None),
        }))
    }

    /// Writes `entry` as `name`; returns its size, or `None` when it was not written
    /// (the outbox is full, or the folder refused: logged).
    async fn write(&self, name: &str, entry: &Entry) -> Option<u64> {
        let data = match serde_json::to_vec(entry) {
            Ok(body) => self.seal(name, &body),
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
        if now_ms() < self.hung_until_ms.load(Ordering::Relaxed) {
            self.held.fetch_sub(size, Ordering::Relaxed);
            tracing::debug!(
                activity = %entry.activity,
                task_id = %entry.task_id,
                "the outbox's volume was hung moments ago: the answer is sent without an entry"
            );
            return None;
        }
        let (store, owned_name, owned_data) = (self.store.clone(), name.to_owned(), data.clone());
        let mut job = tokio::spawn(async move { store.put(&owned_name, &owned_data).await });
        let written = match tokio::time::timeout(WRITE_DEADLINE, &mut job).await {
            Ok(Ok(written)) => written,
            Ok(Err(joined)) => Err(StoreError {
                code: "Internal".into(),
                message: format!("the outbox's write failed: {joined}"),
            }),
            Err(_) => {
                self.hung_until_ms
                    .store(now_ms().saturating_add(HUNG_BACKOFF_MS), Ordering::Relaxed);
                // The write goes on where it is stuck; if it ever ends, the entry it made
                // was never counted or tracked: it goes (unless another write replaced
                // it since), so that the next start does not send it again.
                let path = self.dir.join(name);
                tokio::spawn(async move {
                    if let Ok(Ok(())) = job.await
                        && std::fs::read(&path).is_ok_and(|now| now == data)
                    {
                        let _ = std::fs::remove_file(&path);
                    }
                });
                Err(StoreError {
                    code: "Timeout".into(),
                    message: format!(
                        "the write took over {} s and was not waited for: the answer was not made durable",
                        WRITE_DEADLINE.as_secs()
                    ),
                })
            }
        };
        match written {
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
    /// Functions no longer takes it. Entries older than [`MAX_TOKEN_LIFETIME`] are
    /// dropped, with a warning; files this host did not write (no MAC, or one that does
    /// not check out) are refused: logged (`outbox:refused`) and set aside, never sent.
    /// Returns how many are being delivered; each delivery goes on in a task of its own,
    /// retried as any answer.
    ///
    /// A recovered answer ends with `task:done` (`recovered: true`), and settles the
    /// idempotency claim its task held (found by activity in `idempotency`): a guest's
    /// answer that Step Functions took, or found closed (most likely taken before the
    /// host stopped), is stored under the key; a host's answer gives the key back.
    pub fn recover(
        self: &Arc<Self>,
        sfn: &Arc<dyn StepFunctions>,
        events: &Events,
        options: &DeliveryOptions,
        idempotency: &dyn Fn(&str) -> Option<Arc<ActivityIdempotency>>,
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
            // The key, and what was refused at an earlier start.
            if name == FolderStore::KEY_FILE || name.ends_with(REFUSED_SUFFIX) {
                continue;
            }
            // Temporary files of a write that never finished.
            if name.starts_with('.') {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let data = match std::fs::read(&path) {
                Ok(data) => data,
                Err(err) => {
                    tracing::warn!(event = "outbox:dropped", file = %path.display(), error = %err, "outbox:dropped: not a readable outbox entry");
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
            };
            let entry = match self.unseal(&name, &data) {
                Ok(entry) => entry,
                Err(reason) => {
                    self.refuse(&name, reason);
                    continue;
                }
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
            let claim = entry
                .claim
                .clone()
                .and_then(|held| Some((idempotency(&entry.activity)?.resume(held.clone()), held)));
            let kept = Arc::new(KeptResponder {
                inner: Arc::new(SfnResponder::new(
                    sfn.clone(),
                    entry.token.clone(),
                    emitter.clone(),
                )),
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
                guest: std::sync::atomic::AtomicBool::new(entry.guest),
                stayed: std::sync::atomic::AtomicBool::new(false),
                // The entry stays until the claim is settled, as a live task's does.
                claim: Mutex::new(match &claim {
                    Some((_, held)) => ClaimState::Held(held.clone()),
                    None => ClaimState::None,
                }),
            });
            let kept = Kept(kept);
            // Through the same conclusion as a live task's: a guest's answer Step
            // Functions refuses is followed by `SfnWasmHost.AnswerRefused`, a host's
            // by the bare failure.
            let delivery = Delivery::new(kept.responder(), TaskControl::default(), options.clone());
            // A host's failure is of a kind this host knows when it has one of its names.
            let by = match &entry.answer {
                _ if entry.guest => Answerer::Guest,
                EntryAnswer::Failure { error, .. } => {
                    FailureKind::from_name(error).map_or(Answerer::Recovered, Answerer::Host)
                }
                EntryAnswer::Success { .. } => Answerer::Recovered,
            };
            delivery.resume(entry.answer.into(), by);
            let started = std::time::Instant::now();
            let (activity, task_id) = (entry.activity, entry.task_id);
            tokio::spawn(async move {
                delivery.conclude().await;
                let state = delivery.state();
                let guest = delivery.answered_by() == Some(Answerer::Guest);
                if let Some((claim, _)) = claim
                    && !kept.stayed()
                {
                    settle_recovered(claim, &state, guest, &activity, &task_id).await;
                }
                kept.finished();
                let (outcome, error) = match &state {
                    AnswerState::Delivered { answer, .. } if answer.is_success() => {
                        (TaskOutcome::Success, DoneError::Guest)
                    }
                    AnswerState::Delivered { .. } if guest => {
                        (TaskOutcome::Failure, DoneError::Guest)
                    }
                    // The host's failure it was (or the bare failure after a refusal).
                    AnswerState::Delivered {
                        answer: Answer::Failure { error, .. },
                        ..
                    } => (
                        TaskOutcome::HostFailure,
                        FailureKind::from_name(error).map_or(DoneError::Recovered, DoneError::Host),
                    ),
                    AnswerState::Delivered { .. } => {
                        (TaskOutcome::HostFailure, DoneError::Recovered)
                    }
                    AnswerState::Closed { .. } => (TaskOutcome::Closed, DoneError::Closed),
                    _ => (TaskOutcome::Undelivered, DoneError::Undelivered),
                };
                emitter.emit(TaskEvent::Done(TaskDone::not_run(
                    outcome,
                    error,
                    started.elapsed(),
                )));
            });
            recovered += 1;
        }
        recovered
    }
}

/// Settles the claim of a recovered answer: a guest's answer Step Functions took, or
/// found closed after the restart (most likely taken before it), is stored; any other
/// end gives the key back, except an answer given up again (its entry stays for the
/// next start, and so does the claim, until it expires).
async fn settle_recovered(
    claim: Claim,
    state: &AnswerState,
    guest: bool,
    activity: &str,
    task_id: &str,
) {
    let kept = match state {
        AnswerState::Delivered { answer, .. } if guest => Some(answer),
        AnswerState::Closed {
            attempted: Some(answer),
            ..
        } if guest => Some(answer),
        AnswerState::Undelivered { .. } | AnswerState::Pending | AnswerState::Delivering(_) => {
            return;
        }
        _ => None,
    };
    match claim.settle(kept).await {
        Ok(Settled::Done) => {}
        Ok(Settled::TakenOver) => tracing::warn!(
            event = "idempotency:taken_over",
            activity,
            task_id,
            "idempotency:taken_over: a recovered answer's claim had expired and another attempt took the key; the answer was not stored"
        ),
        Err(err) => tracing::warn!(
            event = "idempotency:unavailable",
            activity,
            task_id,
            code = %err.code,
            "idempotency:unavailable: {err}; a recovered answer's claim was not settled (it expires by itself)"
        ),
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

/// A live task's idempotency claim, as its outbox entry knows it.
enum ClaimState {
    /// No claim (or not yet known).
    None,
    /// The task holds this claim: entries carry it, and a settled answer's entry stays
    /// until the claim is settled too ([`Kept::finished`]), so that a host killed in
    /// between still settles it at the next start.
    Held(ClaimRef),
    /// The answer settled while the claim was held: the entry goes at `finished`.
    SettledAnswer,
}

/// A task's responder with its answers kept in the outbox (see [`Outbox::keep`]).
pub struct Kept(Arc<KeptResponder>);

impl Kept {
    /// The responder to deliver through.
    pub fn responder(&self) -> Arc<dyn Responder> {
        self.0.clone()
    }

    /// The task holds `claim`: its entries carry it until [`Kept::finished`].
    pub fn claimed(&self, claim: &Claim) {
        *self.0.claim_lock() = ClaimState::Held(claim.to_ref());
    }

    /// Whether the answer was given up with its entry left for the next start, which
    /// then settles the task's claim (the live task must leave it alone).
    pub fn stayed(&self) -> bool {
        self.0.stayed.load(Ordering::Relaxed)
    }

    /// The task's claim is settled: a settled answer's entry can go.
    pub fn finished(&self) {
        let state = std::mem::replace(&mut *self.0.claim_lock(), ClaimState::None);
        if matches!(state, ClaimState::SettledAnswer) {
            self.0.remove_entry();
        }
    }
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
    /// The answer being sent is the guest's.
    guest: std::sync::atomic::AtomicBool,
    /// The answer was given up with its entry on disk, for the next start.
    stayed: std::sync::atomic::AtomicBool,
    /// The task's idempotency claim, if it holds one.
    claim: Mutex<ClaimState>,
}

impl KeptResponder {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Written>> {
        self.written
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn claim_lock(&self) -> std::sync::MutexGuard<'_, ClaimState> {
        self.claim
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
            guest: self.guest.load(Ordering::Relaxed),
            claim: match &*self.claim_lock() {
                ClaimState::Held(claim) => Some(claim.clone()),
                _ => None,
            },
        };
        let previous = self.lock().take();
        if let Some(previous) = previous {
            self.outbox.held.fetch_sub(previous.size, Ordering::Relaxed);
        }
        if let Some(size) = self.outbox.write(&self.name, &entry).await {
            *self.lock() = Some(Written { status, size });
        }
    }

    /// The answer is settled: its entry goes, or, while the task holds a claim, once
    /// the claim is settled ([`Kept::finished`]).
    fn settled(&self) {
        {
            let mut claim = self.claim_lock();
            if matches!(*claim, ClaimState::Held(_)) {
                *claim = ClaimState::SettledAnswer;
                return;
            }
        }
        self.remove_entry();
    }

    fn remove_entry(&self) {
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
        self.remove_entry();
        self.inner.refused(answer, error);
    }

    fn undelivered(&self, answer: &Answer, reason: &str) {
        // Closed, or refused to the last: Step Functions will not take it.
        self.settled();
        self.inner.undelivered(answer, reason);
    }

    fn gave_up(&self, answer: &Answer, reason: &str) {
        // The host stopped, or the outage outlasted the retries: the entry stays (and
        // counts against the bound) for the next start, and so does the task's claim,
        // which the next start settles.
        if self.lock().take().is_some() {
            self.stayed.store(true, Ordering::Relaxed);
        }
        self.inner.gave_up(answer, reason);
    }

    fn closed(&self, answer: &Answer, reason: &str) {
        self.settled();
        self.inner.closed(answer, reason);
    }

    fn answering(&self, answer: &Answer, by: Answerer) {
        self.guest.store(by == Answerer::Guest, Ordering::Relaxed);
        self.inner.answering(answer, by);
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

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;
    use crate::events::EventKind;
    use crate::sfn::ActivityTask;

    /// Step Functions as far as the outbox reaches it: the tokens answers are sent for.
    #[derive(Default)]
    struct Recorded(Mutex<Vec<String>>);

    #[async_trait]
    impl StepFunctions for Recorded {
        async fn poll(&self, _: &str, _: &str) -> Result<Option<ActivityTask>, SfnError> {
            Ok(None)
        }
        async fn send_success(&self, token: &str, _: &str) -> Result<(), SfnError> {
            self.0.lock().unwrap().push(token.to_owned());
            Ok(())
        }
        async fn send_failure(&self, token: &str, _: &str, _: &str) -> Result<(), SfnError> {
            self.0.lock().unwrap().push(token.to_owned());
            Ok(())
        }
        async fn send_heartbeat(&self, _: &str) -> Result<(), SfnError> {
            Ok(())
        }
    }

    /// Log lines, as text.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn entry(token: &str) -> Entry {
        Entry {
            activity: "arn:aws:states:us-east-1:000000000000:activity:a".into(),
            task_id: format!("task-{token}"),
            handler_digest: "00".repeat(32),
            written_at_ms: now_ms(),
            token: token.into(),
            answer: EntryAnswer::Success {
                output: "{}".into(),
            },
            guest: true,
            claim: None,
        }
    }

    #[tokio::test]
    async fn only_entries_the_host_wrote_are_sent() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Arc::new(Outbox::open(&dir.path().join("outbox"), 1 << 20).unwrap());
        let kept = Outbox::name("kept-token");
        assert!(outbox.write(&kept, &entry("kept-token")).await.is_some());
        let sealed = std::fs::read(outbox.dir.join(&kept)).unwrap();

        // Planted by hand, in the format entries had before they carried a MAC.
        let plain = Outbox::name("planted-token");
        let json = serde_json::to_vec(&entry("planted-token")).unwrap();
        std::fs::write(outbox.dir.join(&plain), &json).unwrap();
        // The host's own entry under another name (the MAC covers the name).
        let renamed = Outbox::name("renamed-token");
        std::fs::write(outbox.dir.join(&renamed), &sealed).unwrap();
        // A header whose MAC is made up.
        let forged = Outbox::name("forged-token");
        let mut data = format!("{HEADER}{}\n", "ab".repeat(32)).into_bytes();
        data.extend_from_slice(&serde_json::to_vec(&entry("forged-token")).unwrap());
        std::fs::write(outbox.dir.join(&forged), &data).unwrap();
        // The host's own entry with its content changed.
        let changed = Outbox::name("changed-token");
        let body = serde_json::to_vec(&entry("changed-token")).unwrap();
        let mut data = outbox.seal(&changed, &body);
        let last = data.len() - 2;
        data[last] = b' ';
        let mut file = std::fs::File::create(outbox.dir.join(&changed)).unwrap();
        file.write_all(&data).unwrap();

        let sfn = Arc::new(Recorded::default());
        let dyn_sfn: Arc<dyn StepFunctions> = sfn.clone();
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_writer(move || writer.clone())
            .finish();
        let recovered = tracing::subscriber::with_default(subscriber, || {
            outbox.recover(
                &dyn_sfn,
                &Events::default(),
                &DeliveryOptions::default(),
                &|_| None,
            )
        });
        assert_eq!(recovered, 1);
        for _ in 0..200 {
            if !sfn.0.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(*sfn.0.lock().unwrap(), ["kept-token"]);

        let logged = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let refused: Vec<serde_json::Value> = logged
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .filter(|line: &serde_json::Value| line["event"] == "outbox:refused")
            .collect();
        assert_eq!(refused.len(), 4, "{logged}");
        for line in &refused {
            assert_eq!(line["level"], "WARN", "{line}");
            assert_eq!(line["outcome"], "set aside", "{line}");
        }
        for name in [&plain, &renamed, &forged, &changed] {
            assert!(logged.contains(name.as_str()), "{name} not in {logged}");
            assert!(!outbox.dir.join(name).exists(), "{name}");
            assert!(
                outbox.dir.join(format!("{name}{REFUSED_SUFFIX}")).exists(),
                "{name}"
            );
        }

        // What was set aside stays aside: a later start neither sends nor refuses it again.
        let again = outbox.recover(
            &dyn_sfn,
            &Events::default(),
            &DeliveryOptions::default(),
            &|_| None,
        );
        assert_eq!(again, 0);
        assert!(outbox.dir.join(FolderStore::KEY_FILE).exists());
    }

    /// A host killed after its answer was sent, before its idempotency claim was settled:
    /// the next start delivers the entry, stores the guest's answer under the key (so a
    /// duplicate does not run the guest again once the claim would have expired), and
    /// ends the task with `task:done`, `recovered: true`. Found closed (it was most likely
    /// taken before the kill), it is `task:undelivered` at INFO, not an error.
    #[tokio::test]
    async fn a_recovered_answer_settles_its_claim_and_ends_with_task_done() {
        use crate::idempotency::Lookup;
        let dir = tempfile::tempdir().unwrap();
        let outbox = Arc::new(Outbox::open(&dir.path().join("outbox"), 1 << 20).unwrap());
        let store: Arc<dyn Store> =
            Arc::new(FolderStore::open(&dir.path().join("answers")).unwrap());
        let keys = Arc::new(ActivityIdempotency::new(
            store,
            "/orderId".into(),
            Duration::from_secs(60),
            Duration::from_secs(60),
        ));
        let activity = entry("t").activity;
        let mut sent = Vec::new();
        for (token, order) in [("t-1", "o-1"), ("t-2", "o-2")] {
            let input = format!(r#"{{"orderId":"{order}"}}"#);
            let Lookup::Run(claim) = keys.look_up(&activity, &input).await else {
                panic!("runs");
            };
            let mut kept = entry(token);
            kept.answer = EntryAnswer::Success {
                output: format!(r#"{{"order":"{order}"}}"#),
            };
            kept.claim = Some(claim.to_ref());
            assert!(outbox.write(&Outbox::name(token), &kept).await.is_some());
            sent.push(input);
        }
        // t-1 is taken; t-2 was taken before the kill, and is now refused as closed.
        let sfn = Arc::new(ClosedFor("t-2", Recorded::default()));
        let dyn_sfn: Arc<dyn StepFunctions> = sfn.clone();
        let events = Events::default();
        let mut heard = events.subscribe();
        let claims = keys.clone();
        let found = outbox.recover(
            &dyn_sfn,
            &events,
            &DeliveryOptions::default(),
            &move |arn| (arn == activity).then(|| claims.clone()),
        );
        assert_eq!(found, 2);
        let mut done = Vec::new();
        let mut undelivered = Vec::new();
        while done.len() < 2 {
            let event = tokio::time::timeout(Duration::from_secs(10), heard.recv())
                .await
                .expect("task:done for each recovered answer")
                .unwrap();
            if let EventKind::Task { task, event, .. } = event.kind {
                assert!(task.recovered);
                match event {
                    TaskEvent::Done(d) => done.push((task.task_id.to_string(), d.outcome)),
                    TaskEvent::Undelivered {
                        probably_delivered, ..
                    } => undelivered.push(probably_delivered),
                    _ => {}
                }
            }
        }
        done.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            done,
            [
                ("task-t-1".to_owned(), TaskOutcome::Success),
                ("task-t-2".to_owned(), TaskOutcome::Closed)
            ]
        );
        assert_eq!(
            undelivered,
            [true],
            "closed after a restart: probably delivered"
        );
        // Both claims hold the guest's answer now.
        for (input, order) in sent.iter().zip(["o-1", "o-2"]) {
            let Lookup::Stored(Answer::Success { output }) =
                keys.look_up(&entry("t").activity, input).await
            else {
                panic!("the recovered answer is stored under {order}");
            };
            assert!(output.contains(order));
        }
    }

    /// Refuses the answers of one token as closed, as Step Functions does once a task is
    /// answered.
    struct ClosedFor(&'static str, Recorded);

    #[async_trait]
    impl StepFunctions for ClosedFor {
        async fn poll(&self, a: &str, w: &str) -> Result<Option<ActivityTask>, SfnError> {
            self.1.poll(a, w).await
        }
        async fn send_success(&self, token: &str, output: &str) -> Result<(), SfnError> {
            if token == self.0 {
                return Err(SfnError::TaskClosed("TaskTimedOut: Task Timed Out".into()));
            }
            self.1.send_success(token, output).await
        }
        async fn send_failure(&self, token: &str, e: &str, c: &str) -> Result<(), SfnError> {
            self.1.send_failure(token, e, c).await
        }
        async fn send_heartbeat(&self, token: &str) -> Result<(), SfnError> {
            self.1.send_heartbeat(token).await
        }
    }

    /// A volume that never finishes a write.
    struct Hung;

    #[async_trait]
    impl Store for Hung {
        async fn read(&self, _: &str) -> Result<Option<crate::store::Versioned>, StoreError> {
            std::future::pending().await
        }
        async fn put(&self, _: &str, _: &[u8]) -> Result<(), StoreError> {
            std::future::pending().await
        }
        async fn put_if_absent(
            &self,
            _: &str,
            _: &[u8],
        ) -> Result<crate::store::Claimed, StoreError> {
            std::future::pending().await
        }
        async fn put_if_match(
            &self,
            _: &str,
            _: &[u8],
            _: &crate::store::Version,
        ) -> Result<crate::store::Claimed, StoreError> {
            std::future::pending().await
        }
        async fn delete(&self, _: &str) -> Result<(), StoreError> {
            std::future::pending().await
        }
    }

    /// A hung outbox volume delays an answer by the write's deadline, then it is sent
    /// anyway (logged: not made durable).
    #[tokio::test(start_paused = true)]
    async fn a_hung_volume_does_not_stall_answers() {
        let dir = tempfile::tempdir().unwrap();
        let mut opened = Outbox::open(&dir.path().join("outbox"), 1 << 20).unwrap();
        opened.store = Arc::new(Hung);
        let outbox = Arc::new(opened);
        let sfn = Arc::new(Recorded::default());
        let task = TaskRef {
            task_id: "t".into(),
            handler_digest: "d".into(),
            recovered: false,
        };
        let emitter = Emitter::for_activity(Events::default(), "arn:a".into())
            .for_worker("w".into())
            .for_task(task.clone());
        let kept = outbox.keep(
            Arc::new(SfnResponder::new(sfn.clone(), "hung-token".into(), emitter)),
            "hung-token",
            &task,
            "arn:a",
        );
        let started = tokio::time::Instant::now();
        let answer = Answer::Success {
            output: "{}".into(),
        };
        tokio::time::timeout(WRITE_DEADLINE * 2, kept.responder().send(&answer))
            .await
            .expect("sent past the write's deadline")
            .unwrap();
        assert!(started.elapsed() >= WRITE_DEADLINE);
        assert_eq!(*sfn.0.lock().unwrap(), ["hung-token"]);
    }
}
