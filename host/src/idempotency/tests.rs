use super::*;
use crate::store::{Durability, FolderStore, JournalStore, Legacy, Versioned, open_journal};
use async_trait::async_trait;

/// A folder store with S3's rules for credentials without `s3:ListBucket` (a read of
/// a missing name is refused, 403 `AccessDenied`) that also pauses inside every call,
/// so that concurrent attempts interleave at their worst.
struct LeastPrivilege(FolderStore);

fn denied() -> StoreError {
    StoreError {
        code: "AccessDenied".into(),
        message: "Access Denied".into(),
    }
}

async fn pause() {
    tokio::time::sleep(Duration::from_millis(2)).await;
}

#[async_trait]
impl Store for LeastPrivilege {
    async fn read(&self, name: &str) -> Result<Option<Versioned>, StoreError> {
        pause().await;
        let found = self.0.read(name).await?;
        pause().await;
        found.map(Some).ok_or_else(denied)
    }
    async fn put(&self, name: &str, data: &[u8]) -> Result<(), StoreError> {
        pause().await;
        self.0.put(name, data).await
    }
    async fn put_if_absent(&self, name: &str, data: &[u8]) -> Result<Claimed, StoreError> {
        pause().await;
        self.0.put_if_absent(name, data).await
    }
    async fn put_if_match(
        &self,
        name: &str,
        data: &[u8],
        version: &Version,
    ) -> Result<Claimed, StoreError> {
        pause().await;
        self.0.put_if_match(name, data, version).await
    }
    async fn delete(&self, _name: &str) -> Result<(), StoreError> {
        // Least privilege leaves s3:DeleteObject out too.
        Err(denied())
    }
}

fn least_privilege(dir: &std::path::Path, claim_for: Duration) -> Arc<ActivityIdempotency> {
    let store: Arc<dyn Store> = Arc::new(LeastPrivilege(FolderStore::open(dir).unwrap()));
    Arc::new(ActivityIdempotency::new(
        store,
        "/orderId".into(),
        Duration::from_secs(60),
        claim_for,
    ))
}

/// How many of `n` concurrent attempts with one key get to run.
async fn runs_of(keys: &Arc<ActivityIdempotency>, input: &str, n: usize) -> Vec<Claim> {
    let attempts: Vec<_> = (0..n)
        .map(|_| {
            let (keys, input) = (keys.clone(), input.to_owned());
            tokio::spawn(async move { keys.look_up("arn:a", &input).await })
        })
        .collect();
    let mut runs = Vec::new();
    for attempt in attempts {
        match attempt.await.unwrap() {
            Lookup::Run(claim) => runs.push(claim),
            Lookup::Duplicate => {}
            other => panic!("an attempt got {other:?}"),
        }
    }
    runs
}

/// Under S3's rules without `s3:ListBucket`, 20 concurrent attempts of one key run the
/// guest once; once that claim has expired (its host died), 20 more run it once again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_attempts_run_once_without_list_bucket_and_after_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let input = r#"{"orderId":"o-1"}"#;
    let keys = least_privilege(dir.path(), Duration::from_secs(60));
    let mut runs = runs_of(&keys, input, 20).await;
    assert_eq!(runs.len(), 1, "one of 20 fresh attempts runs");
    drop(runs.pop());
    // The record expires: a claim whose host died (claims of no duration), an
    // answer given back, an answer past its TTL. Each time, one of 20 takes it over.
    let dead = least_privilege(dir.path(), Duration::ZERO);
    let other = r#"{"orderId":"o-2"}"#;
    let Lookup::Run(died) = dead.look_up("arn:a", other).await else {
        panic!("runs");
    };
    drop(died);
    assert_eq!(runs_of(&keys, other, 20).await.len(), 1, "a dead claim");
    let given_back = r#"{"orderId":"o-3"}"#;
    let Lookup::Run(claim) = keys.look_up("arn:a", given_back).await else {
        panic!("runs");
    };
    assert_eq!(claim.settle(None).await.unwrap(), Settled::Done);
    assert_eq!(runs_of(&keys, given_back, 20).await.len(), 1, "given back");
    let old = r#"{"orderId":"o-4"}"#;
    let short = Arc::new(ActivityIdempotency::new(
        Arc::new(LeastPrivilege(FolderStore::open(dir.path()).unwrap())),
        "/orderId".into(),
        Duration::ZERO,
        Duration::from_secs(60),
    ));
    let Lookup::Run(claim) = short.look_up("arn:a", old).await else {
        panic!("runs");
    };
    claim
        .settle(Some(&Answer::failure("E", "c")))
        .await
        .unwrap();
    assert_eq!(
        runs_of(&short, old, 20).await.len(),
        1,
        "an answer past its TTL"
    );
    // Live claims: one run, the others are duplicates; then its answer is stored.
    let mut runs = runs_of(&keys, input, 20).await;
    assert!(runs.is_empty(), "the first claim still holds the key");
    let dir = tempfile::tempdir().unwrap();
    let keys = least_privilege(dir.path(), Duration::from_secs(60));
    runs = runs_of(&keys, input, 20).await;
    assert_eq!(runs.len(), 1);
    let answer = Answer::Success {
        output: "{}".into(),
    };
    assert_eq!(
        runs.pop().unwrap().settle(Some(&answer)).await.unwrap(),
        Settled::Done
    );
    assert!(matches!(keys.look_up("arn:a", input).await, Lookup::Stored(a) if a == answer));
}

/// An attempt whose claim expired and was taken over changes nothing when it settles:
/// the key stays with the attempt that holds it now. Claims written (S3's rules) or held
/// in memory (a folder).
#[tokio::test]
async fn settling_a_claim_taken_over_leaves_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let held = tempfile::tempdir().unwrap();
    for keys in [
        least_privilege(dir.path(), Duration::ZERO),
        Arc::new(held_here(
            held.path(),
            Duration::from_secs(60),
            Duration::ZERO,
        )),
    ] {
        let input = r#"{"orderId":"o-1"}"#;
        let Lookup::Run(first) = keys.look_up("arn:a", input).await else {
            panic!("runs");
        };
        let Lookup::Run(second) = keys.look_up("arn:a", input).await else {
            panic!("the expired claim is taken over");
        };
        let late = Answer::failure("Late", "from the first attempt");
        assert_eq!(first.settle(Some(&late)).await.unwrap(), Settled::TakenOver);
        let mine = Answer::Success {
            output: r#"{"n":2}"#.into(),
        };
        assert_eq!(second.settle(Some(&mine)).await.unwrap(), Settled::Done);
        assert!(matches!(keys.look_up("arn:a", input).await, Lookup::Stored(a) if a == mine));
    }
}

#[tokio::test]
async fn keys_are_json_values_type_included() {
    for (_dir, keys) in both(Duration::from_secs(60), Duration::from_secs(60)) {
        let Lookup::Run(_number) = keys.look_up("arn:a", r#"{"orderId":1}"#).await else {
            panic!("runs");
        };
        assert!(
            matches!(
                keys.look_up("arn:a", r#"{"orderId":"1"}"#).await,
                Lookup::Run(_)
            ),
            "the string \"1\" is another key than the number 1"
        );
        // Members in another order are the same value.
        let Lookup::Run(_object) = keys.look_up("arn:a", r#"{"orderId":{"a":1,"b":2}}"#).await
        else {
            panic!("runs");
        };
        assert!(matches!(
            keys.look_up("arn:a", r#"{"orderId":{"b":2,"a":1}}"#).await,
            Lookup::Duplicate
        ));
    }
}

#[tokio::test]
async fn a_stored_answer_is_only_for_an_input_that_matches_where_validated() {
    for (_dir, keys) in both(Duration::from_secs(60), Duration::from_secs(60)) {
        let keys = keys.validating(vec!["/amount".into(), "/currency".into()]);
        let input = r#"{"orderId":"o-1","amount":10,"currency":"EUR","note":"a"}"#;
        let Lookup::Run(claim) = keys.look_up("arn:a", input).await else {
            panic!("runs");
        };
        // While it runs, another input under the key is refused, not a duplicate.
        let other = r#"{"orderId":"o-1","amount":11,"currency":"EUR"}"#;
        assert!(
            matches!(keys.look_up("arn:a", other).await, Lookup::Mismatch(p) if p == "/amount")
        );
        let answer = Answer::Success {
            output: "{}".into(),
        };
        claim.settle(Some(&answer)).await.unwrap();
        // What is not validated may differ.
        let same = r#"{"orderId":"o-1","currency":"EUR","amount":10,"note":"b"}"#;
        assert!(matches!(keys.look_up("arn:a", same).await, Lookup::Stored(a) if a == answer));
        let both = r#"{"orderId":"o-1","amount":"10"}"#;
        assert!(matches!(
            keys.look_up("arn:a", both).await,
            Lookup::Mismatch(p) if p == "/amount, /currency"
        ));
    }
}

/// A journal in `dir`, as `serve` opens a folder store: its expired records deleted.
fn journal(dir: &std::path::Path) -> Arc<JournalStore> {
    Arc::new(
        open_journal(
            dir,
            Durability::PowerLoss,
            Legacy::Leave,
            ActivityIdempotency::KEEPING,
        )
        .unwrap(),
    )
}

/// Claims held in this process's memory over a journal in `dir`, as `serve` opens a
/// folder store.
fn held_here(dir: &std::path::Path, ttl: Duration, claim_for: Duration) -> ActivityIdempotency {
    let store: Arc<dyn Store> = journal(dir);
    ActivityIdempotency::new(store, "/orderId".into(), ttl, claim_for)
        .holding_claims_here(dir, "arn:a")
        .unwrap()
}

/// Both ways of holding claims, each over a folder of its own: written to the store
/// (S3's way, here a folder of files), and held in memory over a journal (a folder
/// store, as `serve` opens it).
fn both(ttl: Duration, claim_for: Duration) -> Vec<(tempfile::TempDir, ActivityIdempotency)> {
    let written = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(FolderStore::open(written.path()).unwrap());
    let in_store = ActivityIdempotency::new(store, "/orderId".into(), ttl, claim_for);
    let held = tempfile::tempdir().unwrap();
    let here = held_here(held.path(), ttl, claim_for);
    vec![(written, in_store), (held, here)]
}

#[tokio::test]
async fn one_attempt_runs_per_key_and_later_ones_get_its_answer() {
    for (_dir, keys) in both(Duration::from_secs(60), Duration::from_secs(60)) {
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
}

#[tokio::test]
async fn host_failures_give_the_key_back_and_dead_claims_and_old_answers_expire() {
    for (_dir, keys) in both(Duration::ZERO, Duration::ZERO) {
        let input = r#"{"orderId":"o-1"}"#;
        let Lookup::Run(claim) = keys.look_up("arn:a", input).await else {
            panic!("runs");
        };
        assert_eq!(claim.settle(None).await.unwrap(), Settled::Done);
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

/// A folder store is a journal (one database, group commits): of 20 concurrent
/// attempts of one key, one runs, and its answer is what a later attempt gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_attempts_run_once_on_a_journal() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = journal(dir.path());
    let keys = Arc::new(ActivityIdempotency::new(
        store,
        "/orderId".into(),
        Duration::from_secs(60),
        Duration::from_secs(60),
    ));
    let input = r#"{"orderId":"o-1"}"#;
    let mut runs = runs_of(&keys, input, 20).await;
    assert_eq!(runs.len(), 1, "one of 20 attempts runs");
    let claim = runs.pop().unwrap();
    let answer = Answer::Success {
        output: r#"{"charged":true}"#.into(),
    };
    assert_eq!(claim.settle(Some(&answer)).await.unwrap(), Settled::Done);
    match keys.look_up("arn:a", input).await {
        Lookup::Stored(stored) => assert_eq!(stored, answer),
        other => panic!("a later attempt got {other:?}"),
    }
}

/// Claims held in memory are not written: while one of 20 concurrent attempts of a key
/// runs, the journal holds nothing, and its answer is the one write. A claim an older
/// version wrote to the journal still holds its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_held_in_memory_run_once_and_only_the_answer_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let journal = journal(dir.path());
    let minute = Duration::from_secs(60);
    let keys = Arc::new(
        ActivityIdempotency::new(journal.clone(), "/orderId".into(), minute, minute)
            .holding_claims_here(dir.path(), "arn:a")
            .unwrap(),
    );
    let input = r#"{"orderId":"o-1"}"#;
    let mut runs = runs_of(&keys, input, 20).await;
    assert_eq!(runs.len(), 1, "one of 20 attempts runs");
    assert!(
        journal.writes().list().unwrap().is_empty(),
        "a claim held in memory is not written"
    );
    let answer = Answer::Success {
        output: r#"{"charged":true}"#.into(),
    };
    let claim = runs.pop().unwrap();
    assert_eq!(claim.settle(Some(&answer)).await.unwrap(), Settled::Done);
    assert_eq!(journal.writes().list().unwrap().len(), 1, "the answer");
    assert!(matches!(keys.look_up("arn:a", input).await, Lookup::Stored(a) if a == answer));
    let other = r#"{"orderId":"o-2"}"#;
    let older = ActivityIdempotency::new(journal.clone(), "/orderId".into(), minute, minute);
    let Lookup::Run(_written) = older.look_up("arn:a", other).await else {
        panic!("runs");
    };
    assert!(matches!(
        keys.look_up("arn:a", other).await,
        Lookup::Duplicate
    ));
}

/// One process holds an activity's claims in a folder: a second holder of the same
/// activity's is refused with a message that names the folder, another activity's may
/// share it, and a holder that is gone lets go.
#[test]
fn a_second_holder_of_an_activitys_claims_in_a_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let journal: Arc<dyn Store> = journal(dir.path());
    let minute = Duration::from_secs(60);
    let holder = |arn: &str| {
        ActivityIdempotency::new(journal.clone(), "/orderId".into(), minute, minute)
            .holding_claims_here(dir.path(), arn)
    };
    let first = holder("arn:a").unwrap();
    let err = holder("arn:a").err().expect("a second holder is refused");
    assert_eq!(err.code, "InUse");
    assert!(
        err.message.contains(&dir.path().display().to_string()),
        "{err}"
    );
    let _other = holder("arn:b").unwrap();
    drop(first);
    let _again = holder("arn:a").unwrap();
}

/// A store that reads nothing and refuses every write.
struct Refusing;

#[async_trait]
impl Store for Refusing {
    async fn read(&self, _name: &str) -> Result<Option<Versioned>, StoreError> {
        Ok(None)
    }
    async fn put(&self, _name: &str, _data: &[u8]) -> Result<(), StoreError> {
        Err(denied())
    }
    async fn put_if_absent(&self, _name: &str, _data: &[u8]) -> Result<Claimed, StoreError> {
        Err(denied())
    }
    async fn put_if_match(
        &self,
        _name: &str,
        _data: &[u8],
        _version: &Version,
    ) -> Result<Claimed, StoreError> {
        Err(denied())
    }
    async fn delete(&self, _name: &str) -> Result<(), StoreError> {
        Err(denied())
    }
}

/// A claim held in memory whose answer could not be written holds its key until it
/// expires, as a written claim would: a retry does not run the guest again at once.
#[tokio::test]
async fn a_claim_held_in_memory_whose_answer_is_refused_holds_until_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let minute = Duration::from_secs(60);
    let keys = ActivityIdempotency::new(Arc::new(Refusing), "/orderId".into(), minute, minute)
        .holding_claims_here(dir.path(), "arn:a")
        .unwrap();
    let input = r#"{"orderId":"o-1"}"#;
    let Lookup::Run(claim) = keys.look_up("arn:a", input).await else {
        panic!("runs");
    };
    let answer = Answer::Success {
        output: "{}".into(),
    };
    let err = claim.settle(Some(&answer)).await.unwrap_err();
    assert_eq!(err.code, "AccessDenied");
    assert!(matches!(
        keys.look_up("arn:a", input).await,
        Lookup::Duplicate
    ));
}

/// An answer recovered from the outbox holds its key in memory from the start until it
/// settles; then its answer is stored.
#[tokio::test]
async fn a_resumed_claim_holds_its_key_until_it_settles() {
    let dir = tempfile::tempdir().unwrap();
    let minute = Duration::from_secs(60);
    let input = r#"{"orderId":"o-1"}"#;
    let keys = held_here(dir.path(), minute, minute);
    let Lookup::Run(claim) = keys.look_up("arn:a", input).await else {
        panic!("runs");
    };
    let held = claim.to_ref();
    // The host stops with the answer in its outbox.
    drop((claim, keys));
    let keys = held_here(dir.path(), minute, minute);
    let resumed = keys.resume(held);
    assert!(matches!(
        keys.look_up("arn:a", input).await,
        Lookup::Duplicate
    ));
    let answer = Answer::Success {
        output: r#"{"n":1}"#.into(),
    };
    assert_eq!(resumed.settle(Some(&answer)).await.unwrap(), Settled::Done);
    assert!(matches!(keys.look_up("arn:a", input).await, Lookup::Stored(a) if a == answer));
}

/// A stored answer's record, stored at `stored_at_ms` to expire at `expires_at_ms`.
fn done_record(stored_at_ms: u64, expires_at_ms: u64) -> Vec<u8> {
    serde_json::to_vec(&Record::Done {
        stored_at_ms,
        expires_at_ms: Some(expires_at_ms),
        answer: StoredAnswer::Success {
            output: "{}".into(),
        },
        validated: Vec::new(),
    })
    .unwrap()
}

/// A stored answer is sent again for the TTL it was stored with, even once the config
/// gives a longer one, and for a shorter one set later; a folder store then deletes it:
/// its journal does not grow with every key it ever saw.
#[tokio::test]
async fn an_answer_is_kept_for_the_ttl_it_was_stored_with_then_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let minute = Duration::from_secs(60);
    let day = Duration::from_secs(86_400);
    let keys = held_here(dir.path(), day, minute);
    let input = r#"{"orderId":"o-1"}"#;
    let Lookup::Run(claim) = keys.look_up("arn:a", input).await else {
        panic!("the first attempt runs");
    };
    let answer = Answer::Success {
        output: r#"{"charged":true}"#.into(),
    };
    let before = now_ms();
    claim.settle(Some(&answer)).await.unwrap();
    let name = keys
        .record_name("arn:a", &serde_json::from_str(input).unwrap())
        .unwrap();
    let stored = keys.store.get(&name).await.unwrap().unwrap();
    let expires = ActivityIdempotency::expires_at_ms(&stored).unwrap();
    assert!((before + millis(day)..=now_ms() + millis(day)).contains(&expires));
    assert!(matches!(
        keys.look_up("arn:a", input).await,
        Lookup::Stored(_)
    ));
    // Stored with a TTL that has passed: not sent again, whatever the TTL is now.
    let now = now_ms();
    keys.store
        .put(&name, &done_record(now, now - 1))
        .await
        .unwrap();
    let Lookup::Run(again) = keys.look_up("arn:a", input).await else {
        panic!("an answer past the TTL it was stored with is not sent again");
    };
    again.settle(None).await.unwrap();
    // Stored for a day two seconds ago, looked up with a TTL of one second: not sent.
    keys.store
        .put(&name, &done_record(now - 2_000, now + millis(day)))
        .await
        .unwrap();
    let short = ActivityIdempotency::new(
        keys.store.clone(),
        "/orderId".into(),
        Duration::from_secs(1),
        minute,
    );
    assert!(matches!(
        short.look_up("arn:a", input).await,
        Lookup::Run(_)
    ));
    // Expired again, then deleted by the next start's look (after its first write;
    // a second write returns once that look is done).
    keys.store
        .put(&name, &done_record(now, now - 1))
        .await
        .unwrap();
    drop((keys, short));
    let next = held_here(dir.path(), minute, minute);
    for order in ["o-2", "o-3"] {
        let input = format!(r#"{{"orderId":"{order}"}}"#);
        let Lookup::Run(claim) = next.look_up("arn:a", &input).await else {
            panic!("another key runs");
        };
        claim.settle(Some(&answer)).await.unwrap();
    }
    assert_eq!(
        next.store.get(&name).await.unwrap(),
        None,
        "deleted once expired"
    );
    let o2 = next
        .record_name("arn:a", &serde_json::json!({"orderId": "o-2"}))
        .unwrap();
    assert!(
        next.store.get(&o2).await.unwrap().is_some(),
        "the rest kept"
    );
}

/// What an older version stored notes no expiry: it is kept for the longest TTL a config
/// may give; what is not a record is kept.
#[test]
fn an_older_versions_answer_is_kept_for_the_longest_ttl() {
    let old = Record::Done {
        stored_at_ms: 1_000,
        expires_at_ms: None,
        answer: StoredAnswer::Success {
            output: "{}".into(),
        },
        validated: Vec::new(),
    };
    let old = serde_json::to_vec(&old).unwrap();
    assert_eq!(
        ActivityIdempotency::expires_at_ms(&old),
        Some(1_000 + millis(LONGEST_TTL))
    );
    assert_eq!(ActivityIdempotency::expires_at_ms(b"not a record"), None);
}
