//! A store in one SQLite database in a folder (WAL mode), whose writes are made durable
//! in groups: one writer thread takes every call that arrived while the previous commit
//! ran, applies them in one transaction and commits once, so N answers arriving together
//! cost one `fsync` of the log, not 2 N of files and folders. The host's per-task
//! records (outbox entries, idempotency claims and answers) live here: a file per
//! record cost a new inode per write and the folder's lock per rename, which measured
//! at several times a task's own CPU (`BENCHMARKS.md`, issue 37).
//!
//! The folder is checked as [`FolderStore`](super::FolderStore)'s is (owned by the
//! host's user, writable by nobody else); the database is created private (0600), and
//! SQLite gives its `-wal` and `-shm` files the same mode. Several processes may open
//! one database (SQLite locks it); a call that finds it locked waits up to
//! [`BUSY_TIMEOUT`].

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use super::folder::open_private_folder;
use super::{Claimed, Durability, Store, StoreError, Version, Versioned};
use crate::ids::sha256_hex;

/// The database's file name in its folder.
pub const DATABASE: &str = "store.sqlite";

/// How long a call waits for another connection's lock on the database (another
/// process, or another store on the same folder): under the outbox's 2 s write
/// deadline, so that contention fails a write rather than marks the volume hung.
const BUSY_TIMEOUT: Duration = Duration::from_secs(1);

/// The most calls one commit takes: a bound on what one failed commit fails.
const MAX_BATCH: usize = 512;

/// How long deletes nobody waits for ([`JournalStore::delete_later`]) wait for a write
/// to ride with, rather than cost a commit of their own: one task at a time makes one
/// commit per task instead of two. [`JournalStore::flush`] ends the wait.
const DETACHED_WAIT: Duration = Duration::from_millis(100);

/// Objects as rows of one SQLite database in a folder, written in group commits.
pub struct JournalStore {
    calls: mpsc::Sender<Call>,
}

/// A call to the writer thread, with where its result goes.
enum Call {
    Read(
        String,
        oneshot::Sender<Result<Option<Versioned>, StoreError>>,
    ),
    Put(String, Vec<u8>, Reply<()>),
    PutIfAbsent(String, Vec<u8>, Reply<Claimed>),
    PutIfMatch(String, Vec<u8>, Version, Reply<Claimed>),
    Delete(String, Option<Reply<()>>),
    /// Commits what is waiting (deletes nobody waits for), then answers.
    Flush(Reply<()>),
    /// Answered on a std channel: [`JournalStore::list`] blocks its caller.
    List(mpsc::Sender<Result<Objects, StoreError>>),
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// Every object, by name, with its bytes.
type Objects = Vec<(String, Vec<u8>)>;

/// What a call's reply waits for: the commit of its transaction.
type Answer = Box<dyn FnOnce(&Result<(), StoreError>) + Send>;

/// `reply` with `done`, once the commit is known: a write that its commit lost, or a
/// read in a transaction that failed, answers the commit's error.
fn answer<T: Send + 'static>(reply: Reply<T>, done: Result<T, StoreError>) -> Answer {
    Box::new(move |committed| {
        let _ = reply.send(committed.clone().and(done));
    })
}

/// What the folder's files of an older version become at open.
#[derive(Debug, Clone, Copy)]
pub enum Legacy {
    /// The files whose names the function accepts (the caller's own names: another
    /// store may share the folder) are objects a [`FolderStore`](super::FolderStore)
    /// left: moved into the database (then deleted), so an upgraded host finds them.
    Import(fn(&str) -> bool),
    /// Files are left alone (the caller reads them itself, as the outbox does).
    Leave,
}

impl JournalStore {
    /// The store in `dir` (created, private, if missing), its writes as durable as
    /// `durability` says once they return.
    ///
    /// # Errors
    /// [`StoreError`] when the folder cannot be created or is not private, or the
    /// database cannot be opened (another program's file, a full disk).
    pub fn open(dir: &Path, durability: Durability, legacy: Legacy) -> Result<Self, StoreError> {
        open_private_folder(dir)?;
        let path = dir.join(DATABASE);
        create_private(&path).map_err(|err| StoreError::io(&err))?;
        let connection = connect(&path, durability)?;
        if let Legacy::Import(is_object) = legacy {
            import_files(&connection, dir, is_object)?;
            run(&connection, synchronous(durability))?;
        }
        let (calls, received) = mpsc::channel();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || write_loop(&connection, &received))
            .map_err(|err| StoreError::io(&err))?;
        Ok(Self { calls })
    }

    /// Every object, by name, after every call made before this one (a
    /// [`delete_later`](Self::delete_later) included): what a start recovers, before
    /// any task runs. Blocks the calling thread until the writer answers.
    ///
    /// # Errors
    /// [`StoreError`] when the database cannot be read.
    pub fn list(&self) -> Result<Objects, StoreError> {
        let (reply, result) = mpsc::channel();
        self.send(Call::List(reply))?;
        result.recv().map_err(|_| StoreError {
            code: "Internal".into(),
            message: "the store's writer thread stopped before it answered".into(),
        })?
    }

    /// Removes `name` in the next commit without waiting for it: for what only costs a
    /// second look if it stays (a settled outbox entry).
    pub fn delete_later(&self, name: &str) {
        let _ = self.send(Call::Delete(name.to_owned(), None));
    }

    /// Returns once every call made before it is committed (deletes that
    /// [`delete_later`](Self::delete_later) left waiting for a write included): before
    /// a clean exit.
    ///
    /// # Errors
    /// [`StoreError`] when the commit failed.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.ask(Call::Flush).await
    }

    fn send(&self, call: Call) -> Result<(), StoreError> {
        self.calls.send(call).map_err(|_| StoreError {
            code: "Internal".into(),
            message: "the store's writer thread has stopped".into(),
        })
    }

    async fn ask<T>(&self, call: impl FnOnce(Reply<T>) -> Call) -> Result<T, StoreError> {
        let (reply, result) = oneshot::channel();
        self.send(call(reply))?;
        result.await.map_err(stopped)?
    }
}

fn stopped(_: oneshot::error::RecvError) -> StoreError {
    StoreError {
        code: "Internal".into(),
        message: "the store's writer thread stopped before it answered".into(),
    }
}

/// Creates `path` as a private (0600) file if it does not exist; SQLite then gives its
/// journal files the same mode.
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map(drop)
}

/// Opens the database in WAL mode: `synchronous = FULL` syncs the log at every commit
/// (power loss), `NORMAL` only at checkpoints (a process crash loses nothing: the log is
/// in the kernel's hands once written).
fn connect(path: &Path, durability: Durability) -> Result<Connection, StoreError> {
    let connection = Connection::open(path).map_err(sql)?;
    connection.busy_timeout(BUSY_TIMEOUT).map_err(sql)?;
    connection
        .execute_batch(&format!(
            "PRAGMA journal_mode = WAL;
             {};
             CREATE TABLE IF NOT EXISTS objects (
                 name TEXT PRIMARY KEY NOT NULL,
                 data BLOB NOT NULL,
                 version TEXT NOT NULL
             ) WITHOUT ROWID;",
            synchronous(durability)
        ))
        .map_err(sql)?;
    Ok(connection)
}

/// The `synchronous` setting of a durability: WAL synced at every commit, or at
/// checkpoints only.
fn synchronous(durability: Durability) -> &'static str {
    match durability {
        Durability::PowerLoss => "PRAGMA synchronous = FULL",
        Durability::ProcessCrash => "PRAGMA synchronous = NORMAL",
    }
}

fn sql(err: rusqlite::Error) -> StoreError {
    let code = match &err {
        rusqlite::Error::SqliteFailure(failure, _) => format!("{:?}", failure.code),
        _ => "Sqlite".into(),
    };
    StoreError {
        code,
        message: err.to_string(),
    }
}

/// An object's version: the SHA-256 of its bytes, as in a [`FolderStore`](super::FolderStore).
fn version_of(data: &[u8]) -> Version {
    Version(sha256_hex(data))
}

/// Takes calls until every [`JournalStore`] handle is gone: each round, every call
/// waiting (up to [`MAX_BATCH`]) in one transaction, then their replies.
fn write_loop(connection: &Connection, calls: &mpsc::Receiver<Call>) {
    while let Ok(first) = calls.recv() {
        let mut batch = vec![first];
        take_waiting(calls, &mut batch);
        // Only deletes nobody waits for: they go with the next call, if one comes soon.
        if batch.iter().all(Call::is_detached)
            && let Ok(call) = calls.recv_timeout(DETACHED_WAIT)
        {
            batch.push(call);
            take_waiting(calls, &mut batch);
        }
        commit(connection, batch);
    }
}

/// Adds the calls already waiting to `batch`, up to [`MAX_BATCH`].
fn take_waiting(calls: &mpsc::Receiver<Call>, batch: &mut Vec<Call>) {
    while batch.len() < MAX_BATCH {
        match calls.try_recv() {
            Ok(call) => batch.push(call),
            Err(_) => break,
        }
    }
}

impl Call {
    /// A delete nobody waits for.
    fn is_detached(&self) -> bool {
        matches!(self, Call::Delete(_, None))
    }
}

/// Applies `batch` in one transaction and commits it; every call is answered after
/// the commit, with its error if it failed.
fn commit(connection: &Connection, batch: Vec<Call>) {
    let mut began = run(connection, "BEGIN IMMEDIATE");
    let mut answers: Vec<Answer> = Vec::with_capacity(batch.len());
    for call in batch {
        let began = &mut began;
        answers.push(match call {
            Call::Read(name, reply) => {
                answer(reply, within(began, connection, || read(connection, &name)))
            }
            Call::Put(name, data, reply) => answer(
                reply,
                within(began, connection, || put(connection, &name, &data)),
            ),
            Call::PutIfAbsent(name, data, reply) => answer(
                reply,
                within(began, connection, || {
                    put_if_absent(connection, &name, &data)
                }),
            ),
            Call::PutIfMatch(name, data, version, reply) => answer(
                reply,
                within(began, connection, || {
                    put_if_match(connection, &name, &data, &version)
                }),
            ),
            Call::List(reply) => {
                let listed = within(began, connection, || list(connection));
                Box::new(move |committed: &Result<(), StoreError>| {
                    let _ = reply.send(committed.clone().and(listed));
                })
            }
            Call::Flush(reply) => answer(reply, Ok(())),
            Call::Delete(name, reply) => {
                let done = within(began, connection, || delete(connection, &name));
                match reply {
                    Some(reply) => answer(reply, done),
                    None => Box::new(|_| {}),
                }
            }
        });
    }
    let committed = began.and_then(|()| run(connection, "COMMIT"));
    if committed.is_err() && !connection.is_autocommit() {
        let _ = run(connection, "ROLLBACK");
    }
    for answer in answers {
        answer(&committed);
    }
}

/// Runs `work` inside the batch's transaction (`began`). Once an error has rolled the
/// transaction back (SQLite does on a full disk or an I/O error), `began` holds it, and
/// the rest of the batch fails with it rather than run, and commit, on its own.
fn within<T>(
    began: &mut Result<(), StoreError>,
    connection: &Connection,
    work: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    began.clone()?;
    let done = work();
    if let Err(err) = &done
        && connection.is_autocommit()
    {
        *began = Err(err.clone());
    }
    done
}

/// Whether `text` is a SHA-256 digest in hex: how the host's stores name objects.
pub fn is_digest(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Moves the objects a [`FolderStore`](super::FolderStore) left in `dir` (a file per
/// name) into the database, then deletes them: an upgraded host finds what the one
/// before it kept, and nothing is in two places.
fn import_files(
    connection: &Connection,
    dir: &Path,
    is_object: fn(&str) -> bool,
) -> Result<(), StoreError> {
    let Ok(files) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    let mut found = Vec::new();
    for file in files.flatten() {
        let Some(name) = file.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !is_object(&name) || !file.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        match std::fs::read(file.path()) {
            Ok(data) => found.push((name, data, file.path())),
            // Left where it is, as an older version would have: not a reason to refuse
            // to start.
            Err(err) => {
                tracing::warn!(file = %file.path().display(), error = %err, "a file an older version kept could not be read and was left in place")
            }
        }
    }
    if found.is_empty() {
        return Ok(());
    }
    // One transaction, fsync'd whatever the store's durability: the files go only once
    // their rows would survive a power cut, as the files did.
    run(connection, "PRAGMA synchronous = FULL")?;
    run(connection, "BEGIN IMMEDIATE")?;
    for (name, data, _) in &found {
        if let Err(err) = put_if_absent(connection, name, data) {
            let _ = run(connection, "ROLLBACK");
            return Err(err);
        }
    }
    if let Err(err) = run(connection, "COMMIT") {
        let _ = run(connection, "ROLLBACK");
        return Err(err);
    }
    for (_, _, path) in &found {
        let _ = std::fs::remove_file(path);
    }
    let _ = sfn_wasm_engine::host_folder::sync_dir(dir);
    Ok(())
}

/// Runs a statement of no parameters and no rows, prepared once per connection.
fn run(connection: &Connection, statement: &str) -> Result<(), StoreError> {
    connection
        .prepare_cached(statement)
        .and_then(|mut statement| statement.raw_execute())
        .map(drop)
        .map_err(sql)
}

fn read(connection: &Connection, name: &str) -> Result<Option<Versioned>, StoreError> {
    connection
        .prepare_cached("SELECT data, version FROM objects WHERE name = ?1")
        .and_then(|mut statement| {
            statement
                .query_row(params![name], |row| {
                    Ok(Versioned {
                        data: row.get(0)?,
                        version: Version(row.get(1)?),
                    })
                })
                .optional()
        })
        .map_err(sql)
}

fn list(connection: &Connection) -> Result<Objects, StoreError> {
    let mut statement = connection
        .prepare_cached("SELECT name, data FROM objects ORDER BY name")
        .map_err(sql)?;
    let rows = statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .map_err(sql)?;
    // A row that is not a name and bytes (written by another program) is skipped, not
    // a reason to list nothing.
    Ok(rows
        .filter_map(|row| {
            row.inspect_err(|err| tracing::warn!(error = %err, "a row of the store that is not a name and bytes was skipped"))
                .ok()
        })
        .collect())
}

fn put(connection: &Connection, name: &str, data: &[u8]) -> Result<(), StoreError> {
    connection
        .prepare_cached("INSERT OR REPLACE INTO objects (name, data, version) VALUES (?1, ?2, ?3)")
        .and_then(|mut statement| statement.execute(params![name, data, version_of(data).0]))
        .map(drop)
        .map_err(sql)
}

fn put_if_absent(connection: &Connection, name: &str, data: &[u8]) -> Result<Claimed, StoreError> {
    let version = version_of(data);
    let inserted = connection
        .prepare_cached("INSERT OR IGNORE INTO objects (name, data, version) VALUES (?1, ?2, ?3)")
        .and_then(|mut statement| statement.execute(params![name, data, version.0]))
        .map_err(sql)?;
    Ok(if inserted == 1 {
        Claimed::Yes(version)
    } else {
        Claimed::AlreadyTaken
    })
}

fn put_if_match(
    connection: &Connection,
    name: &str,
    data: &[u8],
    version: &Version,
) -> Result<Claimed, StoreError> {
    let new = version_of(data);
    let replaced = connection
        .prepare_cached(
            "UPDATE objects SET data = ?2, version = ?3 WHERE name = ?1 AND version = ?4",
        )
        .and_then(|mut statement| statement.execute(params![name, data, new.0, version.0]))
        .map_err(sql)?;
    Ok(if replaced == 1 {
        Claimed::Yes(new)
    } else {
        Claimed::AlreadyTaken
    })
}

fn delete(connection: &Connection, name: &str) -> Result<(), StoreError> {
    connection
        .prepare_cached("DELETE FROM objects WHERE name = ?1")
        .and_then(|mut statement| statement.execute(params![name]))
        .map(drop)
        .map_err(sql)
}

#[async_trait]
impl Store for JournalStore {
    async fn put(&self, name: &str, data: &[u8]) -> Result<(), StoreError> {
        self.ask(|reply| Call::Put(name.to_owned(), data.to_vec(), reply))
            .await
    }

    async fn read(&self, name: &str) -> Result<Option<Versioned>, StoreError> {
        let (reply, result) = oneshot::channel();
        self.send(Call::Read(name.to_owned(), reply))?;
        result.await.map_err(stopped)?
    }

    async fn put_if_absent(&self, name: &str, data: &[u8]) -> Result<Claimed, StoreError> {
        self.ask(|reply| Call::PutIfAbsent(name.to_owned(), data.to_vec(), reply))
            .await
    }

    async fn put_if_match(
        &self,
        name: &str,
        data: &[u8],
        version: &Version,
    ) -> Result<Claimed, StoreError> {
        self.ask(|reply| Call::PutIfMatch(name.to_owned(), data.to_vec(), version.clone(), reply))
            .await
    }

    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        self.ask(|reply| Call::Delete(name.to_owned(), Some(reply)))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn objects_are_rows_written_whole_in_a_private_database() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("store");
        let store = JournalStore::open(&folder, Durability::PowerLoss, Legacy::Leave).unwrap();
        let version = super::super::contract::writes_whole_and_claims(&store).await;
        assert_eq!(
            store
                .put_if_match("b", b"y", &Version("other".into()))
                .await
                .unwrap(),
            Claimed::AlreadyTaken
        );
        assert!(matches!(
            store.put_if_match("b", b"y", &version).await.unwrap(),
            Claimed::Yes(_)
        ));
        store.delete("a").await.unwrap();
        store.delete("a").await.unwrap();
        store.delete_later("b");
        assert_eq!(
            store.list().unwrap(),
            Vec::new(),
            "a later list sees the delete"
        );
        store.put("c", b"x").await.unwrap();
        store.delete_later("c");
        store.flush().await.unwrap();
        let other = Connection::open(folder.join(DATABASE)).unwrap();
        let rows: i64 = other
            .query_row("SELECT count(*) FROM objects", [], |row| row.get(0))
            .unwrap();
        assert_eq!(rows, 0, "a flush commits the deletes waiting for a write");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&folder), 0o700);
            assert_eq!(mode(&folder.join(DATABASE)), 0o600);
            assert_eq!(mode(&folder.join(format!("{DATABASE}-wal"))), 0o600);
        }
    }

    /// Writers that arrive together share commits, and each still gets its own answer:
    /// of sixteen that read one version, one replaces it, beside sixteen plain writes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn writers_share_commits_and_a_conditional_replace_is_won_once() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(JournalStore::open(dir.path(), Durability::PowerLoss, Legacy::Leave).unwrap());
        let Claimed::Yes(first) = store.put_if_absent("k", b"old").await.unwrap() else {
            panic!("k was free");
        };
        let puts: Vec<_> = (0..16)
            .map(|n| {
                let store = store.clone();
                tokio::spawn(async move { store.put(&format!("n{n}"), b"x").await.unwrap() })
            })
            .collect();
        super::super::contract::one_of_sixteen_replaces(store.clone(), &first).await;
        for put in puts {
            put.await.unwrap();
        }
        assert_eq!(store.list().unwrap().len(), 17);
    }

    /// What a store says it wrote is there for the next process, in either durability
    /// (a process crash loses nothing the kernel was handed).
    #[tokio::test]
    async fn writes_outlive_the_store_in_both_durabilities() {
        for durability in [Durability::PowerLoss, Durability::ProcessCrash] {
            let dir = tempfile::tempdir().unwrap();
            let store = JournalStore::open(dir.path(), durability, Legacy::Leave).unwrap();
            store.put("a", b"kept").await.unwrap();
            // Not dropped: as if the process died here.
            std::mem::forget(store);
            let again = JournalStore::open(dir.path(), durability, Legacy::Leave).unwrap();
            assert_eq!(again.get("a").await.unwrap().as_deref(), Some(&b"kept"[..]));
        }
    }

    /// An upgraded host finds the objects a folder store left as files; what is not one
    /// of this store's objects stays a file.
    #[tokio::test]
    async fn objects_left_as_files_are_moved_in_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let digest = "ab".repeat(32);
        let names = [
            format!("answer-{digest}"),
            format!("answer-{}", "cd".repeat(32)),
        ];
        for name in &names {
            std::fs::write(dir.path().join(name), name.as_bytes()).unwrap();
        }
        // Not this store's names: another store's objects in a shared folder (a
        // checkpoint, an outbox entry), keys, temporary files, what was set aside.
        let others = [
            digest.clone(),
            format!("{digest}.json"),
            ".key".to_owned(),
            format!("answer-{digest}.refused"),
            format!(".answer-{digest}.1.2.tmp"),
        ];
        for name in &others {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let is_record = |name: &str| name.strip_prefix("answer-").is_some_and(is_digest);
        let store =
            JournalStore::open(dir.path(), Durability::PowerLoss, Legacy::Import(is_record))
                .unwrap();
        for name in &names {
            assert_eq!(
                store.get(name).await.unwrap().as_deref(),
                Some(name.as_bytes())
            );
            assert!(!dir.path().join(name).exists(), "{name} moved, not copied");
        }
        for name in &others {
            assert!(dir.path().join(name).exists(), "{name} left alone");
            assert_eq!(store.get(name).await.unwrap(), None);
        }
    }

    /// Another program's file where the database goes is an error that names it, not
    /// a panic or a silent new store.
    #[test]
    fn a_file_that_is_not_a_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(DATABASE),
            b"not a database, but long enough to be read as a header",
        )
        .unwrap();
        let err = JournalStore::open(dir.path(), Durability::PowerLoss, Legacy::Leave)
            .err()
            .expect("refused");
        assert!(err.message.contains("not a database"), "{err}");
    }
}
