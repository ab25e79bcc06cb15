//! A store in one SQLite database in a folder (WAL mode), written in group commits
//! ([`group`](super::group)): a batch is one transaction, so N records arriving
//! together cost one `fsync` of the log, not 2 N of files and folders. Idempotency
//! answers on a folder live here (and the claims an older version wrote): a file per
//! record cost a new inode per write and the folder's lock per rename, which measured at
//! several times a task's own CPU (`BENCHMARKS.md`, issue 37); and unlike the outbox's
//! short-lived entries ([`open_log`](super::open_log)) they stay, so an index on disk,
//! not in memory, suits them.
//!
//! A read goes to the writer only when it is at work anyway; else it runs on the
//! caller's thread, on a connection of its own ([`JournalStore`]).
//!
//! The folder is checked as [`FolderStore`](super::FolderStore)'s is (owned by the
//! host's user, writable by nobody else); the database is created private (0600), and
//! SQLite gives its `-wal` and `-shm` files the same mode. Several processes may open
//! one database (SQLite locks it); a call that finds it locked waits up to
//! [`BUSY_TIMEOUT`].

use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::folder::{legacy_files, open_private_folder};
use super::group::{Backend, GroupCommitStore, Objects};
use super::{Claimed, Durability, Legacy, Store, StoreError, Version, Versioned};
use crate::ids::sha256_hex;

/// The database's file name in its folder.
pub const DATABASE: &str = "store.sqlite";

/// How long a call waits for another connection's lock on the database (another
/// process, or another store on the same folder): under the outbox's 2 s write
/// deadline, so that contention fails a write rather than marks the volume hung.
const BUSY_TIMEOUT: Duration = Duration::from_secs(1);

/// The store in `dir` (created, private, if missing): objects as rows of one SQLite
/// database, written in group commits, as durable as `durability` says once a write
/// returns.
///
/// # Errors
/// [`StoreError`] when the folder cannot be created or is not private, or the database
/// cannot be opened (another program's file, a full disk).
pub fn open(
    dir: &Path,
    durability: Durability,
    legacy: Legacy,
) -> Result<JournalStore, StoreError> {
    open_private_folder(dir)?;
    let path = dir.join(DATABASE);
    create_private(&path).map_err(|err| StoreError::io(&err))?;
    let connection = connect(&path, durability)?;
    if let Legacy::Import(is_object) = legacy {
        import_files(&connection, dir, is_object)?;
        run(&connection, synchronous(durability))?;
    }
    let reader = connect(&path, durability)?;
    run(&reader, "PRAGMA query_only = ON")?;
    Ok(JournalStore {
        writes: GroupCommitStore::spawn("store-writer", Journal(connection))?,
        reader: Mutex::new(reader),
    })
}

/// A journal's handle: writes go to its writer thread in group commits. A read while
/// the writer sleeps runs on the caller's thread, on a connection of its own: a few µs
/// of SQLite over pages the kernel has cached, where a hand-off to the writer would cost
/// a wake-up each way (`BENCHMARKS.md`, issue 37); in WAL mode it sees every commit that
/// returned and never waits for one in progress. A read while the writer is at work
/// joins its next batch.
pub struct JournalStore {
    writes: GroupCommitStore,
    reader: Mutex<Connection>,
}

impl JournalStore {
    /// The group-committed writes, for what only they offer (a flush, deletes nobody
    /// waits for).
    pub fn writes(&self) -> &GroupCommitStore {
        &self.writes
    }
}

#[async_trait]
impl Store for JournalStore {
    async fn put(&self, name: &str, data: &[u8]) -> Result<(), StoreError> {
        self.writes.put(name, data).await
    }

    async fn read(&self, name: &str) -> Result<Option<Versioned>, StoreError> {
        // A writer at work anyway takes the read into its next batch: one transaction
        // on its own warm connection serves the calls of tasks that arrive together,
        // where reads of their own would each find their connection's pages made stale
        // by the commits between them (at 4 workers, ~40 µs a task more on the runtime
        // thread: `BENCHMARKS.md`, issue 37, seventh look).
        if self.writes.busy() {
            return self.writes.read(name).await;
        }
        read(
            &self.reader.lock().unwrap_or_else(PoisonError::into_inner),
            name,
        )
    }

    async fn put_if_absent(&self, name: &str, data: &[u8]) -> Result<Claimed, StoreError> {
        self.writes.put_if_absent(name, data).await
    }

    async fn put_if_match(
        &self,
        name: &str,
        data: &[u8],
        version: &Version,
    ) -> Result<Claimed, StoreError> {
        self.writes.put_if_match(name, data, version).await
    }

    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        self.writes.delete(name).await
    }
}

/// The rows named as `is_object` says in the database an older version left in `dir`
/// (none when there is no database), and a way to delete them once they are kept
/// elsewhere: how [`open_log`](super::open_log) takes over what the journal held.
///
/// # Errors
/// [`StoreError`] when the database cannot be opened or read.
pub(super) fn export(
    dir: &Path,
    is_object: fn(&str) -> bool,
) -> Result<Option<(Objects, Exported)>, StoreError> {
    let path = dir.join(DATABASE);
    if !path.exists() {
        return Ok(None);
    }
    let connection = connect(&path, Durability::PowerLoss)?;
    // Names first: another store's rows (a folder idempotency store sharing the folder)
    // are never read whole.
    let mut objects = Objects::new();
    for name in names(&connection)?
        .into_iter()
        .filter(|name| is_object(name))
    {
        if let Some(object) = read(&connection, &name)? {
            objects.push((name, object.data));
        }
    }
    if objects.is_empty() {
        return Ok(None);
    }
    Ok(Some((objects, Exported(connection))))
}

/// The database [`export`] read, to delete what it exported.
pub(super) struct Exported(Connection);

impl Exported {
    /// Deletes `names` in one transaction, fsync'd.
    ///
    /// # Errors
    /// [`StoreError`] when the database cannot be written.
    pub(super) fn remove(self, names: &[String]) -> Result<(), StoreError> {
        let connection = &self.0;
        run(connection, "BEGIN IMMEDIATE")?;
        for name in names {
            if let Err(err) = delete(connection, name) {
                let _ = run(connection, "ROLLBACK");
                return Err(err);
            }
        }
        run(connection, "COMMIT").inspect_err(|_| {
            let _ = run(connection, "ROLLBACK");
        })
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

/// The database, as the writer thread drives it: a batch is one transaction.
struct Journal(Connection);

impl Backend for Journal {
    fn begin(&mut self) -> Result<(), StoreError> {
        run(&self.0, "BEGIN IMMEDIATE")
    }

    fn undone(&self) -> bool {
        self.0.is_autocommit()
    }

    fn read(&mut self, name: &str) -> Result<Option<Versioned>, StoreError> {
        read(&self.0, name)
    }

    fn list(&mut self) -> Result<Objects, StoreError> {
        list(&self.0)
    }

    fn put(&mut self, name: &str, data: &[u8]) -> Result<(), StoreError> {
        put(&self.0, name, data)
    }

    fn put_if_absent(&mut self, name: &str, data: &[u8]) -> Result<Claimed, StoreError> {
        put_if_absent(&self.0, name, data)
    }

    fn put_if_match(
        &mut self,
        name: &str,
        data: &[u8],
        version: &Version,
    ) -> Result<Claimed, StoreError> {
        put_if_match(&self.0, name, data, version)
    }

    fn delete(&mut self, name: &str) -> Result<(), StoreError> {
        delete(&self.0, name)
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        let committed = run(&self.0, "COMMIT");
        if committed.is_err() && !self.0.is_autocommit() {
            let _ = run(&self.0, "ROLLBACK");
        }
        committed
    }
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
    let found = legacy_files(dir, is_object);
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

fn names(connection: &Connection) -> Result<Vec<String>, StoreError> {
    let mut statement = connection
        .prepare_cached("SELECT name FROM objects")
        .map_err(sql)?;
    let rows = statement.query_map([], |row| row.get(0)).map_err(sql)?;
    Ok(rows.filter_map(Result::ok).collect())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use std::sync::Arc;

    #[tokio::test]
    async fn objects_are_rows_written_whole_in_a_private_database() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("store");
        let store = open(&folder, Durability::PowerLoss, Legacy::Leave).unwrap();
        let version = super::super::contract::writes_whole_and_claims(&store).await;
        super::super::contract::replaces_only_the_version_read(&store, &version).await;
        super::super::contract::deletes_ride_and_a_flush_commits_them(store.writes()).await;
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
        let store = Arc::new(open(dir.path(), Durability::PowerLoss, Legacy::Leave).unwrap());
        let writes = store.clone();
        super::super::contract::writers_share_commits(store, || {
            writes.writes().list().unwrap().len()
        })
        .await;
    }

    /// What a store says it wrote is there for the next process, in either durability
    /// (a process crash loses nothing the kernel was handed).
    #[tokio::test]
    async fn writes_outlive_the_store_in_both_durabilities() {
        for durability in [Durability::PowerLoss, Durability::ProcessCrash] {
            let dir = tempfile::tempdir().unwrap();
            let store = open(dir.path(), durability, Legacy::Leave).unwrap();
            store.put("a", b"kept").await.unwrap();
            // Not dropped: as if the process died here.
            std::mem::forget(store);
            let again = open(dir.path(), durability, Legacy::Leave).unwrap();
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
        let store = open(dir.path(), Durability::PowerLoss, Legacy::Import(is_record)).unwrap();
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
        let err = open(dir.path(), Durability::PowerLoss, Legacy::Leave)
            .err()
            .expect("refused");
        assert!(err.message.contains("not a database"), "{err}");
    }
}
