//! Record: each task's input and the answer its handler gave, one private JSON file per
//! task in the activity's `record` folder, for `sfn-wasm-host replay` to run again
//! against a new version before it is deployed.
//!
//! Files are written by a thread of their own through a bounded queue: a slow disk never
//! delays a task or its answer (a record that does not fit in the queue is dropped and
//! counted). Each file is written under a temporary name and renamed, so a reader never
//! sees half a record; files are created `0600` in a folder created `0700`, since inputs
//! and outputs are the business's data. The folder is kept within `record_max_mb` by
//! deleting the oldest records. Tasks Step Functions closed before any answer are not
//! recorded: there is no answer to compare with.

use std::collections::VecDeque;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::RecordConfig;
use crate::outcome::{Answer, Answerer};

/// Records the queue holds for the writer before new ones are dropped.
const QUEUE: usize = 4096;
/// Bytes of records (inputs and answers) the queue holds before new ones are dropped:
/// a stalled disk must not let the queue grow to `QUEUE` inputs of 256 KiB each.
pub const QUEUE_BYTES: u64 = 64 << 20;
/// The records' file suffix.
pub const SUFFIX: &str = ".json";

/// One task as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The activity ARN.
    pub activity: String,
    /// The task's id (as in its events).
    pub task_id: String,
    /// The handler version that answered.
    pub handler_digest: String,
    /// When the task arrived, in milliseconds since the Unix epoch.
    pub received_unix_ms: u64,
    /// The task input, exactly as Step Functions sent it.
    pub input: String,
    /// What the handler (or the host, for it) answered.
    pub answer: RecordedAnswer,
}

/// The answer a task was given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RecordedAnswer {
    /// The handler answered success with this output (a JSON document, as sent).
    Success {
        /// The output.
        output: String,
    },
    /// The handler answered failure.
    Failure {
        /// The error name.
        error: String,
        /// The cause.
        cause: String,
    },
    /// The host answered for the handler (`SfnWasmHost.Trap`, `.Timeout`, ...).
    HostFailure {
        /// The `SfnWasmHost.*` name.
        error: String,
        /// The cause.
        cause: String,
    },
}

impl Record {
    /// The bytes it holds, about: its input and answer (what can be large).
    fn size(&self) -> u64 {
        let answer = match &self.answer {
            RecordedAnswer::Success { output } => output.len(),
            RecordedAnswer::Failure { error, cause }
            | RecordedAnswer::HostFailure { error, cause } => error.len() + cause.len(),
        };
        (self.input.len() + answer + 256) as u64
    }
}

impl RecordedAnswer {
    /// The answer a task was given, by who gave it: the host's failures apart from the
    /// handler's, whatever their names.
    pub fn new(answer: &Answer, by: Option<Answerer>) -> Self {
        match (answer, by) {
            (Answer::Success { output }, _) => RecordedAnswer::Success {
                output: output.clone(),
            },
            (Answer::Failure { error, cause }, Some(Answerer::Host(_) | Answerer::Recovered)) => {
                RecordedAnswer::HostFailure {
                    error: error.clone(),
                    cause: cause.clone(),
                }
            }
            (Answer::Failure { error, cause }, _) => RecordedAnswer::Failure {
                error: error.clone(),
                cause: cause.clone(),
            },
        }
    }
}

/// Why the record folder cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("cannot use {} as the record folder: {source}", dir.display())]
pub struct RecordError {
    /// The folder.
    pub dir: PathBuf,
    /// What the OS said.
    pub source: std::io::Error,
}

enum Message {
    Record(Box<Record>),
    Flush(mpsc::Sender<()>),
}

/// An activity's recorder.
pub struct Recorder {
    queue: mpsc::SyncSender<Message>,
    dropped: AtomicU64,
    /// Bytes of the records queued and not yet written.
    queued: std::sync::Arc<AtomicU64>,
}

impl Recorder {
    /// Opens (or creates, `0700`) the folder and starts the writer thread. Records already
    /// there count towards the bound.
    ///
    /// # Errors
    /// When the folder cannot be created or listed, or the thread cannot start.
    pub fn start(config: &RecordConfig) -> Result<Self, RecordError> {
        let error = |source| RecordError {
            dir: config.dir.clone(),
            source,
        };
        if !config.dir.is_dir() {
            fs::create_dir_all(&config.dir).map_err(error)?;
            fs::set_permissions(&config.dir, fs::Permissions::from_mode(0o700)).map_err(error)?;
        }
        // The host's own folder: another user's, or one others can write to, is refused.
        sfn_wasm_engine::host_folder::check_owned(&config.dir).map_err(|reason| {
            error(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                reason,
            ))
        })?;
        sfn_wasm_engine::host_folder::remove_stale_temporaries(&config.dir);
        let kept = existing(&config.dir).map_err(error)?;
        let (queue, receive) = mpsc::sync_channel(QUEUE);
        let queued = std::sync::Arc::new(AtomicU64::new(0));
        let written = queued.clone();
        let mut writer = Writer {
            dir: config.dir.clone(),
            max_bytes: config.max_bytes,
            total: kept.iter().map(|(_, size)| size).sum(),
            kept,
        };
        std::thread::Builder::new()
            .name("sfn-wasm-record".into())
            .spawn(move || {
                for message in receive {
                    match message {
                        Message::Record(record) => {
                            writer.write(&record);
                            written.fetch_sub(record.size(), Ordering::Relaxed);
                        }
                        Message::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })
            .map_err(error)?;
        Ok(Self {
            queue,
            dropped: AtomicU64::new(0),
            queued,
        })
    }

    /// Queues `record` for writing; never blocks. Dropped (and counted) when the queue
    /// holds [`QUEUE`] records or [`QUEUE_BYTES`] bytes already.
    pub fn record(&self, record: Record) {
        let size = record.size();
        let room = self
            .queued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |queued| {
                Some(queued + size).filter(|total| *total <= QUEUE_BYTES)
            })
            .is_ok();
        let sent = room
            && match self.queue.try_send(Message::Record(Box::new(record))) {
                Ok(()) => true,
                Err(_) => {
                    self.queued.fetch_sub(size, Ordering::Relaxed);
                    false
                }
            };
        if !sent {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped == 1 || dropped.is_multiple_of(1000) {
                tracing::warn!(
                    dropped,
                    "the record writer is behind; records are being dropped"
                );
            }
        }
    }
}

/// Waits until every record the `recorders` queued so far is written, for at most
/// `limit` in all (their writers work at once).
pub fn flush_all<'a>(recorders: impl IntoIterator<Item = &'a Recorder>, limit: Duration) {
    let deadline = std::time::Instant::now() + limit;
    let waits: Vec<_> = recorders
        .into_iter()
        .filter_map(|recorder| {
            let (done, wait) = mpsc::channel();
            send_by(&recorder.queue, Message::Flush(done), deadline).then_some(wait)
        })
        .collect();
    for wait in waits {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let _ = wait.recv_timeout(left);
    }
}

/// Sends `message`, waiting for room in a full queue until `deadline`; whether it went.
fn send_by(
    queue: &mpsc::SyncSender<Message>,
    mut message: Message,
    deadline: std::time::Instant,
) -> bool {
    loop {
        match queue.try_send(message) {
            Ok(()) => return true,
            Err(mpsc::TrySendError::Full(back)) if std::time::Instant::now() < deadline => {
                message = back;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(_) => return false,
        }
    }
}

/// The writer thread's view of the folder: its records, oldest first, and their sizes.
struct Writer {
    dir: PathBuf,
    max_bytes: u64,
    total: u64,
    kept: VecDeque<(PathBuf, u64)>,
}

impl Writer {
    fn write(&mut self, record: &Record) {
        let name = format!("{:013}-{}{SUFFIX}", record.received_unix_ms, record.task_id);
        let path = self.dir.join(&name);
        let temp = self.dir.join(format!(".{name}.tmp"));
        let written = serde_json::to_vec_pretty(record)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&temp)?;
                file.write_all(&bytes)?;
                fs::rename(&temp, &path)?;
                Ok(bytes.len() as u64)
            });
        match written {
            Ok(size) => {
                self.total += size;
                self.kept.push_back((path, size));
                while self.total > self.max_bytes && self.kept.len() > 1 {
                    let Some((oldest, size)) = self.kept.pop_front() else {
                        break;
                    };
                    self.total -= size;
                    if let Err(err) = fs::remove_file(&oldest)
                        && err.kind() != std::io::ErrorKind::NotFound
                    {
                        tracing::warn!(record = %oldest.display(), error = %err, "cannot drop an old record");
                    }
                }
            }
            Err(err) => {
                let _ = fs::remove_file(&temp);
                tracing::warn!(record = %path.display(), error = %err, "cannot write a task record");
            }
        }
    }
}

/// The records in `dir`, oldest first (names start with the arrival time).
fn existing(dir: &Path) -> std::io::Result<VecDeque<(PathBuf, u64)>> {
    let mut found: Vec<(PathBuf, u64)> = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(SUFFIX) && !name.starts_with('.') {
            found.push((entry.path(), entry.metadata()?.len()));
        }
    }
    found.sort();
    Ok(found.into())
}

/// Reads every record in `dir`, oldest first.
///
/// # Errors
/// When the folder or a record cannot be read or parsed; the message names the file.
pub fn read_all(dir: &Path) -> Result<Vec<(PathBuf, Record)>, String> {
    let files = existing(dir).map_err(|err| format!("cannot read {}: {err}", dir.display()))?;
    files
        .into_iter()
        .map(|(path, _)| {
            let text =
                fs::read(&path).map_err(|err| format!("cannot read {}: {err}", path.display()))?;
            let record = serde_json::from_slice(&text)
                .map_err(|err| format!("{} is not a task record: {err}", path.display()))?;
            Ok((path, record))
        })
        .collect()
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |since| {
        u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::FailureKind;

    fn record(at: u64, size: usize) -> Record {
        Record {
            activity: "arn".into(),
            task_id: format!("task{at}"),
            handler_digest: "d".into(),
            received_unix_ms: at,
            input: "x".repeat(size),
            answer: RecordedAnswer::Success {
                output: "{}".into(),
            },
        }
    }

    #[test]
    fn a_recorded_answer_follows_who_answered_not_the_name() {
        let trap = Answer::failure("SfnWasmHost.Trap", "cause");
        let by_guest = RecordedAnswer::new(&trap, Some(Answerer::Guest));
        assert!(
            matches!(by_guest, RecordedAnswer::Failure { .. }),
            "{by_guest:?}"
        );
        let by_host = RecordedAnswer::new(&trap, Some(Answerer::Host(FailureKind::Trap)));
        assert!(
            matches!(by_host, RecordedAnswer::HostFailure { .. }),
            "{by_host:?}"
        );
        let success = Answer::Success {
            output: "{}".into(),
        };
        assert_eq!(
            RecordedAnswer::new(&success, Some(Answerer::Host(FailureKind::Internal))),
            RecordedAnswer::Success {
                output: "{}".into()
            }
        );
    }

    #[test]
    fn records_are_private_and_the_oldest_go_past_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("records");
        let recorder = Recorder::start(&RecordConfig {
            dir: folder.clone(),
            max_bytes: 3500,
        })
        .unwrap();
        assert_eq!(
            fs::metadata(&folder).unwrap().permissions().mode() & 0o777,
            0o700
        );
        for at in 1..=5 {
            recorder.record(record(at, 900));
        }
        flush_all([&recorder], Duration::from_secs(5));
        let kept = read_all(&folder).unwrap();
        let ids: Vec<_> = kept.iter().map(|(_, r)| r.task_id.as_str()).collect();
        assert_eq!(ids, ["task3", "task4", "task5"]);
        assert_eq!(kept[0].1, record(3, 900));
        for (path, _) in &kept {
            assert_eq!(
                fs::metadata(path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        // A new recorder counts what is there.
        drop(recorder);
        let recorder = Recorder::start(&RecordConfig {
            dir: folder.clone(),
            max_bytes: 3500,
        })
        .unwrap();
        recorder.record(record(6, 900));
        flush_all([&recorder], Duration::from_secs(5));
        let ids: Vec<_> = read_all(&folder)
            .unwrap()
            .into_iter()
            .map(|(_, r)| r.task_id)
            .collect();
        assert_eq!(ids, ["task4", "task5", "task6"]);
    }

    #[test]
    fn a_record_folder_others_can_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("records");
        fs::create_dir(&folder).unwrap();
        fs::set_permissions(&folder, fs::Permissions::from_mode(0o777)).unwrap();
        let err = Recorder::start(&RecordConfig {
            dir: folder.clone(),
            max_bytes: 3500,
        })
        .err()
        .unwrap();
        assert!(
            err.to_string()
                .contains("others can write to it (mode 777); run `chmod go-w"),
            "{err}"
        );
    }
}
