//! A store in a folder on one host: a file per object, private to the host's user,
//! written to a temporary file, fsync'd and renamed, so a reader never sees half of one.
//! For checkpoints (large, saved at the guest's pace); the per-task records live in a
//! [`open_journal`](super::open_journal), since a file per record costs an inode each.
//!
//! The folder is the host's own: an existing one is refused unless it is owned by the
//! user running the host and writable by nobody else ([`check_owned`]), and
//! the config refuses any `[[activity.dir]]` grant that overlaps it. What the host must
//! know it wrote itself (compiled artifacts, outbox entries) is sealed with an HMAC under
//! a key the folder keeps private ([`host_key`](sfn_wasm_engine::host_folder::host_key)).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use sfn_wasm_engine::host_folder::{check_owned, remove_stale_temporaries, sync_dir};

use super::{Claimed, Store, StoreError, Version, Versioned};
use crate::ids::sha256_hex;

/// Objects as files in one folder.
pub struct FolderStore {
    dir: PathBuf,
    /// Numbers temporary files, so that two writes of one name never share one.
    writes: AtomicU64,
    /// Random, per store: processes of one PID (PID 1 in two containers sharing a
    /// volume) never share a temporary file either.
    salt: u32,
}

impl FolderStore {
    /// The store in `dir`, created (private) if missing.
    ///
    /// # Errors
    /// [`StoreError`] when the folder cannot be created or is not a folder.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        open_private_folder(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
            writes: AtomicU64::new(0),
            // Only uniqueness across processes is asked of it.
            salt: fastrand::u32(..),
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A temporary file for one write of `name`: `.NAME.PID.N.tmp`, never shared by two
    /// writes (and removed by [`remove_stale_temporaries`] if a crash leaves it).
    fn temporary(&self, name: &str) -> PathBuf {
        self.dir.join(format!(
            ".{name}.{}.{}.{:08x}.tmp",
            std::process::id(),
            self.writes.fetch_add(1, Ordering::Relaxed),
            self.salt
        ))
    }
}

/// Creates `dir` (private) if missing, and checks that it is a folder the host's user
/// owns and nobody else can write to; removes the temporary files a crash left there.
///
/// # Errors
/// [`StoreError`] `NotADirectory`, `UntrustedFolder`, or the OS's error.
pub(super) fn open_private_folder(dir: &Path) -> Result<(), StoreError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode_private()
        .create(dir)
        .map_err(|err| StoreError::io(&err))?;
    if !dir.is_dir() {
        return Err(StoreError {
            code: "NotADirectory".into(),
            message: format!("{} is not a folder", dir.display()),
        });
    }
    check_owned(dir).map_err(|message| StoreError {
        code: "UntrustedFolder".into(),
        message,
    })?;
    remove_stale_temporaries(dir);
    Ok(())
}

/// How long [`hold`] waits for the process before it to let go of a lock (a host that
/// is restarting; a store dropped moments ago in this process).
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Takes what the lock file `file` in `dir` guards for this process, waiting up to
/// [`LOCK_WAIT`]: an `flock` on that file (a file of its own, never one a store
/// replaces; on NFS, Linux makes it a lock the server keeps), held while the returned
/// file is open.
///
/// # Errors
/// [`StoreError`] `InUse` when another process holds it past the wait (the message
/// names the folder and the file), or the OS's error.
pub fn hold(dir: &Path, file: &str) -> Result<std::fs::File, StoreError> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let lock = options
        .open(dir.join(file))
        .map_err(|err| StoreError::io(&err))?;
    let until = Instant::now() + LOCK_WAIT;
    loop {
        match lock.try_lock() {
            Ok(()) => return Ok(lock),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError {
                    code: "InUse".into(),
                    message: format!(
                        "{} is held by another process (its {file} is locked): give each host a folder of its own",
                        dir.display()
                    ),
                });
            }
            Err(std::fs::TryLockError::Error(err)) => return Err(StoreError::io(&err)),
        }
    }
}

/// The objects an older version kept as files in `dir` (the names `is_object`
/// accepts), with their bytes and paths, for a store to move in. A file that cannot be
/// read stays where it is (logged): not a reason to refuse to start.
pub(super) fn legacy_files(
    dir: &Path,
    is_object: fn(&str) -> bool,
) -> Vec<(String, Vec<u8>, PathBuf)> {
    let Ok(files) = std::fs::read_dir(dir) else {
        return Vec::new();
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
            Err(err) => {
                tracing::warn!(file = %file.path().display(), error = %err, "a file an older version kept could not be read and was left in place");
            }
        }
    }
    found
}

/// The file whose lock makes [`Store::put_if_match`] a compare-and-swap in a folder.
const LOCK_FILE: &str = ".lock";

/// A folder object's version: the SHA-256 of its bytes.
fn version_of(data: &[u8]) -> Version {
    Version(sha256_hex(data))
}

/// Private folders (0700) on Unix.
trait PrivateDir {
    fn mode_private(&mut self) -> &mut Self;
}

impl PrivateDir for std::fs::DirBuilder {
    fn mode_private(&mut self) -> &mut Self {
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(self, 0o700);
        self
    }
}

/// Opens `path` for writing as a private (0600) file; `new` refuses an existing one.
fn create(path: &Path, new: bool) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if new {
        options.create_new(true);
    } else {
        options.create(true).truncate(true);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Writes `data` whole to a new private file at `path` and makes it durable.
fn write_durably(file: &mut std::fs::File, data: &[u8]) -> std::io::Result<()> {
    file.write_all(data)?;
    file.sync_all()
}

#[async_trait]
impl Store for FolderStore {
    async fn get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path(name);
        tokio::task::spawn_blocking(move || match std::fs::read(&path) {
            Ok(data) => Ok(Some(data)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(StoreError::io(&err)),
        })
        .await
        .map_err(joined)?
    }

    async fn put(&self, name: &str, data: &[u8]) -> Result<(), StoreError> {
        let (dir, path, data) = (self.dir.clone(), self.path(name), data.to_vec());
        let temporary = self.temporary(name);
        tokio::task::spawn_blocking(move || {
            let written = create(&temporary, false)
                .and_then(|mut file| write_durably(&mut file, &data))
                .and_then(|()| std::fs::rename(&temporary, &path))
                .and_then(|()| sync_dir(&dir));
            if written.is_err() {
                let _ = std::fs::remove_file(&temporary);
            }
            written.map_err(|err| StoreError::io(&err))
        })
        .await
        .map_err(joined)?
    }

    async fn read(&self, name: &str) -> Result<Option<Versioned>, StoreError> {
        Ok(self.get(name).await?.map(|data| Versioned {
            version: version_of(&data),
            data,
        }))
    }

    async fn put_if_absent(&self, name: &str, data: &[u8]) -> Result<Claimed, StoreError> {
        let (dir, path, data) = (self.dir.clone(), self.path(name), data.to_vec());
        let temporary = self.temporary(name);
        tokio::task::spawn_blocking(move || {
            // Written whole first, then linked to the name (which fails if it exists):
            // nobody ever reads a claim half written.
            let written =
                create(&temporary, true).and_then(|mut file| write_durably(&mut file, &data));
            if let Err(err) = written {
                let _ = std::fs::remove_file(&temporary);
                return Err(StoreError::io(&err));
            }
            let linked = std::fs::hard_link(&temporary, &path);
            let _ = std::fs::remove_file(&temporary);
            match linked {
                Ok(()) => {}
                // Only the name's own link says it is taken.
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Ok(Claimed::AlreadyTaken);
                }
                Err(err) => return Err(StoreError::io(&err)),
            }
            match sync_dir(&dir) {
                Ok(()) => Ok(Claimed::Yes(version_of(&data))),
                // Not durable: the name is given back rather than held by a claim that
                // may not survive a crash.
                Err(err) => {
                    let _ = std::fs::remove_file(&path);
                    Err(StoreError::io(&err))
                }
            }
        })
        .await
        .map_err(joined)?
    }

    async fn put_if_match(
        &self,
        name: &str,
        data: &[u8],
        version: &Version,
    ) -> Result<Claimed, StoreError> {
        let (dir, path, data) = (self.dir.clone(), self.path(name), data.to_vec());
        let temporary = self.temporary(name);
        let version = version.clone();
        tokio::task::spawn_blocking(move || {
            // Compare and replace under the folder's lock, which every process of the
            // host's user that opens the folder takes for it: of two that read one
            // version, the second finds the first's.
            let lock = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(dir.join(LOCK_FILE))
                .map_err(|err| StoreError::io(&err))?;
            lock.lock().map_err(|err| StoreError::io(&err))?;
            let current = match std::fs::read(&path) {
                Ok(current) => current,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(Claimed::AlreadyTaken);
                }
                Err(err) => return Err(StoreError::io(&err)),
            };
            if version_of(&current) != version {
                return Ok(Claimed::AlreadyTaken);
            }
            let written = create(&temporary, true)
                .and_then(|mut file| write_durably(&mut file, &data))
                .and_then(|()| std::fs::rename(&temporary, &path))
                .and_then(|()| sync_dir(&dir));
            if written.is_err() {
                let _ = std::fs::remove_file(&temporary);
            }
            written
                .map(|()| Claimed::Yes(version_of(&data)))
                .map_err(|err| StoreError::io(&err))
        })
        .await
        .map_err(joined)?
    }

    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        let path = self.path(name);
        tokio::task::spawn_blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(StoreError::io(&err)),
        })
        .await
        .map_err(joined)?
    }
}

fn joined(err: tokio::task::JoinError) -> StoreError {
    StoreError {
        code: "Internal".into(),
        message: format!("the store's I/O thread failed: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn objects_are_private_files_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = FolderStore::open(&dir.path().join("store")).unwrap();
        super::super::contract::writes_whole_and_claims(&store).await;
        store.delete("a").await.unwrap();
        store.delete("a").await.unwrap();
        assert_eq!(store.get("a").await.unwrap(), None);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dir.path().join("store")), 0o700);
            assert_eq!(mode(&dir.path().join("store/b")), 0o600);
        }
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("store"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("b")]);
    }

    /// Of writers that read one version, one replaces it; the others find it changed.
    #[tokio::test]
    async fn a_conditional_replace_is_won_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FolderStore::open(dir.path()).unwrap());
        let Claimed::Yes(first) = store.put_if_absent("k", b"old").await.unwrap() else {
            panic!("k was free");
        };
        super::super::contract::one_of_sixteen_replaces(store.clone(), &first).await;
        // A missing name matches no version.
        assert_eq!(
            store.put_if_match("gone", b"x", &first).await.unwrap(),
            Claimed::AlreadyTaken
        );
    }

    #[test]
    fn a_folder_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let open = root.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = FolderStore::open(&open).err().unwrap();
        assert_eq!(err.code, "UntrustedFolder");
        assert!(
            err.message
                .contains("others can write to it (mode 777); run `chmod go-w"),
            "{err}"
        );
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        FolderStore::open(&open).unwrap();
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(&open, Some(65534), None).unwrap();
            let err = sfn_wasm_engine::host_folder::check_owned(&open).unwrap_err();
            assert!(err.contains("owned by uid 65534"), "{err}");
        }
    }

    /// A crash mid-write leaves a temporary file; the next start removes it once it is
    /// old enough not to be another process's write in progress.
    #[test]
    fn a_start_removes_the_temporary_files_a_crash_left() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("store");
        FolderStore::open(&folder).unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for name in [".checkpoint-ab.123.4.tmp", ".tmpAbC123", ".answer.tmp"] {
            let file = std::fs::File::create(folder.join(name)).unwrap();
            file.set_modified(old).unwrap();
        }
        std::fs::write(folder.join(".fresh.1.2.tmp"), b"in progress").unwrap();
        std::fs::write(folder.join("checkpoint-ab"), b"kept").unwrap();
        let old_entry = std::fs::File::create(folder.join("checkpoint-cd")).unwrap();
        old_entry.set_modified(old).unwrap();
        FolderStore::open(&folder).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&folder)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [".fresh.1.2.tmp", "checkpoint-ab", "checkpoint-cd"]);
    }
}
