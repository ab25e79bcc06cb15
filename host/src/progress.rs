//! Progress kept across attempts (`[activity.progress]`): a task's checkpoints, saved in
//! a [`Store`] under its progress key, a value taken from the task input by a JSON
//! pointer (the execution's id, passed by the state). A retried task, a task a stopped
//! host left, or any later attempt of the same work reads the last checkpoint and goes on
//! from there.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use sfn_wasm_engine::{Capability, Checkpoints, InstanceBuilder};

use crate::ids::sha256_hex;
use crate::store::{Store, StoreError};

/// An activity's progress settings: one per activity that keeps progress.
pub struct ActivityProgress {
    store: Arc<dyn Store>,
    pointer: String,
    keep_after_success: bool,
}

impl ActivityProgress {
    /// Progress in `store`, keyed by the task input's value at `pointer` (a JSON pointer,
    /// RFC 6901). `keep_after_success`: a task's checkpoint outlives its success.
    pub fn new(store: Arc<dyn Store>, pointer: String, keep_after_success: bool) -> Self {
        Self {
            store,
            pointer,
            keep_after_success,
        }
    }

    /// Whether a checkpoint stays after its task succeeded.
    pub fn keep_after_success(&self) -> bool {
        self.keep_after_success
    }

    /// The progress of the task of `activity_arn` whose input is `input`; `None` when the
    /// input is not JSON or lacks the key (logged at debug, with `task_id`).
    pub fn for_task(&self, activity_arn: &str, task_id: &str, input: &str) -> Option<TaskProgress> {
        let Some(key) = key_of(input, &self.pointer) else {
            tracing::debug!(
                activity = activity_arn,
                task_id,
                pointer = %self.pointer,
                "the task input has no progress key; checkpoints are unavailable to this task"
            );
            return None;
        };
        // Named by a digest: keys are user data (ARNs, ids with any characters), and two
        // activities keep apart what they save under one execution's id.
        let name = format!(
            "checkpoint-{}",
            sha256_hex(format!("{activity_arn}\n{key}").as_bytes())
        );
        Some(TaskProgress {
            store: self.store.clone(),
            name: name.into(),
            seen: Arc::new(AtomicBool::new(false)),
        })
    }
}

/// The value at `pointer` in the JSON `input`, as a key: a string as it is, any other
/// value but `null` as its JSON text.
pub fn key_of(input: &str, pointer: &str) -> Option<String> {
    let input: serde_json::Value = serde_json::from_str(input).ok()?;
    match input.pointer(pointer)? {
        serde_json::Value::Null => None,
        serde_json::Value::String(key) => Some(key.clone()),
        other => Some(other.to_string()),
    }
}

/// Checks a JSON pointer (RFC 6901): empty, or `/`-separated tokens where `~` is only
/// `~0` or `~1`.
///
/// # Errors
/// The message a user reads.
pub fn check_pointer(pointer: &str) -> Result<(), String> {
    if !pointer.is_empty() && !pointer.starts_with('/') {
        return Err(format!(
            "`{pointer}` is not a JSON pointer: it starts with `/`, as in `/executionId`"
        ));
    }
    let mut chars = pointer.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err(format!(
                "`{pointer}` is not a JSON pointer: `~` is written `~0` and `/` in a name `~1`"
            ));
        }
    }
    Ok(())
}

/// One task's progress: where its checkpoints go. Cheap to clone; clones share whether
/// the task has seen a checkpoint.
#[derive(Clone)]
pub struct TaskProgress {
    store: Arc<dyn Store>,
    name: Arc<str>,
    /// A checkpoint was saved, or one was found: there may be one to delete.
    seen: Arc<AtomicBool>,
}

impl std::fmt::Debug for TaskProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskProgress")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl TaskProgress {
    /// Saves `data` as the task's checkpoint (durably, before it returns).
    ///
    /// # Errors
    /// [`StoreError`] when the store refused; the previous checkpoint stands.
    pub async fn save(&self, data: &str) -> Result<(), StoreError> {
        // Before the write: a write that fails half way may still leave one.
        self.seen.store(true, Ordering::Relaxed);
        self.store.put(&self.name, data.as_bytes()).await
    }

    /// The last checkpoint saved under the task's key, if any.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn load(&self) -> Result<Option<String>, StoreError> {
        let Some(data) = self.store.get(&self.name).await? else {
            return Ok(None);
        };
        self.seen.store(true, Ordering::Relaxed);
        String::from_utf8(data).map(Some).map_err(|_| StoreError {
            code: "Malformed".into(),
            message: "the stored checkpoint is not UTF-8 text".into(),
        })
    }

    /// Whether the task saved a checkpoint or found one: whether there may be one to
    /// delete when it succeeds. A handler that never asked costs no store call.
    pub fn seen(&self) -> bool {
        self.seen.load(Ordering::Relaxed)
    }

    /// Deletes the task's checkpoint (its work is done).
    ///
    /// # Errors
    /// [`StoreError`] when the store refused.
    pub async fn clear(&self) -> Result<(), StoreError> {
        self.store.delete(&self.name).await
    }
}

/// A task's progress is its instance's checkpoint store.
impl Capability for TaskProgress {
    fn prepare(&self, instance: &mut InstanceBuilder<'_>) -> Result<(), String> {
        instance.set_checkpoints(Arc::new(self.clone()));
        Ok(())
    }
}

#[async_trait]
impl Checkpoints for TaskProgress {
    async fn save(&self, data: &str) -> Result<(), String> {
        TaskProgress::save(self, data)
            .await
            .map_err(|err| err.to_string())
    }

    async fn load(&self) -> Result<Option<String>, String> {
        TaskProgress::load(self).await.map_err(|err| {
            let hint = if err.code == "AccessDenied" || err.code == "Forbidden" {
                " (S3 answers a missing checkpoint with 403 to credentials without s3:ListBucket on the store's bucket: see the `progress-store` policy in docs/src/permissions.md; `check --remote` probes it)"
            } else {
                ""
            };
            format!("{err}{hint}")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FolderStore;

    #[test]
    fn keys_come_from_the_input_by_json_pointer() {
        let input = r#"{"executionId":"arn:aws:states:x:1:execution:m:e","n":7,"nil":null,"a/b":{"c":true}}"#;
        assert_eq!(
            key_of(input, "/executionId").as_deref(),
            Some("arn:aws:states:x:1:execution:m:e")
        );
        assert_eq!(key_of(input, "/n").as_deref(), Some("7"));
        assert_eq!(key_of(input, "/a~1b/c").as_deref(), Some("true"));
        assert_eq!(key_of(input, "/nil"), None);
        assert_eq!(key_of(input, "/missing"), None);
        assert_eq!(key_of("not json", "/x"), None);
        assert!(check_pointer("/executionId").is_ok());
        assert!(check_pointer("").is_ok());
        assert!(check_pointer("/a~1b/~0c").is_ok());
        assert!(
            check_pointer("executionId")
                .unwrap_err()
                .contains("starts with `/`")
        );
        assert!(check_pointer("/a~2").is_err());
    }

    #[tokio::test]
    async fn a_later_attempt_reads_the_last_checkpoint_and_activities_keep_apart() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(FolderStore::open(dir.path()).unwrap());
        let progress = ActivityProgress::new(store, "/executionId".into(), false);
        let input = r#"{"executionId":"e-1"}"#;
        let first = progress.for_task("arn:a", "t1", input).unwrap();
        assert_eq!(first.load().await.unwrap(), None);
        first.save("step 4").await.unwrap();
        first.save("step 5").await.unwrap();
        assert!(first.seen());
        let retry = progress.for_task("arn:a", "t2", input).unwrap();
        assert!(!retry.seen(), "nothing seen yet: nothing to delete");
        assert_eq!(retry.load().await.unwrap().as_deref(), Some("step 5"));
        assert!(retry.seen());
        let other_activity = progress.for_task("arn:b", "t3", input).unwrap();
        assert_eq!(other_activity.load().await.unwrap(), None);
        retry.clear().await.unwrap();
        assert_eq!(first.load().await.unwrap(), None);
        assert!(progress.for_task("arn:a", "t4", "{}").is_none());
    }
}
