//! Durable stores for what must outlive a task attempt or the host: a folder (one host)
//! or an S3 prefix (a fleet). Small objects by name, read whole; the names are the
//! caller's (hex digests, never user data).

mod folder;
mod group;
mod journal;
mod log;
mod s3;

use std::fmt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::Deserialize;

pub use folder::{FolderStore, hold};
pub use group::{GroupCommitStore, Objects};
pub use journal::{Expiry, JournalStore, Keeping, is_digest, open as open_journal};
pub use log::{LOG, open as open_log, read_log};
pub use s3::S3Store;

/// Where a store keeps its objects, as a config names it: `s3://BUCKET/PREFIX` or a
/// folder path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// Objects under `prefix` (no leading or trailing `/`; may be empty) in `bucket`.
    S3 {
        /// The bucket.
        bucket: String,
        /// The key prefix.
        prefix: String,
    },
    /// Files in a folder (made absolute against the config's folder).
    Folder(PathBuf),
}

impl StoreLocation {
    /// Reads `s3://BUCKET/PREFIX` or a folder path; a relative folder resolves against
    /// `base`.
    ///
    /// # Errors
    /// The message a user reads: an empty value, or an `s3://` URL without a bucket.
    pub fn parse(value: &str, base: &Path) -> Result<Self, String> {
        if value.trim().is_empty() {
            return Err("is empty: name an S3 prefix (`s3://bucket/prefix`) or a folder".into());
        }
        if let Some(rest) = value.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(format!(
                    "`{value}` names no bucket: write `s3://bucket/prefix`"
                ));
            }
            return Ok(Self::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.trim_matches('/').to_owned(),
            });
        }
        if value.contains("://") {
            return Err(format!(
                "`{value}` is neither an `s3://` URL nor a folder path"
            ));
        }
        Ok(Self::Folder(base.join(value)))
    }
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Self::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            Self::Folder(dir) => write!(f, "{}", dir.display()),
        }
    }
}

/// What the folder's files of an older version become when a store opens.
#[derive(Debug, Clone, Copy)]
pub enum Legacy {
    /// The files whose names the function accepts (the caller's own names: another
    /// store may share the folder) are objects an older version left: moved into the
    /// store (then deleted), so an upgraded host finds them. A log store ([`open_log`])
    /// also takes such rows from the folder's SQLite database ([`open_journal`]).
    Import(fn(&str) -> bool),
    /// Files are left alone (the caller reads them itself).
    Leave,
}

/// What a group-committed write ([`open_journal`], [`open_log`]) survives once it
/// returns, as `durability` names it in the config. S3 has no choice to make: it answers
/// once a write is durable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Durability {
    /// `"power-loss"` (the default): the log is fsync'd before the write returns, so it
    /// survives a power cut or a kernel crash; writes that arrive together share one
    /// fsync.
    #[default]
    PowerLoss,
    /// `"process-crash"`: the log is handed to the kernel, not fsync'd: it survives the
    /// host's `kill -9`, an OOM kill or a panic, but not a power cut or a kernel crash
    /// before it reaches the disk (the journal's next checkpoint, the kernel's write-back
    /// of the outbox's log).
    ProcessCrash,
}

/// Why a store call failed: a short code (the AWS error code, or the OS error's kind)
/// and what it said. Never holds an object's content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct StoreError {
    /// `AccessDenied`, `NoSuchBucket`, `SlowDown`, `PermissionDenied`, `StorageFull`...
    pub code: String,
    /// The service's or the OS's message.
    pub message: String,
}

impl StoreError {
    fn io(err: &std::io::Error) -> Self {
        Self {
            code: format!("{:?}", err.kind()),
            message: err.to_string(),
        }
    }
}

/// Which write of an object a reader saw: its ETag in S3, a SHA-256 of its bytes in a
/// folder. A conditional write ([`Store::put_if_match`]) names the version it replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version(pub String);

/// An object as read, with the version a conditional write may replace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The object's bytes.
    pub data: Vec<u8>,
    /// Which write of it this is.
    pub version: Version,
}

/// Whether a conditional write took the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// The name now holds the data, as this version.
    Yes(Version),
    /// The condition did not hold (the name was taken, or held another version, or
    /// nothing); nothing was written.
    AlreadyTaken,
}

/// A durable store of small objects by name.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The object named `name`, or `None` when there is none.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    async fn get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.read(name).await?.map(|object| object.data))
    }

    /// Writes `data` as `name`, replacing what was there; once it returns, the write is
    /// durable (fsync'd, or acknowledged by S3).
    ///
    /// # Errors
    /// [`StoreError`] when it could not be written; what was there stays.
    async fn put(&self, name: &str, data: &[u8]) -> Result<(), StoreError>;

    /// The object named `name` with its version, or `None` when there is none. (S3
    /// answers a read of a missing key with 403 `AccessDenied` to credentials without
    /// `s3:ListBucket`: callers that must work without it read only what a conditional
    /// write found there.)
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    async fn read(&self, name: &str) -> Result<Option<Versioned>, StoreError>;

    /// Writes `data` as `name` only if nothing holds the name (S3 `If-None-Match: *`; in
    /// a folder, a complete file linked to the name, which fails if it exists).
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written.
    async fn put_if_absent(&self, name: &str, data: &[u8]) -> Result<Claimed, StoreError>;

    /// Replaces `name` with `data` only if it still holds `version` (S3 `If-Match`; in a
    /// folder, compared and renamed under the folder's lock): of two writers that read
    /// the same version, one wins.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be written.
    async fn put_if_match(
        &self,
        name: &str,
        data: &[u8],
        version: &Version,
    ) -> Result<Claimed, StoreError>;

    /// Removes `name`; removing what is not there is not an error.
    ///
    /// # Errors
    /// [`StoreError`] when the store refuses.
    async fn delete(&self, name: &str) -> Result<(), StoreError>;
}

/// What every store promises, as tests both folder stores run.
#[cfg(test)]
mod contract {
    use std::sync::Arc;

    use super::{Claimed, Store, Version};

    /// What every store does with `a` and `b` on an empty store: a read of a missing
    /// name finds nothing, a write replaces the whole, a conditional create of a taken
    /// name is refused and of a free one (`b`) returns the version a read then finds.
    /// Returns `b`'s version.
    pub(crate) async fn writes_whole_and_claims(store: &dyn Store) -> Version {
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
        version
    }

    /// A conditional replace of `b` (holding `version`, as [`writes_whole_and_claims`]
    /// left it) names the version it replaces: another is refused, `version` is taken.
    pub(super) async fn replaces_only_the_version_read(store: &dyn Store, version: &Version) {
        assert_eq!(
            store
                .put_if_match("b", b"y", &Version("other".into()))
                .await
                .unwrap(),
            Claimed::AlreadyTaken
        );
        assert!(matches!(
            store.put_if_match("b", b"y", version).await.unwrap(),
            Claimed::Yes(_)
        ));
    }

    /// On a group-committed store holding `a` and `b`: a delete of what is gone is no
    /// error, a later list sees a detached delete, and a flush commits the detached
    /// deletes waiting for a write (the caller then looks at the file).
    pub(super) async fn deletes_ride_and_a_flush_commits_them(store: &super::GroupCommitStore) {
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
    }

    /// Sixteen plain writes beside sixteen writers racing to replace one version (on an
    /// empty group-committed store): each gets its own answer, one replace wins, and all
    /// seventeen objects are there (as `listed` counts them).
    pub(super) async fn writers_share_commits(store: Arc<dyn Store>, listed: impl Fn() -> usize) {
        let Claimed::Yes(first) = store.put_if_absent("k", b"old").await.unwrap() else {
            panic!("k was free");
        };
        let puts: Vec<_> = (0..16)
            .map(|n| {
                let store = store.clone();
                tokio::spawn(async move { store.put(&format!("n{n}"), b"x").await.unwrap() })
            })
            .collect();
        one_of_sixteen_replaces(store.clone(), &first).await;
        for put in puts {
            put.await.unwrap();
        }
        assert_eq!(listed(), 17);
    }

    /// Sixteen writers that read `first` of `k` race to replace it: exactly one does;
    /// returns the version it wrote.
    pub(super) async fn one_of_sixteen_replaces(store: Arc<dyn Store>, first: &Version) -> Version {
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
        assert_ne!(&now.version, first);
        won.remove(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_s3_prefixes_or_folders() {
        let base = Path::new("/etc/sfn");
        assert_eq!(
            StoreLocation::parse("s3://bucket/some/prefix/", base),
            Ok(StoreLocation::S3 {
                bucket: "bucket".into(),
                prefix: "some/prefix".into()
            })
        );
        assert_eq!(
            StoreLocation::parse("s3://bucket", base),
            Ok(StoreLocation::S3 {
                bucket: "bucket".into(),
                prefix: String::new()
            })
        );
        assert_eq!(
            StoreLocation::parse("progress", base),
            Ok(StoreLocation::Folder(PathBuf::from("/etc/sfn/progress")))
        );
        assert_eq!(
            StoreLocation::parse("/var/lib/p", base),
            Ok(StoreLocation::Folder(PathBuf::from("/var/lib/p")))
        );
        assert!(
            StoreLocation::parse("s3:///x", base)
                .unwrap_err()
                .contains("bucket")
        );
        assert!(StoreLocation::parse("https://x/y", base).is_err());
        assert!(StoreLocation::parse(" ", base).is_err());
    }
}
