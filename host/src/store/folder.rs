//! A store in a folder on one host: a file per object, private to the host's user,
//! written to a temporary file, fsync'd and renamed, so a reader never sees half of one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use super::{Claimed, Store, StoreError};

/// Objects as files in one folder.
pub struct FolderStore {
    dir: PathBuf,
    /// Numbers temporary files, so that two writes of one name never share one.
    writes: AtomicU64,
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
        Ok(Self {
            dir: dir.to_owned(),
            writes: AtomicU64::new(0),
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
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
        let temporary = dir.join(format!(
            ".{name}.{}.{}.tmp",
            std::process::id(),
            self.writes.fetch_add(1, Ordering::Relaxed)
        ));
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

    async fn put_if_absent(&self, name: &str, data: &[u8]) -> Result<Claimed, StoreError> {
        let (dir, path, data) = (self.dir.clone(), self.path(name), data.to_vec());
        tokio::task::spawn_blocking(move || {
            let mut file = match create(&path, true) {
                Ok(file) => file,
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Ok(Claimed::AlreadyTaken);
                }
                Err(err) => return Err(StoreError::io(&err)),
            };
            // The name is ours from here: a half-written claim would read as garbage,
            // so a failed write gives the name back.
            match write_durably(&mut file, &data).and_then(|()| sync_dir(&dir)) {
                Ok(()) => Ok(Claimed::Yes),
                Err(err) => {
                    let _ = std::fs::remove_file(&path);
                    Err(StoreError::io(&err))
                }
            }
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
        assert_eq!(store.put_if_absent("b", b"x").await.unwrap(), Claimed::Yes);
        assert_eq!(store.get("b").await.unwrap().as_deref(), Some(&b"x"[..]));
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
}
