//! The precompiled-artifact cache: compiled handlers on disk, so a restart or a swap back
//! to a known version does not compile again.
//!
//! Entries are keyed by the module's digest and a fingerprint of the engine
//! configuration (wasmtime's compatibility hash, this host's version), so an entry made
//! by another configuration is never looked up. Loading an artifact is `unsafe` in
//! wasmtime (its machine code is trusted), so an entry is only used when it is exactly
//! what this host wrote for this module: each file carries an HMAC-SHA256, under a key
//! only the host reads (`cache_dir/.key`, 0600, see [`host_key`](crate::host_folder::host_key)), over the
//! format version, the module's digest, the engine's fingerprint and the payload,
//! checked before the payload reaches wasmtime; wasmtime's own header check follows. An
//! entry copied from another module's, from another host, or changed by a byte, does not
//! check out: it is logged (`cache:rejected`), deleted and compiled afresh.
//!
//! The cache trusts only itself: the folder is created private (0700), and an existing
//! one is refused unless it is a real folder owned by the user running the host and
//! writable by nobody else (anyone who can write there could plant machine code); no
//! guest's `[[activity.dir]]` grant may overlap it (the config refuses one).
//! Entries are never read through a symlink. Entries are written to a temporary file and
//! renamed into place, so a crash never leaves half an entry under a real name. The
//! folder's size is bounded: past [`ArtifactCache::with_max_bytes`], the least recently
//! used entries are deleted.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use ring::hmac;

use crate::WasmEngine;
use crate::digest::Digest;
use crate::host_folder;

/// The header of an entry of this format (the first, `SFNWASMC`, carried a bare
/// checksum: such entries are refused and rebuilt).
const MAGIC: &[u8; 8] = b"SFNWASM2";
const HEADER_LEN: usize = MAGIC.len() + host_folder::MAC_BYTES;
/// What the MAC says an entry is, besides its module and engine.
const FORMAT: &[u8] = b"sfn-wasm-host compiled artifact v2";

/// The default bound on a cache folder's size.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

/// A cache folder for one engine configuration.
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
    engine_key: String,
    max_bytes: u64,
    /// The folder's MAC key.
    key: hmac::Key,
}

/// Why a cache folder is not used.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The folder could not be created or inspected.
    #[error("cannot use the cache folder {}: {source}", dir.display())]
    Io {
        /// The folder.
        dir: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The folder is not safe to load machine code from.
    #[error("refusing the cache folder {}: {reason}", dir.display())]
    Untrusted {
        /// The folder.
        dir: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
}

/// Why a cache entry was not used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The entry could not be read.
    #[error("cannot read cache entry {}: {source}", path.display())]
    Read {
        /// The entry.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The entry is not what this host wrote for this module (truncated, changed,
    /// copied from another entry or host, or another format).
    #[error("cache entry {} is refused: {reason}", path.display())]
    Corrupt {
        /// The entry.
        path: PathBuf,
        /// What did not check out.
        reason: &'static str,
    },
}

impl ArtifactCache {
    /// Opens (creating it, private) the cache folder `dir` for `engine`'s configuration,
    /// bounded to [`DEFAULT_MAX_BYTES`].
    ///
    /// # Errors
    /// When the folder cannot be created, or exists but is not safe: a symlink or not a
    /// folder, owned by another user, or writable by group or others; or when its key
    /// (`.key`) cannot be made or is not private (see [`host_key`](crate::host_folder::host_key)).
    pub fn open(dir: &Path, engine: &WasmEngine) -> Result<Self, OpenError> {
        let io = |source| OpenError::Io {
            dir: dir.to_owned(),
            source,
        };
        let untrusted = |reason: String| OpenError::Untrusted {
            dir: dir.to_owned(),
            reason,
        };
        match std::fs::symlink_metadata(dir) {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .create(dir)
                    .map_err(io)?;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(io)?;
            }
            Err(err) => return Err(io(err)),
            Ok(meta) if !meta.is_dir() => {
                return Err(untrusted(
                    "it is a symlink or not a folder; point `cache_dir` at a real folder".into(),
                ));
            }
            Ok(meta) => {
                let me = rustix::process::geteuid().as_raw();
                if meta.uid() != me {
                    return Err(untrusted(format!(
                        "it is owned by uid {}, not by the user running the host (uid {me}); use a folder of your own",
                        meta.uid()
                    )));
                }
                if meta.mode() & 0o022 != 0 {
                    return Err(untrusted(format!(
                        "others can write to it (mode {:o}); run `chmod go-w {}` or use another folder",
                        meta.mode() & 0o777,
                        dir.display()
                    )));
                }
            }
        }
        let key = host_folder::host_key(dir).map_err(untrusted)?;
        host_folder::remove_stale_temporaries(dir);
        let mut hasher = DefaultHasher::new();
        engine
            .wasmtime()
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        env!("CARGO_PKG_VERSION").hash(&mut hasher);
        Ok(Self {
            dir: dir.to_owned(),
            engine_key: format!("{:016x}", hasher.finish()),
            max_bytes: DEFAULT_MAX_BYTES,
            key,
        })
    }

    /// The same cache, bounded to `max_bytes` (least recently used entries go first).
    #[must_use]
    pub fn with_max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the entry for `digest` lives.
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(format!("{digest}-{}.cwasm", self.engine_key))
    }

    /// What an entry's MAC covers: the format, the module, the engine, the payload.
    fn sealed_parts<'a>(&'a self, digest: &'a Digest, artifact: &'a [u8]) -> [&'a [u8]; 4] {
        [
            FORMAT,
            digest.hex().as_bytes(),
            self.engine_key.as_bytes(),
            artifact,
        ]
    }

    /// The verified artifact for `digest`, or `None` if there is no entry.
    ///
    /// # Errors
    /// When an entry exists but cannot be read or does not verify: it is logged
    /// (`cache:rejected`) and deleted, and the caller compiles afresh. An artifact that
    /// does not verify never reaches wasmtime.
    pub fn get(&self, digest: &Digest) -> Result<Option<Vec<u8>>, CacheError> {
        let path = self.path(digest);
        let verified = self.read_verified(digest, &path);
        if let Err(err) = &verified {
            tracing::warn!(
                event = "cache:rejected",
                entry = %path.display(),
                digest = %digest,
                reason = %err,
                "cache:rejected: a compiled handler in the cache is not what this host wrote for this module; it is deleted and the module compiled afresh"
            );
            let _ = std::fs::remove_file(&path);
        }
        verified
    }

    /// The payload of the entry at `path` for `digest`, if its MAC checks out.
    fn read_verified(&self, digest: &Digest, path: &Path) -> Result<Option<Vec<u8>>, CacheError> {
        let mut bytes = match read_no_follow(path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CacheError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let corrupt = |reason| CacheError::Corrupt {
            path: path.to_owned(),
            reason,
        };
        if bytes.len() < HEADER_LEN || &bytes[..MAGIC.len()] != MAGIC {
            return Err(corrupt(
                "no sfn-wasm-host header of this version (another format, or not an entry)",
            ));
        }
        let (header, artifact) = bytes.split_at(HEADER_LEN);
        if !host_folder::is_sealed(
            &self.key,
            &self.sealed_parts(digest, artifact),
            &header[MAGIC.len()..],
        ) {
            return Err(corrupt(
                "its MAC does not check out for this host and this module (copied from another entry or host, or changed)",
            ));
        }
        bytes.drain(..HEADER_LEN);
        // Recently used: eviction goes by modification time.
        if let Ok(file) = std::fs::File::options().append(true).open(path) {
            let _ = file.set_modified(SystemTime::now());
        }
        Ok(Some(bytes))
    }

    /// Stores `artifact` for `digest`, atomically.
    ///
    /// # Errors
    /// When the entry cannot be written; the cache is an optimisation, so callers log
    /// this and carry on.
    pub fn put(&self, digest: &Digest, artifact: &[u8]) -> std::io::Result<()> {
        let path = self.path(digest);
        let mut temp = tempfile::NamedTempFile::new_in(&self.dir)?;
        temp.write_all(MAGIC)?;
        temp.write_all(&host_folder::seal(
            &self.key,
            &self.sealed_parts(digest, artifact),
        ))?;
        temp.write_all(artifact)?;
        temp.as_file().sync_all()?;
        temp.persist(&path).map_err(|err| err.error)?;
        self.evict(&path);
        Ok(())
    }

    /// Deletes the least recently used entries until the folder is within its bound,
    /// never `keep` (the entry just written).
    fn evict(&self, keep: &Path) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(SystemTime, u64, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "cwasm"))
            .filter_map(|entry| {
                let meta = entry.metadata().ok()?;
                if !meta.is_file() {
                    return None;
                }
                Some((meta.modified().ok()?, meta.len(), entry.path()))
            })
            .collect();
        let mut total: u64 = files.iter().map(|(_, len, _)| len).sum();
        files.sort();
        for (_, len, path) in files {
            if total <= self.max_bytes {
                break;
            }
            if path != keep && std::fs::remove_file(&path).is_ok() {
                tracing::info!(entry = %path.display(), "evicted a cache entry: the cache is over its size bound");
                total -= len;
            }
        }
    }

    /// Deletes the entry for `digest`, if any.
    pub fn remove(&self, digest: &Digest) {
        let _ = std::fs::remove_file(self.path(digest));
    }
}

/// Reads `path`, refusing to follow a symlink at it.
fn read_no_follow(path: &Path) -> std::io::Result<Vec<u8>> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut file = std::fs::File::from(fd);
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use sha2::Digest as _;

    use super::*;
    use crate::EngineConfig;

    fn engine() -> WasmEngine {
        WasmEngine::new(EngineConfig {
            pooling: false,
            ..EngineConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn only_a_private_folder_of_ours_is_trusted() {
        let engine = engine();
        let root = tempfile::tempdir().unwrap();
        let fresh = root.path().join("fresh");
        ArtifactCache::open(&fresh, &engine).unwrap();
        assert_eq!(std::fs::metadata(&fresh).unwrap().mode() & 0o777, 0o700);

        let open = root.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = ArtifactCache::open(&open, &engine).unwrap_err();
        assert!(err.to_string().contains("chmod go-w"), "{err}");

        let link = root.path().join("link");
        std::os::unix::fs::symlink(&fresh, &link).unwrap();
        let err = ArtifactCache::open(&link, &engine).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");

        if rustix::process::geteuid().is_root() {
            let theirs = root.path().join("theirs");
            std::fs::create_dir(&theirs).unwrap();
            std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
            std::os::unix::fs::chown(&theirs, Some(65534), None).unwrap();
            let err = ArtifactCache::open(&theirs, &engine).unwrap_err();
            assert!(err.to_string().contains("owned by uid 65534"), "{err}");
        }
    }

    #[test]
    fn an_entry_is_used_only_for_the_module_and_host_that_sealed_it() {
        let engine = engine();
        let root = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::open(&root.path().join("c"), &engine).unwrap();
        let (mine, theirs) = (Digest::of(b"mine"), Digest::of(b"theirs"));
        cache.put(&mine, b"my machine code").unwrap();
        cache.put(&theirs, b"their machine code").unwrap();
        assert_eq!(cache.get(&mine).unwrap().unwrap(), b"my machine code");

        // Another module's entry, copied over this one's: a valid entry, for another
        // digest. Refused and deleted, never returned.
        std::fs::copy(cache.path(&theirs), cache.path(&mine)).unwrap();
        let err = cache.get(&mine).unwrap_err();
        assert!(err.to_string().contains("MAC does not check out"), "{err}");
        assert!(!cache.path(&mine).exists(), "a refused entry is deleted");
        assert!(cache.get(&mine).unwrap().is_none());

        // A byte changed.
        cache.put(&mine, b"my machine code").unwrap();
        let mut bytes = std::fs::read(cache.path(&mine)).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        std::fs::write(cache.path(&mine), &bytes).unwrap();
        assert!(matches!(cache.get(&mine), Err(CacheError::Corrupt { .. })));

        // The first format: a bare checksum anyone can compute.
        let mut old = b"SFNWASMC".to_vec();
        old.extend_from_slice(&sha2::Sha256::digest(b"planted"));
        old.extend_from_slice(b"planted");
        std::fs::write(cache.path(&mine), &old).unwrap();
        assert!(matches!(cache.get(&mine), Err(CacheError::Corrupt { .. })));

        // Another host's entry for the same module: sealed under another key.
        let other = ArtifactCache::open(&root.path().join("other"), &engine).unwrap();
        other.put(&mine, b"my machine code").unwrap();
        std::fs::copy(other.path(&mine), cache.path(&mine)).unwrap();
        assert!(matches!(cache.get(&mine), Err(CacheError::Corrupt { .. })));

        // The host's own entries outlive it: the key is read again, not made again.
        cache.put(&mine, b"my machine code").unwrap();
        let again = ArtifactCache::open(cache.dir(), &engine).unwrap();
        assert_eq!(again.get(&mine).unwrap().unwrap(), b"my machine code");
    }

    #[test]
    fn the_key_is_private_and_a_shared_one_is_refused() {
        let engine = engine();
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("c");
        ArtifactCache::open(&dir, &engine).unwrap();
        let key = dir.join(host_folder::KEY_FILE);
        let meta = std::fs::symlink_metadata(&key).unwrap();
        assert_eq!((meta.mode() & 0o777, meta.len()), (0o600, 32));

        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = ArtifactCache::open(&dir, &engine).unwrap_err();
        assert!(
            err.to_string()
                .contains("others may read or change it (mode 644)"),
            "{err}"
        );

        std::fs::remove_file(&key).unwrap();
        let elsewhere = root.path().join("elsewhere");
        std::fs::write(&elsewhere, [0u8; 32]).unwrap();
        std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &key).unwrap();
        let err = ArtifactCache::open(&dir, &engine).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");

        if rustix::process::geteuid().is_root() {
            std::fs::remove_file(&key).unwrap();
            std::fs::write(&key, [0u8; 32]).unwrap();
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
            std::os::unix::fs::chown(&key, Some(65534), None).unwrap();
            let err = ArtifactCache::open(&dir, &engine).unwrap_err();
            assert!(err.to_string().contains("owned by uid 65534"), "{err}");
        }
    }

    #[test]
    fn entries_are_never_read_through_a_symlink() {
        let engine = engine();
        let root = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::open(&root.path().join("c"), &engine).unwrap();
        let digest = Digest::of(b"module");
        let planted = root.path().join("planted");
        cache.put(&Digest::of(b"other"), b"payload").unwrap();
        std::fs::copy(cache.path(&Digest::of(b"other")), &planted).unwrap();
        std::os::unix::fs::symlink(&planted, cache.path(&digest)).unwrap();
        assert!(matches!(cache.get(&digest), Err(CacheError::Read { .. })));
        cache.put(&digest, b"payload").unwrap();
        assert_eq!(cache.get(&digest).unwrap().unwrap(), b"payload");
    }

    #[test]
    fn the_least_recently_used_entries_go_past_the_bound() {
        let engine = engine();
        let root = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::open(&root.path().join("c"), &engine)
            .unwrap()
            .with_max_bytes(3 * (1000 + HEADER_LEN as u64));
        let digests: Vec<Digest> = (0..5u8).map(|i| Digest::of(&[i])).collect();
        let payload = vec![7u8; 1000];
        let age = |digest: &Digest, seconds: u64| {
            let file = std::fs::File::options()
                .append(true)
                .open(cache.path(digest))
                .unwrap();
            file.set_modified(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(seconds))
                .unwrap();
        };
        for (i, digest) in digests.iter().take(3).enumerate() {
            cache.put(digest, &payload).unwrap();
            age(digest, 1000 + i as u64);
        }
        // Using the oldest makes it the most recent.
        assert!(cache.get(&digests[0]).unwrap().is_some());
        cache.put(&digests[3], &payload).unwrap();
        assert!(
            cache.get(&digests[1]).unwrap().is_none(),
            "least recently used"
        );
        for kept in [0, 2, 3] {
            assert!(cache.get(&digests[kept]).unwrap().is_some(), "{kept}");
        }
    }
}
