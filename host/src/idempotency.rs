//! Idempotent tasks (`[activity.idempotency]`): tasks whose inputs carry the same key get
//! the same answer, and the guest runs once per key.
//!
//! Before a task runs, its key is looked up in a [`Store`]: a stored answer (younger than
//! the TTL) is sent again without running the guest; a live claim means another attempt
//! of the same key is running now ([`Lookup::Duplicate`], answered with the retriable
//! `SfnWasmHost.Duplicate`); otherwise the task claims the key with a conditional write
//! (S3 `If-None-Match: *`, a file opened `O_EXCL`) and runs. When its answer settles,
//! [`Claim::settle`] stores it, or, for a host failure or an answer Step Functions did not
//! take, gives the key back so that a retry may run. A claim whose host died expires
//! after the task's own deadline and the answer's retry window.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::ids::sha256_hex;
use crate::outcome::Answer;
use crate::store::{Claimed, Store, StoreError};

/// An activity's idempotency settings: one per activity that has them.
pub struct ActivityIdempotency {
    store: Arc<dyn Store>,
    pointer: String,
    ttl: Duration,
    claim_for: Duration,
}

/// What a task is to do about its key.
pub enum Lookup {
    /// No key in the input: run as usual, nothing stored.
    NoKey,
    /// The key is this task's: run, then [`Claim::settle`].
    Run(Claim),
    /// An earlier attempt with the key was answered: send this, run nothing.
    Stored(Answer),
    /// Another attempt with the key is running: answer `SfnWasmHost.Duplicate`.
    Duplicate,
    /// The store could not be read or written: run as usual, nothing stored.
    Unavailable(StoreError),
}

/// A key this task holds until its answer settles.
pub struct Claim {
    store: Arc<dyn Store>,
    name: String,
}

/// What is stored under a key.
#[derive(Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum Record {
    /// An attempt holds the key until `expires_at_ms` (ms since the Unix epoch).
    Running { expires_at_ms: u64 },
    /// The answer Step Functions accepted, at `stored_at_ms`.
    Done {
        stored_at_ms: u64,
        answer: StoredAnswer,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
enum StoredAnswer {
    Success { output: String },
    Failure { error: String, cause: String },
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl ActivityIdempotency {
    /// Answers kept in `store` for `ttl`, keyed by the task input's value at `pointer`
    /// (a JSON pointer). A claim lasts `claim_for`: the longest a task can take to be
    /// answered (its deadline and the answer's retry window), after which a host that
    /// died holding it is taken to be gone.
    pub fn new(store: Arc<dyn Store>, pointer: String, ttl: Duration, claim_for: Duration) -> Self {
        Self {
            store,
            pointer,
            ttl,
            claim_for,
        }
    }

    /// What the task of `activity_arn` with `input` is to do.
    pub async fn look_up(&self, activity_arn: &str, input: &str) -> Lookup {
        let Some(key) = crate::progress::key_of(input, &self.pointer) else {
            return Lookup::NoKey;
        };
        let name = format!(
            "answer-{}",
            sha256_hex(format!("{activity_arn}\n{key}").as_bytes())
        );
        // Twice at most: a claim that loses a race reads what won it.
        for _ in 0..2 {
            match self.store.get(&name).await {
                Err(err) => return Lookup::Unavailable(err),
                Ok(Some(data)) => match serde_json::from_slice::<Record>(&data) {
                    Ok(Record::Done {
                        stored_at_ms,
                        answer,
                    }) if now_ms().saturating_sub(stored_at_ms) < millis(self.ttl) => {
                        return Lookup::Stored(match answer {
                            StoredAnswer::Success { output } => Answer::Success { output },
                            StoredAnswer::Failure { error, cause } => {
                                Answer::Failure { error, cause }
                            }
                        });
                    }
                    Ok(Record::Running { expires_at_ms }) if now_ms() < expires_at_ms => {
                        return Lookup::Duplicate;
                    }
                    // Expired (an answer past its TTL, a claim whose host died) or not
                    // ours to read: the key is free again.
                    _ => {
                        if let Err(err) = self.store.delete(&name).await {
                            return Lookup::Unavailable(err);
                        }
                    }
                },
                Ok(None) => {}
            }
            let claim = Record::Running {
                expires_at_ms: now_ms().saturating_add(millis(self.claim_for)),
            };
            let data = serde_json::to_vec(&claim).unwrap_or_default();
            match self.store.put_if_absent(&name, &data).await {
                Ok(Claimed::Yes) => {
                    return Lookup::Run(Claim {
                        store: self.store.clone(),
                        name,
                    });
                }
                Ok(Claimed::AlreadyTaken) => {}
                Err(err) => return Lookup::Unavailable(err),
            }
        }
        Lookup::Duplicate
    }
}

impl Claim {
    /// Stores `answer` (the one Step Functions accepted from the guest) for later
    /// attempts with the key, or with `None` (a host failure, or no answer taken) gives
    /// the key back.
    ///
    /// # Errors
    /// [`StoreError`] when the store refused; the claim then expires by itself.
    pub async fn settle(self, answer: Option<&Answer>) -> Result<(), StoreError> {
        let Some(answer) = answer else {
            return self.store.delete(&self.name).await;
        };
        let answer = match answer {
            Answer::Success { output } => StoredAnswer::Success {
                output: output.clone(),
            },
            Answer::Failure { error, cause } => StoredAnswer::Failure {
                error: error.clone(),
                cause: cause.clone(),
            },
        };
        let record = Record::Done {
            stored_at_ms: now_ms(),
            answer,
        };
        let data = serde_json::to_vec(&record).unwrap_or_default();
        self.store.put(&self.name, &data).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FolderStore;

    fn idempotency(
        dir: &std::path::Path,
        ttl: Duration,
        claim_for: Duration,
    ) -> ActivityIdempotency {
        let store: Arc<dyn Store> = Arc::new(FolderStore::open(dir).unwrap());
        ActivityIdempotency::new(store, "/orderId".into(), ttl, claim_for)
    }

    #[tokio::test]
    async fn one_attempt_runs_per_key_and_later_ones_get_its_answer() {
        let dir = tempfile::tempdir().unwrap();
        let keys = idempotency(dir.path(), Duration::from_secs(60), Duration::from_secs(60));
        let input = r#"{"orderId":"o-1"}"#;
        let Lookup::Run(claim) = keys.look_up("arn:a", input).await else {
            panic!("the first attempt runs");
        };
        assert!(matches!(
            keys.look_up("arn:a", input).await,
            Lookup::Duplicate
        ));
        // Another activity, or another key, is another piece of work.
        assert!(matches!(keys.look_up("arn:b", input).await, Lookup::Run(_)));
        assert!(matches!(
            keys.look_up("arn:a", r#"{"orderId":"o-2"}"#).await,
            Lookup::Run(_)
        ));
        assert!(matches!(keys.look_up("arn:a", "{}").await, Lookup::NoKey));
        let answer = Answer::Success {
            output: r#"{"n":1}"#.into(),
        };
        claim.settle(Some(&answer)).await.unwrap();
        let Lookup::Stored(stored) = keys.look_up("arn:a", input).await else {
            panic!("a later attempt gets the stored answer");
        };
        assert_eq!(stored, answer);
    }

    #[tokio::test]
    async fn host_failures_give_the_key_back_and_dead_claims_and_old_answers_expire() {
        let dir = tempfile::tempdir().unwrap();
        let keys = idempotency(dir.path(), Duration::ZERO, Duration::ZERO);
        let input = r#"{"orderId":"o-1"}"#;
        let Lookup::Run(claim) = keys.look_up("arn:a", input).await else {
            panic!("runs");
        };
        claim.settle(None).await.unwrap();
        // Given back: the next attempt runs. Its claim expires at once (claim_for = 0),
        // as one whose host died does, so the one after runs too.
        let Lookup::Run(claim) = keys.look_up("arn:a", input).await else {
            panic!("runs again");
        };
        let Lookup::Run(_) = keys.look_up("arn:a", input).await else {
            panic!("an expired claim is taken over");
        };
        // An answer past its TTL (0 here) is not sent again.
        claim
            .settle(Some(&Answer::failure("E", "c")))
            .await
            .unwrap();
        assert!(matches!(keys.look_up("arn:a", input).await, Lookup::Run(_)));
    }
}
