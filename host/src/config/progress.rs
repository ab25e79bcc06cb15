//! `[activity.progress]` and `[activity.idempotency]`: what is kept for a task's key
//! (its checkpoints, its answer), where.

use std::path::Path;

use serde::Deserialize;

use super::checks::{Problem, at};
use crate::idempotency::LONGEST_TTL;
use crate::progress::check_pointer;
use crate::store::{Durability, StoreLocation};

/// Checks the `key` and `store` of the table `table`: a JSON pointer, and an S3 prefix
/// or a folder (not a file); a relative folder resolves against `base`.
fn keyed_store(table: &str, key: &str, store: &str, base: &Path) -> Result<StoreLocation, Problem> {
    check_pointer(key).map_err(|message| (format!("{table}.key"), message))?;
    let at_store = |message| (format!("{table}.store"), message);
    let store = StoreLocation::parse(store, base).map_err(at_store)?;
    if let StoreLocation::Folder(dir) = &store
        && dir.exists()
        && !dir.is_dir()
    {
        return Err(at_store(format!(
            "{} is not a folder: name a folder (it is created if missing) or `s3://bucket/prefix`",
            dir.display()
        )));
    }
    Ok(store)
}

/// `[activity.progress]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProgress {
    key: String,
    store: String,
    #[serde(default)]
    keep_after_success: bool,
}

/// `[activity.progress]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressConfig {
    /// `key`: a JSON pointer into the task input (`/executionId`) whose value names the
    /// work a task belongs to.
    pub key: String,
    /// `store`: an S3 prefix (a fleet shares it) or a folder (one host only).
    pub store: StoreLocation,
    /// `keep_after_success`: a task's checkpoint outlives its success (default: deleted).
    pub keep_after_success: bool,
}

impl ProgressConfig {
    /// Checks `[activity.progress]`; a relative folder resolves against `base`.
    pub(super) fn resolve(raw: &RawProgress, base: &Path) -> Result<Self, Problem> {
        let store = keyed_store("progress", &raw.key, &raw.store, base)?;
        Ok(Self {
            key: raw.key.clone(),
            store,
            keep_after_success: raw.keep_after_success,
        })
    }
}

/// `[activity.idempotency]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdempotency {
    key: String,
    store: String,
    #[serde(default = "default_ttl")]
    ttl_seconds: f64,
    #[serde(default)]
    validate: Vec<String>,
    durability: Option<Durability>,
}

fn default_ttl() -> f64 {
    86_400.0
}

/// `[activity.idempotency]`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct IdempotencyConfig {
    /// `key`: a JSON pointer into the task input (`/orderId`); tasks with the same value
    /// get the same answer.
    pub key: String,
    /// `store`: an S3 prefix (a fleet shares it) or a folder (one host only).
    pub store: StoreLocation,
    /// `ttl_seconds`: how long a stored answer is sent again (default a day, at most
    /// [`LONGEST_TTL`]); an answer keeps the TTL it was stored with, or a shorter one
    /// set later.
    pub ttl: std::time::Duration,
    /// `validate`: JSON pointers to the parts of the input that must match the input the
    /// answer was stored for (default none: the key alone decides).
    pub validate: Vec<String>,
    /// `durability`: what a folder store's answers survive (default: power loss); its
    /// claims are held in the host's memory.
    pub durability: Durability,
}

impl IdempotencyConfig {
    /// Checks `[activity.idempotency]`; a relative folder resolves against `base`.
    pub(super) fn resolve(raw: &RawIdempotency, base: &Path) -> Result<Self, Problem> {
        let store = keyed_store("idempotency", &raw.key, &raw.store, base)?;
        let ttl = super::checks::seconds_within(raw.ttl_seconds, 1.0, LONGEST_TTL.as_secs_f64())
            .map_err(at("idempotency.ttl_seconds"))?;
        for (index, pointer) in raw.validate.iter().enumerate() {
            check_pointer(pointer)
                .map_err(|message| (format!("idempotency.validate[{index}]"), message))?;
        }
        if raw.durability.is_some() && matches!(store, StoreLocation::S3 { .. }) {
            return Err((
                "idempotency.durability".into(),
                "is for a folder store: S3 answers a write once it is durable; remove it".into(),
            ));
        }
        Ok(Self {
            key: raw.key.clone(),
            store,
            ttl,
            validate: raw.validate.clone(),
            durability: raw.durability.unwrap_or_default(),
        })
    }
}
