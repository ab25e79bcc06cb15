//! A handler version's name: the SHA-256 of its bytes.

use std::fmt;
use std::sync::Arc;

use crate::ids::sha256_hex;

/// The SHA-256 of a handler's `.wasm` bytes, in hex, which names a handler version in
/// logs and events. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digest(Arc<str>);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Arc::from(sha256_hex(bytes)))
    }

    /// The digest in lowercase hex.
    pub fn hex(&self) -> &Arc<str> {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
