//! A store in one append-only file in a folder ([`LOG`]), written in group commits
//! ([`group`](super::group)): a batch is one `write` of framed records (and one
//! `fdatasync` for power-loss), and every object is held in memory besides, so a read
//! or a conditional write never touches the disk. For records that live briefly and are
//! few at a time, the outbox's entries (one per answer in flight, bounded by
//! `outbox_max_mb`): a SQLite commit of one such entry cost ten times an append
//! (`scripts/bench-disk-writes.py`, `BENCHMARKS.md`, issue 37).
//!
//! A record is `[length u32][CRC-32 u32][kind u8][version u64][name length u16][name]
//! [data]`, little-endian, the CRC over what follows it. At open the log is read whole:
//! a record cut short or whose CRC does not check out (a crash in the middle of a
//! write) ends it, and the file is cut there. Once the records no longer live
//! outweigh the live ones (and [`COMPACT_MIN`]), the live ones are written to a new
//! file that replaces the log (renamed over it).
//!
//! A compaction runs on the writer thread: calls wait for it to write the live records
//! (a few answers in flight, at most `outbox_max_mb`) and fsync them.
//!
//! The folder is checked as a [`FolderStore`](super::FolderStore)'s is (owned by the
//! host's user, writable by nobody else), the log is private (0600), and one process
//! holds the folder at a time (an `flock` on [`LOCK`]): two writers of one log would
//! each compact away the other's records.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sfn_wasm_engine::host_folder::sync_dir;

use super::folder::{hold, legacy_files, open_private_folder};
use super::group::{Backend, GroupCommitStore, Objects};
use super::journal;
use super::{Claimed, Durability, Legacy, StoreError, Version, Versioned};

/// The log's file name in its folder.
pub const LOG: &str = "store.log";

/// The file whose `flock` holds the folder for one process.
pub const LOCK: &str = "store.lock";

/// The first bytes of a log: another program's file is refused, not overwritten.
const MAGIC: &[u8; 8] = b"SFNLOG1\n";

/// What a record's length and CRC take before its body.
const FRAME: usize = 8;

/// A record's kind.
const PUT: u8 = 1;
const DELETE: u8 = 2;

/// Records no longer live are compacted away once they are this many bytes and more
/// than the live ones.
const COMPACT_MIN: u64 = 1 << 20;

/// The store in `dir` (created, private, if missing): objects in memory and in an
/// append-only log, written in group commits, as durable as `durability` says once a
/// write returns. With [`Legacy::Import`], the objects an older version left in the
/// folder (as files, or as rows of its SQLite database) are moved into the log.
///
/// # Errors
/// [`StoreError`] when the folder cannot be created or is not private, another process
/// holds it (`InUse`), the log is another program's file, or the disk refuses.
pub fn open(
    dir: &Path,
    durability: Durability,
    legacy: Legacy,
) -> Result<GroupCommitStore, StoreError> {
    open_private_folder(dir)?;
    let lock = hold(dir, LOCK)?;
    let path = dir.join(LOG);
    let _ = std::fs::remove_file(compacting(&path));
    let created = !path.exists();
    let mut file = private(OpenOptions::new().read(true).append(true).create(true))
        .open(&path)
        .map_err(|err| StoreError::io(&err))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|err| StoreError::io(&err))?;
    // Empty, a header cut short, or zeros (a power cut before the new log's first
    // fsync): a log with nothing in it yet.
    let unstarted =
        bytes.iter().all(|&b| b == 0) || (bytes.len() < MAGIC.len() && MAGIC.starts_with(&bytes));
    let parsed = if unstarted {
        file.set_len(0)
            .and_then(|()| file.write_all(MAGIC))
            .and_then(|()| file.sync_all())
            .map_err(|err| StoreError::io(&err))?;
        if created {
            sync_dir(dir).map_err(|err| StoreError::io(&err))?;
        }
        Parsed {
            objects: HashMap::new(),
            highest: 0,
            len: MAGIC.len() as u64,
        }
    } else {
        let parsed = parse(&bytes, &path)?;
        if parsed.len < bytes.len() as u64 {
            cut_damaged(&mut file, &path, &bytes, parsed.len)?;
        }
        parsed
    };
    let mut log = Log::new(dir, file, durability, parsed, lock);
    if let Legacy::Import(is_object) = legacy {
        log.import(is_object)?;
    }
    GroupCommitStore::spawn("store-writer", log)
}

/// Every object in the log at `path`, by name, as a new open would find them; for
/// tools and tests that look at a folder another process holds (nothing is locked or
/// written).
///
/// # Errors
/// [`StoreError`] when the file cannot be read or is not a log.
pub fn read_log(path: &Path) -> Result<Objects, StoreError> {
    let bytes = std::fs::read(path).map_err(|err| StoreError::io(&err))?;
    let mut objects: Vec<(String, Vec<u8>)> = parse(&bytes, path)?
        .objects
        .into_iter()
        .map(|(name, object)| (name, object.data))
        .collect();
    objects.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(objects)
}

/// Options that create a file private (0600).
fn private(options: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(options, 0o600);
    options
}

/// Where a compaction writes the new log before it replaces the old.
fn compacting(path: &Path) -> PathBuf {
    path.with_extension("log.compacting")
}

/// Cuts the log `file` (at `path`, holding `bytes`) to its first `len` bytes, its whole
/// records, after copying it whole to `store.log.damaged` (private) for a look: a record
/// cut short is a crash in the middle of a write, but a bad one followed by good ones is
/// the disk's damage, and what follows it is not thrown away unseen.
fn cut_damaged(file: &mut File, path: &Path, bytes: &[u8], len: u64) -> Result<(), StoreError> {
    let aside = path.with_extension("log.damaged");
    let _ = std::fs::remove_file(&aside);
    private(OpenOptions::new().write(true).create_new(true))
        .open(&aside)
        .and_then(|mut copy| copy.write_all(bytes).and_then(|()| copy.sync_all()))
        .map_err(|err| StoreError::io(&err))?;
    tracing::warn!(
        file = %path.display(),
        dropped_bytes = bytes.len() as u64 - len,
        copy = %aside.display(),
        "the store's log ends in a record cut short or damaged (a crash in the middle of a write, or the disk): it was cut there, after a copy of the whole"
    );
    file.set_len(len)
        .and_then(|()| file.sync_all())
        .map_err(|err| StoreError::io(&err))
}

/// An object as held in memory.
struct Object {
    data: Vec<u8>,
    version: u64,
}

/// The bytes a record of `name` and `data` takes in the log.
fn record_size(name: &str, data: &[u8]) -> u64 {
    (FRAME + 1 + 8 + 2 + name.len() + data.len()) as u64
}

/// Appends a record to `buf`.
fn encode(
    buf: &mut Vec<u8>,
    kind: u8,
    version: u64,
    name: &str,
    data: &[u8],
) -> Result<(), StoreError> {
    let too_large = |what: &str| StoreError {
        code: "EntityTooLarge".into(),
        message: format!("the object's {what} is too long for the store's log"),
    };
    let name_len = u16::try_from(name.len()).map_err(|_| too_large("name"))?;
    let body_len =
        u32::try_from(1 + 8 + 2 + name.len() + data.len()).map_err(|_| too_large("data"))?;
    let start = buf.len();
    buf.extend_from_slice(&body_len.to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.push(kind);
    buf.extend_from_slice(&version.to_le_bytes());
    buf.extend_from_slice(&name_len.to_le_bytes());
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(data);
    let crc = crc32fast::hash(&buf[start + FRAME..]);
    buf[start + 4..start + FRAME].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// What a log's bytes hold.
struct Parsed {
    objects: HashMap<String, Object>,
    /// The highest version of any record, deleted objects' included.
    highest: u64,
    /// The length of its whole records (what follows is a record cut short or damaged).
    len: u64,
}

/// The objects a log's `bytes` hold.
fn parse(bytes: &[u8], path: &Path) -> Result<Parsed, StoreError> {
    if !bytes.starts_with(MAGIC) {
        return Err(StoreError {
            code: "NotAStoreLog".into(),
            message: format!(
                "{} is not a store log of this host (another program's file?): move it away",
                path.display()
            ),
        });
    }
    let mut objects = HashMap::new();
    let mut highest = 0;
    let mut at = MAGIC.len();
    while let Some((kind, version, name, data, end)) = record(bytes, at) {
        highest = highest.max(version);
        match kind {
            PUT => {
                objects.insert(
                    name.to_owned(),
                    Object {
                        data: data.to_vec(),
                        version,
                    },
                );
            }
            _ => {
                objects.remove(name);
            }
        }
        at = end;
    }
    Ok(Parsed {
        objects,
        highest,
        len: at as u64,
    })
}

/// The record at `at` in `bytes`, and where it ends; `None` at the end, or where a
/// record is cut short, fails its CRC or makes no sense.
fn record(bytes: &[u8], at: usize) -> Option<(u8, u64, &str, &[u8], usize)> {
    let frame = bytes.get(at..at + FRAME)?;
    let body_len = u32::from_le_bytes(frame[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(frame[4..].try_into().ok()?);
    let body = bytes.get(at + FRAME..(at + FRAME).checked_add(body_len)?)?;
    if crc32fast::hash(body) != crc || body.len() < 11 {
        return None;
    }
    let kind = body[0];
    let version = u64::from_le_bytes(body[1..9].try_into().ok()?);
    let name_len = usize::from(u16::from_le_bytes(body[9..11].try_into().ok()?));
    let name = std::str::from_utf8(body.get(11..11 + name_len)?).ok()?;
    let data = &body[11 + name_len..];
    if kind != PUT && kind != DELETE {
        return None;
    }
    Some((kind, version, name, data, at + FRAME + body_len))
}

/// The log, as the writer thread drives it: a batch's records are staged in memory,
/// applied to the objects at once (undone if the write fails), and written in one go.
struct Log {
    dir: PathBuf,
    file: File,
    durability: Durability,
    objects: HashMap<String, Object>,
    /// The version the next write gets: past any in the log, and the clock at open.
    next_version: u64,
    /// The log's length: its whole records.
    len: u64,
    /// The bytes of the records that hold the objects as they are.
    live: u64,
    /// The batch's records, not yet written.
    batch: Vec<u8>,
    /// What the batch's changes replaced, in order, to undo them.
    undo: Vec<(String, Option<Object>)>,
    /// Why the log takes no more writes: a failed write it could not cut back off.
    broken: Option<StoreError>,
    /// A compaction's rename is not yet known to be on disk (the folder's fsync failed):
    /// the next fsync'd write syncs the folder first, or fails.
    dir_unsynced: bool,
    /// The folder's lock, held as long as the log is open.
    _lock: File,
}

impl Log {
    /// The log `file` in `dir`, holding what was `parsed` of it.
    fn new(dir: &Path, file: File, durability: Durability, parsed: Parsed, lock: File) -> Self {
        let Parsed {
            objects,
            highest,
            len,
        } = parsed;
        // Versions go on from the highest in the log, and from the clock: a version a
        // caller read is never given again, even for an object deleted and compacted
        // away before a restart.
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
            });
        let live = objects
            .iter()
            .map(|(name, o)| record_size(name, &o.data))
            .sum();
        Self {
            dir: dir.to_owned(),
            file,
            durability,
            objects,
            next_version: highest.saturating_add(1).max(clock),
            len,
            live,
            batch: Vec::new(),
            undo: Vec::new(),
            broken: None,
            dir_unsynced: false,
            _lock: lock,
        }
    }

    /// Moves what an older version left in the folder into the log, fsync'd whatever
    /// the store's durability (the old copies go only once the log would survive a
    /// power cut, as they did): objects kept as files, then rows of its SQLite
    /// database. A name the log already holds keeps the log's object.
    fn import(&mut self, is_object: fn(&str) -> bool) -> Result<(), StoreError> {
        let files = legacy_files(&self.dir, is_object);
        let rows = journal::export(&self.dir, is_object)?;
        let found = files.iter().map(|(name, data, _)| (name, data)).chain(
            rows.iter()
                .flat_map(|(rows, _)| rows.iter().map(|(n, d)| (n, d))),
        );
        self.begin()?;
        for (name, data) in found {
            if !self.objects.contains_key(name) {
                self.put(name, data)?;
            }
        }
        self.write_batch(true)?;
        for (_, _, path) in &files {
            let _ = std::fs::remove_file(path);
        }
        if !files.is_empty() {
            let _ = sync_dir(&self.dir);
        }
        if let Some((rows, exported)) = rows {
            let names: Vec<String> = rows.into_iter().map(|(name, _)| name).collect();
            // They are in the log, fsync'd. A start that finds them again tries the
            // removal again; an entry settled since would be moved in and sent again,
            // and found closed.
            if let Err(err) = exported.remove(&names) {
                tracing::warn!(folder = %self.dir.display(), error = %err, "the rows moved into the store's log could not be deleted from the folder's SQLite database; the next start tries again");
            }
        }
        Ok(())
    }

    /// Sets `name` to `data` in the batch.
    fn stage_put(&mut self, name: &str, data: &[u8]) -> Result<Version, StoreError> {
        let version = self.next_version;
        encode(&mut self.batch, PUT, version, name, data)?;
        self.next_version += 1;
        self.live += record_size(name, data);
        let before = self.objects.insert(
            name.to_owned(),
            Object {
                data: data.to_vec(),
                version,
            },
        );
        if let Some(old) = &before {
            self.live -= record_size(name, &old.data);
        }
        self.undo.push((name.to_owned(), before));
        Ok(shown(version))
    }

    /// Writes the batch (and fsyncs it when `sync`); on an error, cuts off what was
    /// written of it and undoes it in memory.
    fn write_batch(&mut self, sync: bool) -> Result<(), StoreError> {
        if let Some(err) = &self.broken {
            return Err(err.clone());
        }
        if self.batch.is_empty() {
            self.undo.clear();
            return Ok(());
        }
        let dir_synced = if sync && self.dir_unsynced {
            sync_dir(&self.dir).inspect(|()| self.dir_unsynced = false)
        } else {
            Ok(())
        };
        let written = dir_synced
            .and_then(|()| self.file.write_all(&self.batch))
            .and_then(|()| if sync { self.file.sync_data() } else { Ok(()) });
        match written {
            Ok(()) => {
                self.len += self.batch.len() as u64;
                self.batch.clear();
                self.undo.clear();
                self.compact_if_due();
                Ok(())
            }
            Err(err) => {
                let err = StoreError::io(&err);
                if let Err(cut) = self.file.set_len(self.len) {
                    self.broken = Some(StoreError {
                        code: err.code.clone(),
                        message: format!(
                            "a write failed ({err}) and its part could not be cut off ({cut}): restart the host"
                        ),
                    });
                }
                self.batch.clear();
                for (name, before) in self.undo.drain(..).rev() {
                    if let Some(now) = self.objects.remove(&name) {
                        self.live -= record_size(&name, &now.data);
                    }
                    if let Some(before) = before {
                        self.live += record_size(&name, &before.data);
                        self.objects.insert(name, before);
                    }
                }
                Err(err)
            }
        }
    }

    /// Compacts the log once the records no longer live are over [`COMPACT_MIN`] and
    /// the live ones; a compaction that fails leaves the log as it was (logged).
    fn compact_if_due(&mut self) {
        let dead = self.len.saturating_sub(MAGIC.len() as u64 + self.live);
        if dead < COMPACT_MIN.max(self.live) {
            return;
        }
        if let Err(err) = self.compact() {
            tracing::warn!(folder = %self.dir.display(), error = %err, "the store's log could not be compacted; it goes on growing until it can");
        }
    }

    /// Writes the live objects to a new log and renames it over the old one.
    fn compact(&mut self) -> std::io::Result<()> {
        let path = self.dir.join(LOG);
        let new = compacting(&path);
        let mut bytes = Vec::with_capacity(MAGIC.len() + self.live as usize);
        bytes.extend_from_slice(MAGIC);
        for (name, object) in &self.objects {
            encode(&mut bytes, PUT, object.version, name, &object.data)
                .map_err(|err| std::io::Error::other(err.message))?;
        }
        let _ = std::fs::remove_file(&new);
        let mut file =
            private(OpenOptions::new().read(true).append(true).create_new(true)).open(&new)?;
        // fsync'd whatever the durability: the old log held records already on disk,
        // which a rename over it must not put at risk again.
        let written = file
            .write_all(&bytes)
            .and_then(|()| file.sync_all())
            .and_then(|()| std::fs::rename(&new, &path));
        if let Err(err) = written {
            let _ = std::fs::remove_file(&new);
            return Err(err);
        }
        // From here the new file is the log.
        self.file = file;
        self.len = bytes.len() as u64;
        if let Err(err) = sync_dir(&self.dir) {
            self.dir_unsynced = true;
            tracing::warn!(folder = %self.dir.display(), error = %err, "the store's folder could not be fsync'd after a compaction: the next fsync'd write tries again first");
        }
        Ok(())
    }
}

/// A version as callers see it.
fn shown(version: u64) -> Version {
    Version(format!("{version:016x}"))
}

impl Backend for Log {
    fn begin(&mut self) -> Result<(), StoreError> {
        self.broken.clone().map_or(Ok(()), Err)
    }

    fn undone(&self) -> bool {
        false
    }

    fn read(&mut self, name: &str) -> Result<Option<Versioned>, StoreError> {
        Ok(self.objects.get(name).map(|object| Versioned {
            data: object.data.clone(),
            version: shown(object.version),
        }))
    }

    fn list(&mut self) -> Result<Objects, StoreError> {
        let mut objects: Objects = self
            .objects
            .iter()
            .map(|(name, object)| (name.clone(), object.data.clone()))
            .collect();
        objects.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(objects)
    }

    fn put(&mut self, name: &str, data: &[u8]) -> Result<(), StoreError> {
        self.stage_put(name, data).map(drop)
    }

    fn put_if_absent(&mut self, name: &str, data: &[u8]) -> Result<Claimed, StoreError> {
        if self.objects.contains_key(name) {
            return Ok(Claimed::AlreadyTaken);
        }
        self.stage_put(name, data).map(Claimed::Yes)
    }

    fn put_if_match(
        &mut self,
        name: &str,
        data: &[u8],
        version: &Version,
    ) -> Result<Claimed, StoreError> {
        match self.objects.get(name) {
            Some(object) if shown(object.version) == *version => {
                self.stage_put(name, data).map(Claimed::Yes)
            }
            _ => Ok(Claimed::AlreadyTaken),
        }
    }

    fn delete(&mut self, name: &str) -> Result<(), StoreError> {
        if !self.objects.contains_key(name) {
            return Ok(());
        }
        encode(&mut self.batch, DELETE, 0, name, &[])?;
        let Some(before) = self.objects.remove(name) else {
            return Ok(());
        };
        self.live -= record_size(name, &before.data);
        self.undo.push((name.to_owned(), Some(before)));
        Ok(())
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        self.write_batch(self.durability == Durability::PowerLoss)
    }
}

#[cfg(test)]
mod tests;
