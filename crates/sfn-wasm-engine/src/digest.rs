//! A handler version's name: the SHA-256 of its bytes.

use std::fmt;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

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

/// The SHA-256 of `bytes` in lowercase hex (64 digits), for handler digests, pins and
/// task ids.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let mut hex = String::with_capacity(64);
    for byte in Sha256::digest(bytes) {
        let [high, low] = hex_digits(byte);
        hex.push(char::from(high));
        hex.push(char::from(low));
    }
    hex
}

/// Appends `bytes` in lowercase hex (two digits each) to `out`: MACs in text headers,
/// without a `format!` per byte.
pub fn extend_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    for &byte in bytes {
        out.extend_from_slice(&hex_digits(byte));
    }
}

/// The two lowercase hex digits of `byte`.
fn hex_digits(byte: u8) -> [u8; 2] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    [HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 0xf)]]
}
