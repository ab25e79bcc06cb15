//! A store in a folder on one host: a file per object, private to the host's user,
//! written to a temporary file, fsync'd and renamed, so a reader never sees half of one.
//!
//! The folder is the host's own: an existing one is refused unless it is owned by the
//! user running the host and writable by nobody else ([`FolderStore::check_owned`]), and
//! the config refuses any `[[activity.dir]]` grant that overlaps it. What the host must
//! know it wrote itself (compiled artifacts, outbox entries) is sealed with an HMAC under
//! a key the folder keeps private ([`FolderStore::host_key`]).

use std::io::{Read as _, Write};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use ring::hmac;
use ring::rand::SecureRandom as _;

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
        Self::check_owned(dir).map_err(|message| StoreError {
            code: "UntrustedFolder".into(),
            message,
        })?;
        remove_stale_temporaries(dir);
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

    /// The file a host folder keeps its MAC key in (see [`FolderStore::host_key`]).
    pub const KEY_FILE: &'static str = ".key";
    /// The size of a MAC ([`FolderStore::seal`]).
    pub const MAC_BYTES: usize = 32;

    /// Checks that the existing folder `dir` may hold what the host trusts: a folder
    /// (symlinks followed) owned by the user running the host, that neither group nor
    /// others can write to (anyone who can could plant what the host reads back).
    ///
    /// # Errors
    /// What is wrong and what to do, naming the folder.
    pub fn check_owned(dir: &Path) -> Result<(), String> {
        let meta = std::fs::metadata(dir)
            .map_err(|err| format!("cannot inspect {}: {err}", dir.display()))?;
        if !meta.is_dir() {
            return Err(format!("{} is not a folder", dir.display()));
        }
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me {
            return Err(format!(
                "refusing {}: it is owned by uid {}, not by the user running the host (uid {me}); use a folder of your own",
                dir.display(),
                meta.uid()
            ));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(format!(
                "refusing {}: others can write to it (mode {:o}); run `chmod go-w {}` or use another folder",
                dir.display(),
                meta.mode() & 0o777,
                dir.display()
            ));
        }
        Ok(())
    }

    /// The HMAC-SHA256 key of the host folder `dir`: 32 bytes from the OS's CSPRNG in
    /// `dir/.key` (mode 0600), made once and read again at every start. Never read
    /// through a symlink; refused when another user owns it or anyone else may read or
    /// write it.
    ///
    /// # Errors
    /// What is wrong and what to do, naming the file.
    pub fn host_key(dir: &Path) -> Result<hmac::Key, String> {
        let path = dir.join(Self::KEY_FILE);
        // Twice: a host starting at the same time may make the key between our read and
        // our write; then its key is the one.
        for _ in 0..2 {
            if let Some(bytes) = read_key(&path)? {
                return Ok(hmac::Key::new(hmac::HMAC_SHA256, &bytes));
            }
            let mut bytes = [0u8; KEY_BYTES];
            ring::rand::SystemRandom::new()
                .fill(&mut bytes)
                .map_err(|_| "the OS gave no random bytes for the host's key".to_owned())?;
            let cannot = |err: std::io::Error| format!("cannot write {}: {err}", path.display());
            // tempfile makes its files 0600.
            let mut temp = tempfile::Builder::new()
                .prefix(".key.")
                .suffix(".tmp")
                .tempfile_in(dir)
                .map_err(cannot)?;
            temp.write_all(&bytes).map_err(cannot)?;
            temp.as_file().sync_all().map_err(cannot)?;
            match temp.persist_noclobber(&path) {
                Ok(_) => {
                    sync_dir(dir).map_err(cannot)?;
                    return Ok(hmac::Key::new(hmac::HMAC_SHA256, &bytes));
                }
                Err(err) if err.error.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(err) => return Err(cannot(err.error)),
            }
        }
        Err(format!("cannot make {}: it keeps changing", path.display()))
    }

    /// The HMAC-SHA256 under `key` of `parts`, each length-prefixed (so no two lists of
    /// parts share a MAC).
    pub fn seal(key: &hmac::Key, parts: &[&[u8]]) -> [u8; Self::MAC_BYTES] {
        let mut context = hmac::Context::with_key(key);
        for part in parts {
            context.update(&(part.len() as u64).to_be_bytes());
            context.update(part);
        }
        let mut mac = [0u8; Self::MAC_BYTES];
        mac.copy_from_slice(context.sign().as_ref());
        mac
    }

    /// Whether `mac` is [`FolderStore::seal`] of `parts` under `key`, compared in
    /// constant time.
    pub fn is_sealed(key: &hmac::Key, parts: &[&[u8]], mac: &[u8]) -> bool {
        let expected = Self::seal(key, parts);
        mac.len() == Self::MAC_BYTES
            && expected
                .iter()
                .zip(mac)
                .fold(0u8, |differ, (a, b)| differ | (a ^ b))
                == 0
    }
}

/// The file whose lock makes [`Store::put_if_match`] a compare-and-swap in a folder.
const LOCK_FILE: &str = ".lock";

/// A folder object's version: the SHA-256 of its bytes.
fn version_of(data: &[u8]) -> Version {
    Version(sha256_hex(data))
}

/// The size of a host folder's key.
const KEY_BYTES: usize = 32;

/// How old a temporary file must be before a start removes it: no write of the host's
/// takes this long, so one this old was left by a process that died mid-write (and one
/// younger may be another process's write in progress).
const STALE_TEMPORARY: std::time::Duration = std::time::Duration::from_secs(600);

/// Removes the temporary files a process that died mid-write left in `dir` (the
/// host's `.NAME.tmp`, `.NAME.PID.N.tmp`, and tempfile's `.tmpXXXXXX`), older than ten
/// minutes: without it, each crash would leave its bytes in the folder for good.
/// Returns how many it removed; what it cannot read or remove is left.
pub fn remove_stale_temporaries(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let now = std::time::SystemTime::now();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let temporary =
            name.starts_with('.') && (name.ends_with(".tmp") || name.starts_with(".tmp"));
        let stale = entry
            .metadata()
            .ok()
            .filter(std::fs::Metadata::is_file)
            .and_then(|meta| meta.modified().ok())
            .and_then(|modified| now.duration_since(modified).ok())
            .is_some_and(|age| age >= STALE_TEMPORARY);
        if temporary && stale && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(
            folder = %dir.display(),
            removed,
            "removed temporary files a stopped process left"
        );
    }
    removed
}

/// The key at `path`; `None` when there is none.
fn read_key(path: &Path) -> Result<Option<[u8; KEY_BYTES]>, String> {
    use rustix::fs::{Mode, OFlags};
    let refuse = |reason: String| format!("refusing the key file {}: {reason}", path.display());
    let fd = match rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(rustix::io::Errno::LOOP) => {
            return Err(refuse(
                "it is a symlink; delete it, and the host makes a new key".into(),
            ));
        }
        Err(err) => return Err(refuse(std::io::Error::from(err).to_string())),
    };
    let mut file = std::fs::File::from(fd);
    let meta = file.metadata().map_err(|err| refuse(err.to_string()))?;
    let me = rustix::process::geteuid().as_raw();
    let renew =
        "delete it, and the host makes a new one (what it sealed with the old one is then refused)";
    if !meta.is_file() {
        return Err(refuse(format!("it is not a file; {renew}")));
    }
    if meta.uid() != me {
        return Err(refuse(format!(
            "it is owned by uid {}, not by the user running the host (uid {me}); {renew}",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(refuse(format!(
            "others may read or change it (mode {:o}); {renew}",
            meta.mode() & 0o777
        )));
    }
    let mut bytes = Vec::with_capacity(KEY_BYTES + 1);
    std::io::Read::by_ref(&mut file)
        .take(KEY_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| refuse(err.to_string()))?;
    let key: [u8; KEY_BYTES] = bytes
        .try_into()
        .map_err(|_| refuse(format!("it does not hold a {KEY_BYTES}-byte key; {renew}")))?;
    Ok(Some(key))
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

/// Makes a rename or a new name in `dir` durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
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
        assert_eq!(store.get("a").await.unwrap(), None);
        store.put("a", b"one").await.unwrap();
        store.put("a", b"two").await.unwrap();
        assert_eq!(store.get("a").await.unwrap().as_deref(), Some(&b"two"[..]));
        assert_eq!(
            store.put_if_absent("a", b"x").await.unwrap(),
            Claimed::AlreadyTaken
        );
        let Claimed::Yes(version) = store.put_if_absent("b", b"x").await.unwrap() else {
            panic!("b was free");
        };
        let read = store.read("b").await.unwrap().unwrap();
        assert_eq!((read.data.as_slice(), &read.version), (&b"x"[..], &version));
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
        let writers: Vec<_> = (0..16)
            .map(|n| {
                let (store, first) = (store.clone(), first.clone());
                tokio::spawn(async move {
                    store
                        .put_if_match("k", format!("new {n}").as_bytes(), &first)
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut won = Vec::new();
        for writer in writers {
            if let Claimed::Yes(version) = writer.await.unwrap() {
                won.push(version);
            }
        }
        assert_eq!(
            won.len(),
            1,
            "exactly one writer replaces the version it read"
        );
        let now = store.read("k").await.unwrap().unwrap();
        assert_eq!(now.version, won[0]);
        assert_ne!(now.version, first);
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
            let err = FolderStore::check_owned(&open).unwrap_err();
            assert!(err.contains("owned by uid 65534"), "{err}");
        }
    }

    #[test]
    fn the_key_is_made_once_and_seals_what_it_was_given() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = FolderStore::host_key(dir.path()).unwrap();
        let mac = FolderStore::seal(&key, &[b"ab", b"c"]);
        // Read again, not made again.
        let again = FolderStore::host_key(dir.path()).unwrap();
        assert!(FolderStore::is_sealed(&again, &[b"ab", b"c"], &mac));
        // The parts are framed: moving a byte across them is another message.
        assert!(!FolderStore::is_sealed(&again, &[b"a", b"bc"], &mac));
        assert!(!FolderStore::is_sealed(&again, &[b"ab", b"c"], &mac[..31]));
        let other = tempfile::tempdir().unwrap();
        let theirs = FolderStore::host_key(other.path()).unwrap();
        assert!(!FolderStore::is_sealed(&theirs, &[b"ab", b"c"], &mac));
        let path = dir.path().join(FolderStore::KEY_FILE);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = FolderStore::host_key(dir.path()).unwrap_err();
        assert!(err.contains("others may read or change it"), "{err}");
        std::fs::write(&path, b"short").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = FolderStore::host_key(dir.path()).unwrap_err();
        assert!(err.contains("32-byte key"), "{err}");
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
