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
//! caller's thread, on a connection of its own ([`JournalStore`]). A store whose owner
//! writes every name it reads through it may keep its names in memory
//! ([`Keeping::names_in_memory`]): a read of a name it does not hold then answers at
//! once, without SQLite.
//!
//! Rows do not stay for ever: a store opened with an [`Expiry`] notes when each row it
//! writes expires (`expires_ms`, indexed; [`NEVER`] for a row that does not), and its
//! writer looks for expired rows after a commit: after the first batch it commits, then
//! every [`SWEEP_EVERY`], or after the next batch again while more wait. A look deletes
//! at most [`SWEEP_ROWS`] expired rows, in a transaction of its own, and first notes the
//! expiry of as many rows that have none yet (`NULL`): rows of a database an older
//! version made, which gains the column when it opens, or that an older version wrote
//! since. An older version that changes a row's bytes in place leaves its expiry to be
//! read again (a trigger sets it to `NULL`).
//!
//! The folder is checked as [`FolderStore`](super::FolderStore)'s is (owned by the
//! host's user, writable by nobody else); the database is created private (0600), and
//! SQLite gives its `-wal` and `-shm` files the same mode. Several processes may open
//! one database (SQLite locks it); a call that finds it locked waits up to
//! [`BUSY_TIMEOUT`].

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

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

/// When an object expires, read from its bytes by the format of whoever stores it: ms
/// since the Unix epoch after which nobody will read it, or `None` to keep it. A store
/// opened with one deletes what has expired ([`open`]).
pub type Expiry = fn(&[u8]) -> Option<u64>;

/// What a journal does with its rows besides keeping them ([`open`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Keeping {
    /// Rows expire as this reads them (see the module docs); `None`: kept until deleted.
    pub expiry: Option<Expiry>,
    /// The names the journal holds are kept in memory (16 bytes of a digest each, 20 to
    /// 40 bytes a row with the set's spare room), so that a read of a name it does not
    /// hold answers without SQLite: only for an owner that writes every name it reads
    /// through this store (another store on the same database may write other names).
    /// A folder's idempotency answers are such: an activity's names are its own, and
    /// only the holder of its claims lock writes them.
    pub names_in_memory: bool,
}

/// How often the writer looks for expired rows, when the last look found them all.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// What `expires_ms` holds for a row that never expires: `NULL` means "not read yet".
pub const NEVER: i64 = i64::MAX;

/// The most expired rows one look deletes (one transaction): a bound on how long the
/// writer is away from the batches waiting for it (~17 µs of CPU a row, on random pages
/// of the table: 256 rows keep it away ~5 ms with power-loss,
/// `scripts/bench-expiry-sweep.py`).
pub const SWEEP_ROWS: usize = 256;

/// The store in `dir` (created, private, if missing): objects as rows of one SQLite
/// database, written in group commits, as durable as `durability` says once a write
/// returns; its rows kept as `keeping` says (with an expiry, deleted once expired; see
/// the module docs).
///
/// # Errors
/// [`StoreError`] when the folder cannot be created or is not private, or the database
/// cannot be opened or brought to this version's form (another program's file, a full
/// disk).
pub fn open(
    dir: &Path,
    durability: Durability,
    legacy: Legacy,
    keeping: Keeping,
) -> Result<JournalStore, StoreError> {
    open_private_folder(dir)?;
    let path = dir.join(DATABASE);
    create_private(&path).map_err(|err| StoreError::io(&err))?;
    let connection = connect(&path, durability)?;
    let mut journal = Journal {
        connection,
        expiry: keeping.expiry,
        next_sweep: Instant::now(),
        names: None,
        deleted: Vec::new(),
    };
    journal.add_expiries()?;
    if let Legacy::Import(is_object) = legacy {
        import_files(&journal, dir, is_object)?;
        run(&journal.connection, synchronous(durability))?;
    }
    // Every name there now; from here on, the writer adds and removes them.
    let names = if keeping.names_in_memory {
        Some(Arc::new(Names(Mutex::new(name_keys(&journal.connection)?))))
    } else {
        None
    };
    journal.names.clone_from(&names);
    let reader = connect(&path, durability)?;
    run(&reader, "PRAGMA query_only = ON")?;
    Ok(JournalStore {
        writes: GroupCommitStore::spawn("store-writer", journal)?,
        reader: Mutex::new(reader),
        names,
    })
}

/// The names a journal holds ([`Keeping::names_in_memory`]), by [`name_key`]. A name is
/// added before the write that stores it and removed only once the delete that removes
/// it is committed, so a name whose row a reader could find is always here.
struct Names(Mutex<HashSet<u128>>);

impl Names {
    fn held(&self) -> std::sync::MutexGuard<'_, HashSet<u128>> {
        // Each change under the lock is one set operation: a panic leaves it whole.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The key of every name in the database, read a row at a time (a year of answers is
/// millions of names: their keys, not the names, are held).
fn name_keys(connection: &Connection) -> Result<HashSet<u128>, StoreError> {
    let mut statement = connection
        .prepare("SELECT name FROM objects")
        .map_err(sql)?;
    let mut rows = statement.query([]).map_err(sql)?;
    let mut keys = HashSet::new();
    while let Some(row) = rows.next().map_err(sql)? {
        // A name that is not text (another program's row) is never one read here.
        if let Ok(rusqlite::types::ValueRef::Text(name)) = row.get_ref(0)
            && let Ok(name) = std::str::from_utf8(name)
        {
            keys.insert(name_key(name));
        }
    }
    Ok(keys)
}

/// A name's key in [`Names`]: 128 bits of its SHA-256, so that two names share one
/// (and a delete of one hides the other) with odds of 2^-128 a pair.
fn name_key(name: &str) -> u128 {
    let digest = Sha256::digest(name.as_bytes());
    let mut key = [0; 16];
    key.copy_from_slice(&digest[..16]);
    u128::from_le_bytes(key)
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
    names: Option<Arc<Names>>,
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
        // A name it does not hold: nothing to read (a new key's lookup, most tasks').
        if let Some(names) = &self.names
            && !names.held().contains(&name_key(name))
        {
            return Ok(None);
        }
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
                 version TEXT NOT NULL,
                 expires_ms INTEGER
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
struct Journal {
    connection: Connection,
    /// When a row expires, if rows do.
    expiry: Option<Expiry>,
    /// When the writer next looks for expired rows.
    next_sweep: Instant,
    /// The names held, when kept in memory.
    names: Option<Arc<Names>>,
    /// Keys of the names the batch deletes: removed from `names` once it commits.
    deleted: Vec<u128>,
}

impl Journal {
    /// Notes that the batch writes `name`: held from now on (before the write, so that
    /// a reader that could find its row finds the name too), and no longer deleted.
    fn writing(&mut self, name: &str) {
        if let Some(names) = &self.names {
            let key = name_key(name);
            self.deleted.retain(|deleted| *deleted != key);
            names.held().insert(key);
        }
    }

    /// Notes that the batch deletes `name`: removed from the names held if it commits.
    fn deleting(&mut self, name: &str) {
        if self.names.is_some() {
            self.deleted.push(name_key(name));
        }
    }

    /// When the row holding `data` expires, as the column keeps it: [`NEVER`] when the
    /// expiry says it does not, `NULL` in a store without one.
    fn expires(&self, data: &[u8]) -> Option<i64> {
        let expiry = self.expiry?;
        Some(expiry(data).map_or(NEVER, |at| i64::try_from(at).unwrap_or(NEVER)))
    }

    /// Brings a database an older version made to this form: the `expires_ms` column
    /// (`NULL` until a look reads each row's expiry, see [`Journal::look`]), its index,
    /// and the trigger that has a row whose bytes an older version changes in place read
    /// again. Schema changes only, in one short transaction, and only when one is
    /// missing: of two processes opening it at once, one makes them.
    fn add_expiries(&self) -> Result<(), StoreError> {
        let connection = &self.connection;
        if self.has_expiries()? {
            return Ok(());
        }
        run(connection, "BEGIN IMMEDIATE")?;
        let done = self.has_expiries().and_then(|has| {
            if has {
                return Ok(());
            }
            if !self.has_column()? {
                run(
                    connection,
                    "ALTER TABLE objects ADD COLUMN expires_ms INTEGER",
                )?;
            }
            run(
                connection,
                "CREATE INDEX IF NOT EXISTS objects_by_expiry ON objects (expires_ms)",
            )?;
            run(
                connection,
                "CREATE TRIGGER IF NOT EXISTS objects_expiry_read_again \
                 AFTER UPDATE OF data ON objects WHEN NEW.expires_ms IS OLD.expires_ms \
                 BEGIN UPDATE objects SET expires_ms = NULL WHERE name = NEW.name; END",
            )
        });
        match done.and_then(|()| run(connection, "COMMIT")) {
            Ok(()) => Ok(()),
            Err(err) => {
                let _ = run(connection, "ROLLBACK");
                Err(err)
            }
        }
    }

    /// Whether the column, its index and the trigger are there.
    fn has_expiries(&self) -> Result<bool, StoreError> {
        let made: i64 = self
            .connection
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name IN \
                 ('objects_by_expiry', 'objects_expiry_read_again')",
                [],
                |row| row.get(0),
            )
            .map_err(sql)?;
        Ok(made == 2 && self.has_column()?)
    }

    fn has_column(&self) -> Result<bool, StoreError> {
        let found: i64 = self
            .connection
            .query_row(
                "SELECT count(*) FROM pragma_table_info('objects') WHERE name = 'expires_ms'",
                [],
                |row| row.get(0),
            )
            .map_err(sql)?;
        Ok(found > 0)
    }

    /// One look, in a transaction of its own: notes the expiry of up to [`SWEEP_ROWS`]
    /// rows that have none yet, then deletes up to [`SWEEP_ROWS`] rows that expired
    /// before `now_ms`. Returns whether either found its bound (more may wait).
    fn look(&self, now_ms: i64) -> Result<bool, StoreError> {
        let connection = &self.connection;
        run(connection, "BEGIN IMMEDIATE")?;
        let looked = self.read_expiries().and_then(|read| {
            let deleted = self.delete_expired(now_ms)?;
            Ok((read == SWEEP_ROWS || deleted.len() == SWEEP_ROWS, deleted))
        });
        match looked.and_then(|looked| run(connection, "COMMIT").map(|()| looked)) {
            Ok((more, deleted)) => {
                if let Some(names) = &self.names {
                    let mut held = names.held();
                    for name in &deleted {
                        held.remove(&name_key(name));
                    }
                }
                Ok(more)
            }
            Err(err) => {
                if !connection.is_autocommit() {
                    let _ = run(connection, "ROLLBACK");
                }
                Err(err)
            }
        }
    }

    /// Notes the expiry of up to [`SWEEP_ROWS`] rows whose `expires_ms` is `NULL`;
    /// returns how many.
    fn read_expiries(&self) -> Result<usize, StoreError> {
        let connection = &self.connection;
        let unread: Vec<(String, Vec<u8>)> = connection
            .prepare_cached("SELECT name, data FROM objects WHERE expires_ms IS NULL LIMIT ?1")
            .and_then(|mut statement| {
                statement
                    .query_map(
                        params![i64::try_from(SWEEP_ROWS).unwrap_or(i64::MAX)],
                        |row| Ok((row.get(0)?, row.get(1)?)),
                    )?
                    .collect()
            })
            .map_err(sql)?;
        for (name, data) in &unread {
            connection
                .prepare_cached("UPDATE objects SET expires_ms = ?2 WHERE name = ?1")
                .and_then(|mut statement| statement.execute(params![name, self.expires(data)]))
                .map_err(sql)?;
        }
        Ok(unread.len())
    }

    /// Deletes up to [`SWEEP_ROWS`] rows that expired before `now_ms`; returns their
    /// names.
    fn delete_expired(&self, now_ms: i64) -> Result<Vec<String>, StoreError> {
        self.connection
            .prepare_cached(
                "DELETE FROM objects WHERE name IN (SELECT name FROM objects \
                 WHERE expires_ms < ?1 ORDER BY expires_ms LIMIT ?2) RETURNING name",
            )
            .and_then(|mut statement| {
                statement
                    .query_map(
                        params![now_ms, i64::try_from(SWEEP_ROWS).unwrap_or(i64::MAX)],
                        |row| row.get(0),
                    )?
                    .collect()
            })
            .map_err(sql)
    }
}

impl Backend for Journal {
    fn begin(&mut self) -> Result<(), StoreError> {
        // What an earlier batch deleted but did not commit stays held.
        self.deleted.clear();
        run(&self.connection, "BEGIN IMMEDIATE")
    }

    fn undone(&self) -> bool {
        self.connection.is_autocommit()
    }

    fn read(&mut self, name: &str) -> Result<Option<Versioned>, StoreError> {
        read(&self.connection, name)
    }

    fn list(&mut self) -> Result<Objects, StoreError> {
        list(&self.connection)
    }

    fn put(&mut self, name: &str, data: &[u8]) -> Result<(), StoreError> {
        self.writing(name);
        put(&self.connection, name, data, self.expires(data))
    }

    fn put_if_absent(&mut self, name: &str, data: &[u8]) -> Result<Claimed, StoreError> {
        self.writing(name);
        put_if_absent(&self.connection, name, data, self.expires(data))
    }

    fn put_if_match(
        &mut self,
        name: &str,
        data: &[u8],
        version: &Version,
    ) -> Result<Claimed, StoreError> {
        self.writing(name);
        put_if_match(&self.connection, name, data, self.expires(data), version)
    }

    fn delete(&mut self, name: &str) -> Result<(), StoreError> {
        delete(&self.connection, name)?;
        self.deleting(name);
        Ok(())
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        let committed = run(&self.connection, "COMMIT");
        if committed.is_err() && !self.connection.is_autocommit() {
            let _ = run(&self.connection, "ROLLBACK");
        }
        let deleted = std::mem::take(&mut self.deleted);
        if committed.is_ok()
            && let Some(names) = &self.names
        {
            let mut held = names.held();
            for key in &deleted {
                held.remove(key);
            }
        }
        committed
    }

    /// Looks for expired rows ([`Journal::look`]) when a look is due: every
    /// [`SWEEP_EVERY`], or after the next batch again while a look finds its bound (more
    /// may wait). A failed look is logged and tried at the next; it never fails a write.
    fn tidy(&mut self) {
        let now = Instant::now();
        if self.expiry.is_none() || now < self.next_sweep {
            return;
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        self.next_sweep = match self.look(now_ms) {
            Ok(true) => now,
            Ok(false) => now + SWEEP_EVERY,
            Err(err) => {
                tracing::warn!(error = %err, "expired rows of a folder store could not be deleted; trying again later");
                now + SWEEP_EVERY
            }
        };
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
    journal: &Journal,
    dir: &Path,
    is_object: fn(&str) -> bool,
) -> Result<(), StoreError> {
    let connection = &journal.connection;
    let found = legacy_files(dir, is_object);
    if found.is_empty() {
        return Ok(());
    }
    // One transaction, fsync'd whatever the store's durability: the files go only once
    // their rows would survive a power cut, as the files did.
    run(connection, "PRAGMA synchronous = FULL")?;
    run(connection, "BEGIN IMMEDIATE")?;
    for (name, data, _) in &found {
        if let Err(err) = put_if_absent(connection, name, data, journal.expires(data)) {
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

fn put(
    connection: &Connection,
    name: &str,
    data: &[u8],
    expires: Option<i64>,
) -> Result<(), StoreError> {
    connection
        .prepare_cached(
            "INSERT OR REPLACE INTO objects (name, data, version, expires_ms) \
             VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut statement| {
            statement.execute(params![name, data, version_of(data).0, expires])
        })
        .map(drop)
        .map_err(sql)
}

fn put_if_absent(
    connection: &Connection,
    name: &str,
    data: &[u8],
    expires: Option<i64>,
) -> Result<Claimed, StoreError> {
    let version = version_of(data);
    let inserted = connection
        .prepare_cached(
            "INSERT OR IGNORE INTO objects (name, data, version, expires_ms) \
             VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut statement| statement.execute(params![name, data, version.0, expires]))
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
    expires: Option<i64>,
    version: &Version,
) -> Result<Claimed, StoreError> {
    let new = version_of(data);
    let replaced = connection
        .prepare_cached(
            "UPDATE objects SET data = ?2, version = ?3, expires_ms = ?5 \
             WHERE name = ?1 AND version = ?4",
        )
        .and_then(|mut statement| statement.execute(params![name, data, new.0, version.0, expires]))
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
mod tests;
