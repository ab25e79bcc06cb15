//! Names the host gives or checks: activity ARNs, task ids, worker names, digests.
//!
//! A leaf: every layer names things, so nothing here imports from the rest of the crate.

use std::fmt;
use std::sync::Arc;

/// An activity ARN, `arn:PARTITION:states:REGION:ACCOUNT:activity:NAME`, checked once
/// when the config is read: everything that holds one may trust its shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ActivityArn(Arc<str>);

impl ActivityArn {
    /// Checks `text` and keeps it.
    ///
    /// # Errors
    /// What is wrong with it and the shape expected, in words for a config error.
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let ok = parts.len() == 7
            && parts[0] == "arn"
            && parts[1].starts_with("aws")
            && parts[2] == "states"
            && !parts[3].is_empty()
            && parts[4].len() == 12
            && parts[4].bytes().all(|b| b.is_ascii_digit())
            && parts[5] == "activity"
            && !parts[6].is_empty();
        if ok {
            Ok(Self(Arc::from(text)))
        } else {
            Err(format!(
                "{text:?} is not an activity ARN; expected arn:aws:states:REGION:ACCOUNT:activity:NAME"
            ))
        }
    }

    /// The ARN as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The ARN as a shared string (events and metrics labels hold it without copying).
    pub fn shared(&self) -> Arc<str> {
        self.0.clone()
    }
}

impl std::ops::Deref for ActivityArn {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ActivityArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for ActivityArn {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for ActivityArn {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

/// Re-exported from the engine, which names handler versions by it.
pub use sfn_wasm_engine::sha256_hex;

/// A short, stable id for a task, for logs: the first 16 hex digits of the SHA-256 of its
/// token. The token itself is a credential and never leaves the host.
pub fn task_id(token: &str) -> String {
    let mut id = sha256_hex(token.as_bytes());
    id.truncate(16);
    id
}

/// A fresh worker name, `PREFIX:RANDOM` (8 hex digits).
pub fn worker_name(prefix: &str) -> Arc<str> {
    Arc::from(format!("{prefix}:{:08x}", fastrand::u32(..)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_activity_arn_is_checked_once() {
        let arn =
            ActivityArn::parse("arn:aws:states:us-east-1:000000000000:activity:greet").unwrap();
        assert_eq!(arn, "arn:aws:states:us-east-1:000000000000:activity:greet");
        for bad in [
            "nope",
            "arn:aws:states:us-east-1:000000000000:stateMachine:greet",
            "arn:aws:states:us-east-1:123:activity:greet",
            "arn:aws:states::000000000000:activity:greet",
            "arn:aws:states:us-east-1:000000000000:activity:",
        ] {
            let err = ActivityArn::parse(bad).unwrap_err();
            assert!(err.contains("not an activity ARN"), "{bad}: {err}");
        }
    }

    #[test]
    fn task_ids_are_short_and_stable() {
        assert_eq!(task_id("token"), task_id("token"));
        assert_eq!(task_id("token").len(), 16);
        assert_ne!(task_id("token"), task_id("other"));
        assert_eq!(sha256_hex(b"").len(), 64);
    }
}
