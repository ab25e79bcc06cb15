//! The precompiled-artifact cache: compiled handlers on disk, so a restart or a swap back
//! to a known version does not compile again.
//!
//! Entries are keyed by the module's digest and a fingerprint of the engine
//! configuration (wasmtime's compatibility hash, this host's version), so an entry made
//! by another configuration is never looked up. Loading an artifact is `unsafe` in
//! wasmtime (its machine code is trusted), so an entry is only used when it is exactly
//! what this host wrote: each file carries the SHA-256 of its payload, checked before
//! the payload reaches wasmtime, and wasmtime's own header check follows. Anything that
//! does not check out is reported, deleted and rebuilt. The folder is created private
//! (0700), and entries are written to a temporary file and renamed into place, so a
//! crash never leaves half an entry under a real name.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::{Digest, WasmEngine};

const MAGIC: &[u8; 8] = b"SFNWASMC";
const HEADER_LEN: usize = MAGIC.len() + 32;

/// A cache folder for one engine configuration.
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
    engine_key: String,
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
    /// The entry is not what this host wrote (truncated, changed, or another format).
    #[error("cache entry {} is corrupt: {reason}", path.display())]
    Corrupt {
        /// The entry.
        path: PathBuf,
        /// What did not check out.
        reason: &'static str,
    },
}

impl ArtifactCache {
    /// Opens (creating it, private) the cache folder `dir` for `engine`'s configuration.
    ///
    /// # Errors
    /// When the folder cannot be created.
    pub fn open(dir: &Path, engine: &WasmEngine) -> std::io::Result<Self> {
        std::fs::DirBuilder::new().recursive(true).create(dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let mut hasher = DefaultHasher::new();
        engine
            .wasmtime()
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        env!("CARGO_PKG_VERSION").hash(&mut hasher);
        Ok(Self {
            dir: dir.to_owned(),
            engine_key: format!("{:016x}", hasher.finish()),
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the entry for `digest` lives.
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(format!("{digest}-{}.cwasm", self.engine_key))
    }

    /// The verified artifact for `digest`, or `None` if there is no entry.
    ///
    /// # Errors
    /// When an entry exists but cannot be read or does not verify; the caller should
    /// [`remove`](Self::remove) it and rebuild.
    pub fn get(&self, digest: &Digest) -> Result<Option<Vec<u8>>, CacheError> {
        let path = self.path(digest);
        let mut bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CacheError::Read { path, source }),
        };
        let corrupt = |reason| CacheError::Corrupt {
            path: path.clone(),
            reason,
        };
        if bytes.len() < HEADER_LEN || &bytes[..MAGIC.len()] != MAGIC {
            return Err(corrupt("no sfn-wasm-host header"));
        }
        if Sha256::digest(&bytes[HEADER_LEN..])[..] != bytes[MAGIC.len()..HEADER_LEN] {
            return Err(corrupt("the payload does not match its checksum"));
        }
        bytes.drain(..HEADER_LEN);
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
        temp.write_all(&Sha256::digest(artifact))?;
        temp.write_all(artifact)?;
        temp.as_file().sync_all()?;
        temp.persist(&path).map_err(|err| err.error)?;
        Ok(())
    }

    /// Deletes the entry for `digest`, if any.
    pub fn remove(&self, digest: &Digest) {
        let _ = std::fs::remove_file(self.path(digest));
    }
}
