//! The answer outbox (`[host] outbox_dir`): every answer the host has taken for a task
//! is written to a durable folder before its first attempt, and removed once it is
//! settled (Step Functions took it, or can no longer take it). An answer whose delivery
//! the host gave up (it stopped, or an outage outlasted `answer_retry_seconds`) stays,
//! and so does one the host was killed holding: at the next start the host delivers what
//! it finds there. So an answer outlives a `kill -9`, an OOM kill or a node loss (with a
//! volume that outlives the node).
//!
//! The outbox is a [`Transport`] around the task's own, which writes each answer before
//! its first attempt, and a [`DeliveryObserver`] of the task's delivery, which hears how
//! the answer's delivery ended: the delivery does not know it is there.
//!
//! Entries are records of one append-only log in the folder ([`open_log`],
//! `store.log`, private), written in group commits: answers that arrive together share
//! one `write` and one `fsync` (no `fsync` with `outbox_durability = "process-crash"`).
//! The folder is this host's alone while it runs (locked). Entries an older version left
//! as files (`HEX.json`) or as rows of its SQLite database (`store.sqlite`) are moved
//! into the log at open.
//!
//! An entry holds a task token, and what is found there is sent with the host's
//! credentials: so only what this host wrote is ever sent. The folder is the host's own
//! (its owner and mode are checked, and no `[[activity.dir]]` grant may overlap it), and
//! each entry carries an HMAC-SHA256, under a key the folder keeps private
//! (`outbox_dir/.key`, 0600), over the format, its name and its content. At recovery an
//! entry without one, or whose MAC does not check out (planted by hand, changed,
//! renamed, or left by a host with another key or an older version), is logged
//! (`outbox:refused`) and set aside: written to the file `NAME.refused` and taken out of
//! the log, never sent, for an operator to look at and delete.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sfn_wasm_engine::control::TaskControl;
use sfn_wasm_engine::host_folder;

use crate::answer_events::AnswerEvents;
use crate::delivery::{
    AnswerState, Delivery, DeliveryEvent, DeliveryObserver, DeliveryOptions, Fanout, Transport,
};
use crate::events::{DoneError, Emitter, Events, TaskDone, TaskEvent, TaskOutcome, TaskRef};
use crate::idempotency::{ActivityIdempotency, Claim, ClaimRef, Settled};
use crate::ids::sha256_hex;
use crate::outcome::{Answer, Answerer, FailureKind};
use crate::sfn::{SfnError, StepFunctions};
use crate::sfn_transport::SfnTransport;
use crate::store::{Durability, GroupCommitStore, Legacy, Store, StoreError, is_digest, open_log};

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
    /// The entries: one log in the folder, written in group commits.
    log: Arc<GroupCommitStore>,
    /// Where entries are written: the log (a test puts a hung volume in its place).
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
    /// of answers: past that, answers are delivered without an entry (logged). Each
    /// entry is written as `durability` says before the answer's first attempt.
    ///
    /// # Errors
    /// [`StoreError`] when the folder cannot be created, another user owns it or others
    /// can write to it, another process holds it (`InUse`: one outbox folder per host),
    /// or its key cannot be made or is not private.
    pub fn open(dir: &Path, max_bytes: u64, durability: Durability) -> Result<Self, StoreError> {
        // Entries an older version left as files or rows are moved into the log, and
        // checked with the rest at recovery.
        let log = Arc::new(open_log(dir, durability, Legacy::Import(is_entry_name))?);
        let key = host_folder::host_key(dir).map_err(|message| StoreError {
            code: "UntrustedKey".into(),
            message,
        })?;
        Ok(Self {
            dir: dir.to_owned(),
            store: log.clone(),
            log,
            hung_until_ms: AtomicU64::new(0),
            key,
            max_bytes,
            held: AtomicU64::new(0),
        })
    }

    /// The file for the entry `name` with JSON `body`: the header with its MAC, then
    /// the body.
    fn seal(&self, name: &str, body: &[u8]) -> Vec<u8> {
        let mac = host_folder::seal(&self.key, &[FORMAT, name.as_bytes(), body]);
        let mut data = Vec::with_capacity(HEADER.len() + 2 * mac.len() + 1 + body.len());
        data.extend_from_slice(HEADER.as_bytes());
        sfn_wasm_engine::extend_hex(&mut data, &mac);
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
        if !host_folder::is_sealed(&self.key, &[FORMAT, name.as_bytes(), body], &mac) {
            return Err(
                "its MAC does not check out: planted, changed or renamed, or written under another key",
            );
        }
        serde_json::from_slice(body).map_err(|_| "sealed, but not an outbox entry of this version")
    }

    /// Sets the entry `name` (holding `data`) aside, never to be sent: written to the
    /// file `NAME.refused` (private) for an operator to look at, and taken out of the
    /// log; logged.
    fn refuse(&self, name: &str, data: &[u8], reason: &str) {
        let aside = self.dir.join(format!("{name}{REFUSED_SUFFIX}"));
        let how = match write_private(&aside, data) {
            Ok(()) => "set aside",
            Err(_) => "deleted",
        };
        let _ = host_folder::sync_dir(&self.dir);
        self.log.delete_later(name);
        tracing::warn!(
            event = "outbox:refused",
            // The entry's name in the folder, as when entries were files.
            file = %self.dir.join(name).display(),
            reason,
            outcome = how,
            "outbox:refused: an outbox entry this host did not write is never sent: {reason}; {how}"
        );
    }

    /// The entry name of a task token: a digest (the token never names a file).
    fn name(token: &str) -> String {
        format!("{}.json", sha256_hex(token.as_bytes()))
    }

    /// `transport`, for the task with `token`, with its answers kept here until settled:
    /// deliver through [`Kept::transport`] and tell [`Kept::observer`].
    pub fn keep(
        self: &Arc<Self>,
        transport: Arc<dyn Transport>,
        token: &str,
        task: &TaskRef,
        activity: &str,
    ) -> Kept {
        Kept(Arc::new(KeptEntry {
            inner: transport,
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
        // Waited for here, not in a task of its own (a spawn per answer, and at several
        // runtime threads a wake-up of another); only a write past its deadline is
        // handed to a task, which lets it finish where it is stuck.
        let (store, owned_name, owned_data) = (self.store.clone(), name.to_owned(), data.clone());
        let mut job = Box::pin(async move { store.put(&owned_name, &owned_data).await });
        let written = match tokio::time::timeout(WRITE_DEADLINE, &mut job).await {
            Ok(written) => written,
            Err(_) => {
                self.hung_until_ms
                    .store(now_ms().saturating_add(HUNG_BACKOFF_MS), Ordering::Relaxed);
                // The write goes on where it is stuck; if it ever ends, the entry it made
                // was never counted or tracked: it goes (unless another write replaced
                // it since), so that the next start does not send it again.
                let (store, name) = (self.store.clone(), name.to_owned());
                tokio::spawn(async move {
                    if let Ok(()) = job.await
                        && store
                            .get(&name)
                            .await
                            .is_ok_and(|now| now.as_deref() == Some(&data[..]))
                    {
                        let _ = store.delete(&name).await;
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

    /// Commits what the log holds back (removals waiting for a write to ride
    /// with), so that a clean exit leaves no settled entry behind to send again.
    pub async fn flush(&self) {
        if let Err(err) = self.log.flush().await {
            tracing::warn!(event = "outbox:unavailable", code = %err.code, "outbox:unavailable: settled entries could not be removed at exit: {err}");
        }
    }

    /// Removes a settled answer's entry, in the log's next commit (no need to wait
    /// for it: a leftover entry is only sent again and refused as closed).
    fn remove(&self, name: &str, size: u64) {
        self.held.fetch_sub(size, Ordering::Relaxed);
        self.log.delete_later(name);
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
        let entries = match self.log.list() {
            Ok(entries) => entries,
            Err(err) => {
                tracing::warn!(event = "outbox:unavailable", code = %err.code, "outbox:unavailable: the outbox could not be read at start: {err}");
                return 0;
            }
        };
        let mut recovered = 0;
        // Only entries' names: a folder store may share the folder (and the database).
        for (name, data) in entries.into_iter().filter(|(name, _)| is_entry_name(name)) {
            let Some((entry, size)) = self.read_entry(&name, &data) else {
                continue;
            };
            let claim = entry
                .claim
                .clone()
                .and_then(|held| Some((idempotency(&entry.activity)?.resume(held.clone()), held)));
            self.redeliver(name, entry, size, claim, sfn, events, options);
            recovered += 1;
        }
        recovered
    }

    /// The entry `name` holding `data`, and its size (counted as held), when it is one
    /// to deliver. Drops one older than [`MAX_TOKEN_LIFETIME`]; refuses (sets aside) one
    /// this host did not write.
    fn read_entry(&self, name: &str, data: &[u8]) -> Option<(Entry, u64)> {
        let entry = match self.unseal(name, data) {
            Ok(entry) => entry,
            Err(reason) => {
                self.refuse(name, data, reason);
                return None;
            }
        };
        let age = Duration::from_millis(now_ms().saturating_sub(entry.written_at_ms));
        if age > MAX_TOKEN_LIFETIME {
            tracing::warn!(event = "outbox:dropped", activity = %entry.activity, task_id = %entry.task_id, "outbox:dropped: older than any task token lives");
            self.log.delete_later(name);
            return None;
        }
        let size = data.len() as u64;
        self.held.fetch_add(size, Ordering::Relaxed);
        Some((entry, size))
    }

    /// Delivers a recovered `entry` (the file `name`) in a task of its own, through the
    /// same conclusion as a live task's (a guest's answer Step Functions refuses is
    /// followed by `SfnWasmHost.AnswerRefused`, a host's by the bare failure), then
    /// settles its `claim` and emits its `task:done`.
    #[allow(clippy::too_many_arguments)] // what a recovered task is delivered with
    fn redeliver(
        self: &Arc<Self>,
        name: String,
        entry: Entry,
        size: u64,
        claim: Option<(Claim, ClaimRef)>,
        sfn: &Arc<dyn StepFunctions>,
        events: &Events,
        options: &DeliveryOptions,
    ) {
        let task = TaskRef {
            task_id: entry.task_id.as_str().into(),
            handler_digest: entry.handler_digest.as_str().into(),
            recovered: true,
        };
        let emitter = Emitter::for_activity(events.clone(), entry.activity.as_str().into())
            .for_worker("outbox".into())
            .for_task(task);
        let kept = Kept(Arc::new(KeptEntry {
            inner: Arc::new(SfnTransport::new(sfn.clone(), entry.token.clone())),
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
        }));
        let observer = Fanout::new([
            kept.observer(),
            Arc::new(AnswerEvents::new(emitter.clone())),
        ]);
        let delivery = Delivery::new(
            kept.transport(),
            Arc::new(observer),
            TaskControl::default(),
            options.clone(),
        );
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
            let (outcome, error) = recovered_outcome(&state, guest);
            emitter.emit(TaskEvent::Done(TaskDone::not_run(
                outcome,
                error,
                started.elapsed(),
            )));
        });
    }
}

/// What a recovered task came to, by what Step Functions accepted and whether the guest
/// gave the answer.
fn recovered_outcome(state: &AnswerState, guest: bool) -> (TaskOutcome, DoneError) {
    match state {
        AnswerState::Delivered { answer, .. } if answer.is_success() => {
            (TaskOutcome::Success, DoneError::Guest)
        }
        AnswerState::Delivered { .. } if guest => (TaskOutcome::Failure, DoneError::Guest),
        // The host's failure it was (or the bare failure after a refusal).
        AnswerState::Delivered {
            answer: Answer::Failure { error, .. },
            ..
        } => (
            TaskOutcome::HostFailure,
            FailureKind::from_name(error).map_or(DoneError::Recovered, DoneError::Host),
        ),
        AnswerState::Delivered { .. } => (TaskOutcome::HostFailure, DoneError::Recovered),
        AnswerState::Closed { .. } => (TaskOutcome::Closed, DoneError::Closed),
        _ => (TaskOutcome::Undelivered, DoneError::Undelivered),
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

/// Whether `name` is an entry's ([`Outbox::name`]: a digest, then `.json`).
fn is_entry_name(name: &str) -> bool {
    name.strip_suffix(".json").is_some_and(is_digest)
}

/// Writes `data` to a new private (0600) file at `path`, replacing one there.
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(data)?;
    // Durable before its row goes.
    file.sync_all()
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

mod kept;

pub use kept::Kept;
use kept::{ClaimState, KeptEntry, Written};

#[cfg(test)]
mod tests;
