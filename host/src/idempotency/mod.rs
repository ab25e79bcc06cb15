//! Idempotent tasks (`[activity.idempotency]`): tasks whose inputs carry the same key get
//! the same answer, and the guest runs once per key.
//!
//! A task first claims its key with a conditional create (S3 `If-None-Match: *`, a file
//! linked to its name only if none is there), so that the store is never asked for a
//! key it does not hold: S3 answers such a read with 403 to credentials without
//! `s3:ListBucket`, which least-privilege policies leave out. Only when the claim finds
//! a record is it read: a stored answer (younger than the TTL) is sent again without
//! running the guest ([`Lookup::Stored`]); a live claim means another attempt of the key
//! is running now ([`Lookup::Duplicate`], answered with the retriable
//! `SfnWasmHost.Duplicate`); an expired record (an answer past its TTL, a claim whose host
//! died, a record given back) is taken over by a write conditional on the version read
//! (S3 `If-Match` on its ETag, a compare-and-rename under the folder's lock), so of two
//! attempts that read it only one runs. When its answer settles, [`Claim::settle`]
//! changes the record only if it is still this attempt's claim: it stores the answer, or,
//! for a host failure or an answer Step Functions did not take, gives the key back (an
//! expired claim, so no delete is needed). A claim whose host died expires after the
//! task's own deadline and the answer's retry window.
//!
//! A folder store serves one host, so there its claims are held in the host's memory
//! ([`ActivityIdempotency::holding_claims_here`]), not written: a lookup reads the key's
//! record (a stored answer, or a claim an older version wrote), and only the answer is
//! written, once per task instead of a claim and an answer, each a commit and a hand-off
//! to the store's writer (`BENCHMARKS.md`, issue 37). An `flock` keeps a second process
//! from serving the activity out of the same folder. A claim in memory goes with its
//! host: after a crash the key's next attempt runs at once instead of after the claim's
//! expiry, which is what that expiry came to anyway. The folder's journal deletes each
//! record once it expires ([`ActivityIdempotency::expires_at_ms`]): an answer notes the
//! TTL it was stored with, so the folder holds about a TTL's worth of answers.
//!
//! Keys are compared as JSON values, type included (`1` and `"1"` are two keys). With
//! `validate` pointers, a stored answer (or a running claim) is only for an input whose
//! values there match those it was made for ([`Lookup::Mismatch`] otherwise).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::sha256_hex;
use crate::outcome::Answer;
use crate::store::{Claimed, Keeping, Store, StoreError, Version, hold};

/// An activity's idempotency settings: one per activity that has them.
pub struct ActivityIdempotency {
    store: Arc<dyn Store>,
    pointer: String,
    validate: Vec<String>,
    ttl: Duration,
    claim_for: Duration,
    /// Claims held in memory rather than in the store (a folder store).
    here: Option<Arc<HeldHere>>,
}

/// The claims this process holds in memory for an activity whose store only it serves
/// (a folder store), and the lock that says so.
struct HeldHere {
    claims: Mutex<HeldClaims>,
    _lock: std::fs::File,
}

#[derive(Default)]
struct HeldClaims {
    by_name: HashMap<String, HeldClaim>,
    /// At this many claims, expired ones are swept out: memory stays within about twice
    /// the claims that hold.
    sweep_at: usize,
}

/// A claim held in memory.
struct HeldClaim {
    id: u128,
    expires_at_ms: u64,
    /// Its answer is being written: it holds whatever the clock says.
    settling: bool,
    validated: Vec<Validated>,
}

impl HeldClaim {
    fn holds(&self, now_ms: u64) -> bool {
        self.settling || now_ms < self.expires_at_ms
    }
}

/// The fewest claims at which [`HeldClaims::sweep_at`] sweeps.
const SWEEP_AT_LEAST: usize = 64;

impl HeldHere {
    fn lock(&self) -> MutexGuard<'_, HeldClaims> {
        // Each change under the lock is one map operation: a panic leaves it whole.
        self.claims.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes `name` for claim `id` until `expires_at_ms`, unless a claim holds it: then
    /// what that claim says to an input `validated` so (a duplicate, or a mismatch).
    fn claim(
        &self,
        name: &str,
        id: u128,
        expires_at_ms: u64,
        validated: &[Validated],
    ) -> Option<Lookup> {
        let now = now_ms();
        let mut claims = self.lock();
        if let Some(held) = claims.by_name.get(name).filter(|held| held.holds(now)) {
            return Some(match mismatch(validated, &held.validated) {
                Some(differ) => Lookup::Mismatch(differ),
                None => Lookup::Duplicate,
            });
        }
        if claims.by_name.len() >= claims.sweep_at {
            claims.by_name.retain(|_, held| held.holds(now));
            claims.sweep_at = (claims.by_name.len() * 2).max(SWEEP_AT_LEAST);
        }
        claims.by_name.insert(
            name.to_owned(),
            HeldClaim {
                id,
                expires_at_ms,
                settling: false,
                validated: validated.to_vec(),
            },
        );
        None
    }

    /// Ends claim `id` of `name`, if it is still the one held.
    fn release(&self, name: &str, id: u128) {
        let mut claims = self.lock();
        if claims.by_name.get(name).is_some_and(|held| held.id == id) {
            claims.by_name.remove(name);
        }
    }

    /// Marks claim `id` of `name` as settling, if it is still the one held (`false`:
    /// it expired and another attempt took the key, or it was swept out). As with a
    /// written claim, an expired one nobody took over still settles.
    fn begin_settling(&self, name: &str, id: u128) -> bool {
        let mut claims = self.lock();
        match claims.by_name.get_mut(name) {
            Some(held) if held.id == id => {
                held.settling = true;
                true
            }
            _ => false,
        }
    }
}

/// A claim held in memory whose answer is being written: released once it is
/// (`written`), else (a failed write, a settle dropped midway) left to expire, as a
/// stored claim would.
struct Settling<'a> {
    here: &'a HeldHere,
    name: &'a str,
    id: u128,
    written: bool,
}

impl Drop for Settling<'_> {
    fn drop(&mut self) {
        if self.written {
            self.here.release(self.name, self.id);
            return;
        }
        let mut claims = self.here.lock();
        if let Some(held) = claims.by_name.get_mut(self.name)
            && held.id == self.id
        {
            held.settling = false;
        }
    }
}

/// What a task is to do about its key.
#[derive(Debug)]
pub enum Lookup {
    /// No key in the input: run as usual, nothing stored.
    NoKey,
    /// The key is this task's: run, then [`Claim::settle`].
    Run(Claim),
    /// An earlier attempt with the key was answered: send this, run nothing.
    Stored(Answer),
    /// Another attempt with the key is running: answer `SfnWasmHost.Duplicate`.
    Duplicate,
    /// The key's answer or running attempt is for an input that differs at these
    /// `validate` pointers (comma-separated): answer `SfnWasmHost.IdempotencyMismatch`.
    Mismatch(String),
    /// The store could not be read or written: run as usual, nothing stored.
    Unavailable(StoreError),
}

/// A key this task holds until its answer settles.
pub struct Claim {
    store: Arc<dyn Store>,
    name: String,
    /// How long its answer is kept once stored.
    ttl: Duration,
    /// The version of the claim this attempt wrote: the only record it may change.
    version: Version,
    validated: Vec<Validated>,
    /// Held in memory (with its id) instead of written.
    here: Option<(Arc<HeldHere>, u128)>,
    /// Resumed from an outbox entry after a restart: the store may hold a claim an
    /// older version wrote for it.
    resumed: bool,
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// What is stored under a key.
#[derive(Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum Record {
    /// An attempt holds the key until `expires_at_ms` (ms since the Unix epoch); a
    /// record given back has expired.
    Running {
        expires_at_ms: u64,
        /// A random id: no two claims are the same bytes, so no two share a version.
        #[serde(default)]
        claim: String,
        #[serde(default)]
        validated: Vec<Validated>,
    },
    /// The answer Step Functions accepted, at `stored_at_ms`, sent again until the TTL
    /// it was stored with has passed (`expires_at_ms`; a record of an older version has
    /// none: the TTL configured now) or the TTL configured now, whichever comes first.
    Done {
        stored_at_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at_ms: Option<u64>,
        answer: StoredAnswer,
        #[serde(default)]
        validated: Vec<Validated>,
    },
}

/// The longest `ttl_seconds` a config may give (a year): how long a stored answer of an
/// older version, which notes no expiry, is kept in a folder store.
pub const LONGEST_TTL: Duration = Duration::from_secs(31_536_000);

/// The value an input had at one `validate` pointer, as a SHA-256 of its canonical JSON
/// (the input itself is not stored).
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq, Eq)]
struct Validated {
    pointer: String,
    sha256: String,
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

/// A JSON value's text with every object's members sorted by name: two values that are
/// equal as JSON have the same text, whatever order their members came in.
fn canonical(value: &Value) -> String {
    fn write(value: &Value, out: &mut String) {
        match value {
            Value::Object(members) => {
                let mut sorted: Vec<_> = members.iter().collect();
                sorted.sort_by(|a, b| a.0.cmp(b.0));
                out.push('{');
                for (index, (name, value)) in sorted.into_iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(name.clone()).to_string());
                    out.push(':');
                    write(value, out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out
}

/// One random claim id (128 bits, hex): only uniqueness is asked of it, as of a worker's
/// name (`ids::worker_name`).
fn claim_id() -> String {
    format!("{:032x}", fastrand::u128(..))
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
            validate: Vec::new(),
            ttl,
            claim_for,
            here: None,
        }
    }

    /// Holds claims in this process's memory instead of writing them, for a store only
    /// this host serves (a folder): a lookup reads the key's record and a task writes
    /// only its answer. The file `claims-` (a digest of `activity_arn`) `.lock` in `dir`
    /// stays locked (`flock`) while this lives, so that a second process serving the
    /// activity from the folder is refused rather than racing this one for its keys.
    ///
    /// # Errors
    /// [`StoreError`] `InUse` when another process holds the lock past a short wait (a
    /// host that is restarting lets go), or the OS's error.
    pub fn holding_claims_here(
        mut self,
        dir: &Path,
        activity_arn: &str,
    ) -> Result<Self, StoreError> {
        let file = format!("claims-{}.lock", &sha256_hex(activity_arn.as_bytes())[..16]);
        self.here = Some(Arc::new(HeldHere {
            claims: Mutex::new(HeldClaims::default()),
            _lock: hold(dir, &file)?,
        }));
        Ok(self)
    }

    /// Also checks the input's values at `pointers` (JSON pointers): a stored answer is
    /// only sent to an input that matches the one it was stored for there.
    #[must_use]
    pub fn validating(mut self, pointers: Vec<String>) -> Self {
        self.validate = pointers;
        self
    }

    /// What the task of `activity_arn` with `input` is to do.
    pub async fn look_up(&self, activity_arn: &str, input: &str) -> Lookup {
        let Ok(input) = serde_json::from_str::<Value>(input) else {
            return Lookup::NoKey;
        };
        let Some(name) = self.record_name(activity_arn, &input) else {
            return Lookup::NoKey;
        };
        let validated = self.validated(&input);
        if let Some(here) = &self.here {
            return self.look_up_here(here, name, validated).await;
        }
        let claim = Record::Running {
            expires_at_ms: now_ms().saturating_add(millis(self.claim_for)),
            claim: claim_id(),
            validated: validated.clone(),
        };
        let data = serde_json::to_vec(&claim).unwrap_or_default();
        let won = |version| {
            Lookup::Run(Claim {
                store: self.store.clone(),
                name: name.clone(),
                ttl: self.ttl,
                version,
                validated: validated.clone(),
                here: None,
                resumed: false,
            })
        };
        // A few rounds at most: a claim that loses a race reads what won it.
        let mut unreadable = None;
        for round in 0..ROUNDS {
            if round > 0 && unreadable.is_some() {
                tokio::time::sleep(READ_AGAIN_AFTER * round).await;
            }
            match self.store.put_if_absent(&name, &data).await {
                Ok(Claimed::Yes(version)) => return won(version),
                Ok(Claimed::AlreadyTaken) => {}
                Err(err) => return Lookup::Unavailable(err),
            }
            let found = match self.store.read(&name).await {
                Ok(Some(found)) => found,
                // Gone since the claim found it (given back, expired by a lifecycle
                // rule): claim again.
                Ok(None) => continue,
                // The key is held, but what holds it could not be read: a write still in
                // flight, a record just expired by a lifecycle rule (which S3 answers
                // with 403 to credentials without s3:ListBucket), throttling. Running
                // now could run the guest beside its holder: try again, and only when
                // every round fails run without the key.
                Err(err) => {
                    unreadable = Some(err);
                    continue;
                }
            };
            unreadable = None;
            if let Some(held) = self.held(&found.data, &validated) {
                return held;
            }
            // Expired, given back, or not ours to read: taken over only if it is still
            // the record read, so that of two attempts that read it one runs.
            match self.store.put_if_match(&name, &data, &found.version).await {
                Ok(Claimed::Yes(version)) => return won(version),
                Ok(Claimed::AlreadyTaken) => {}
                Err(err) => return Lookup::Unavailable(err),
            }
        }
        match unreadable {
            Some(err) => Lookup::Unavailable(err),
            None => Lookup::Duplicate,
        }
    }
}

impl ActivityIdempotency {
    /// [`look_up`](Self::look_up) with claims held in memory: the key is claimed
    /// there, then its record read; a record that holds (a stored answer, an older
    /// version's live claim, a mismatch) ends the claim and says what to do.
    async fn look_up_here(
        &self,
        here: &Arc<HeldHere>,
        name: String,
        validated: Vec<Validated>,
    ) -> Lookup {
        let id = fastrand::u128(..);
        let expires_at_ms = now_ms().saturating_add(millis(self.claim_for));
        if let Some(held) = here.claim(&name, id, expires_at_ms, &validated) {
            return held;
        }
        let lookup = match self.store.read(&name).await {
            Ok(Some(found)) => self.held(&found.data, &validated),
            Ok(None) => None,
            Err(err) => Some(Lookup::Unavailable(err)),
        };
        if let Some(lookup) = lookup {
            here.release(&name, id);
            return lookup;
        }
        Lookup::Run(Claim {
            store: self.store.clone(),
            ttl: self.ttl,
            version: Version(format!("held-here-{id:032x}")),
            name,
            validated,
            here: Some((here.clone(), id)),
            resumed: false,
        })
    }

    /// How a folder store keeps the records: each deleted once it expires
    /// ([`Self::expires_at_ms`]), and their names in memory, since only the holder of
    /// an activity's claims lock writes that activity's records
    /// ([`Self::holding_claims_here`]): a new key's lookup then reads nothing.
    pub const KEEPING: Keeping = Keeping {
        expiry: Some(Self::expires_at_ms),
        names_in_memory: true,
    };

    /// When the record `data` expires (ms since the Unix epoch), after which no lookup
    /// reads it: a folder store deletes it then ([`crate::store::Expiry`]). A claim at
    /// its expiry; an answer at the TTL it was stored with, or [`LONGEST_TTL`] after it
    /// was stored when it notes none; `None` (kept) for what is not a record.
    pub fn expires_at_ms(data: &[u8]) -> Option<u64> {
        /// A record's times alone: the answer is skipped over, not copied (this runs on
        /// the store's writer thread for every write).
        #[derive(Deserialize)]
        struct Times {
            expires_at_ms: Option<u64>,
            stored_at_ms: Option<u64>,
        }
        let times = serde_json::from_slice::<Times>(data).ok()?;
        times.expires_at_ms.or_else(|| {
            times
                .stored_at_ms
                .map(|stored| stored.saturating_add(millis(LONGEST_TTL)))
        })
    }

    /// Whether `name` is a record's (`answer-` and a digest): what an older version
    /// left as a file in a folder store, to move into its journal.
    pub fn is_record_name(name: &str) -> bool {
        name.strip_prefix("answer-")
            .is_some_and(crate::store::is_digest)
    }

    /// The name of the record for the key in `input`, or `None` when it has none. A string
    /// key is named as before (answers stored by earlier versions are still found); any
    /// other value by its canonical JSON after a separator no ARN holds, so that `1` and
    /// `"1"` never share a name.
    fn record_name(&self, activity_arn: &str, input: &Value) -> Option<String> {
        let named = match input.pointer(&self.pointer) {
            None | Some(Value::Null) => return None,
            Some(Value::String(key)) => format!("{activity_arn}\n{key}"),
            Some(key) => format!("{activity_arn}\0json\n{}", canonical(key)),
        };
        Some(format!("answer-{}", sha256_hex(named.as_bytes())))
    }

    /// The digests of `input`'s values at the `validate` pointers.
    fn validated(&self, input: &Value) -> Vec<Validated> {
        self.validate
            .iter()
            .map(|pointer| Validated {
                pointer: pointer.clone(),
                sha256: sha256_hex(
                    canonical(input.pointer(pointer).unwrap_or(&Value::Null)).as_bytes(),
                ),
            })
            .collect()
    }

    /// What a record read under the key says to do, while it holds: its stored answer,
    /// another attempt running now, or a mismatch with `validated`; `None` once it no
    /// longer holds (expired, given back, unreadable), to be taken over.
    fn held(&self, data: &[u8], validated: &[Validated]) -> Option<Lookup> {
        let now = now_ms();
        match serde_json::from_slice::<Record>(data) {
            Ok(Record::Done {
                stored_at_ms,
                expires_at_ms,
                answer,
                validated: theirs,
            }) if now.saturating_sub(stored_at_ms) < millis(self.ttl)
                && expires_at_ms.is_none_or(|at| now < at) =>
            {
                Some(match mismatch(validated, &theirs) {
                    Some(differ) => Lookup::Mismatch(differ),
                    None => Lookup::Stored(match answer {
                        StoredAnswer::Success { output } => Answer::Success { output },
                        StoredAnswer::Failure { error, cause } => Answer::Failure { error, cause },
                    }),
                })
            }
            Ok(Record::Running {
                expires_at_ms,
                validated: theirs,
                ..
            }) if now < expires_at_ms => Some(match mismatch(validated, &theirs) {
                Some(differ) => Lookup::Mismatch(differ),
                None => Lookup::Duplicate,
            }),
            _ => None,
        }
    }
}

/// How many times a lookup claims and reads before it gives up.
const ROUNDS: u32 = 3;
/// The wait before claiming again after a read failed, times the round.
const READ_AGAIN_AFTER: Duration = Duration::from_millis(50);

/// The pointers (comma-separated) at which `ours` and `theirs` hold different values;
/// `None` when they agree wherever both checked (a record made before a pointer was
/// added to `validate` has nothing to compare there).
fn mismatch(ours: &[Validated], theirs: &[Validated]) -> Option<String> {
    let differ: Vec<&str> = ours
        .iter()
        .filter(|mine| {
            theirs
                .iter()
                .any(|their| their.pointer == mine.pointer && their.sha256 != mine.sha256)
        })
        .map(|mine| mine.pointer.as_str())
        .collect();
    (!differ.is_empty()).then(|| differ.join(", "))
}

/// What [`Claim::settle`] came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// The answer is stored, or the key given back.
    Done,
    /// The claim had expired and another attempt had taken the key over: its record was
    /// left alone.
    TakenOver,
}

impl Claim {
    /// Stores `answer` (the one Step Functions accepted from the guest) for later
    /// attempts with the key, or with `None` (a host failure, or no answer taken) gives
    /// the key back. Either changes the record only if it is still this attempt's claim.
    ///
    /// # Errors
    /// [`StoreError`] when the store refused; the claim then expires by itself.
    pub async fn settle(self, answer: Option<&Answer>) -> Result<Settled, StoreError> {
        let now = now_ms();
        let record = match answer {
            // Given back: an expired claim, which the next attempt takes over.
            None => Record::Running {
                expires_at_ms: 0,
                claim: claim_id(),
                validated: Vec::new(),
            },
            Some(answer) => Record::Done {
                stored_at_ms: now,
                expires_at_ms: Some(now.saturating_add(millis(self.ttl))),
                answer: match answer {
                    Answer::Success { output } => StoredAnswer::Success {
                        output: output.clone(),
                    },
                    Answer::Failure { error, cause } => StoredAnswer::Failure {
                        error: error.clone(),
                        cause: cause.clone(),
                    },
                },
                validated: self.validated.clone(),
            },
        };
        let data = serde_json::to_vec(&record).unwrap_or_default();
        if let Some((here, id)) = &self.here {
            if !here.begin_settling(&self.name, *id) {
                return Ok(Settled::TakenOver);
            }
            let mut settling = Settling {
                here,
                name: &self.name,
                id: *id,
                written: false,
            };
            // A key given back was never written, unless an older version's claim for
            // a resumed answer may be in the store: that is expired by the write.
            if answer.is_some() || self.resumed {
                self.store.put(&self.name, &data).await?;
            }
            settling.written = true;
            return Ok(Settled::Done);
        }
        match self
            .store
            .put_if_match(&self.name, &data, &self.version)
            .await?
        {
            Claimed::Yes(_) => Ok(Settled::Done),
            Claimed::AlreadyTaken => Ok(Settled::TakenOver),
        }
    }

    /// What an outbox entry keeps of the claim, to settle it after a restart
    /// ([`ActivityIdempotency::resume`]).
    pub fn to_ref(&self) -> ClaimRef {
        ClaimRef {
            name: self.name.clone(),
            version: self.version.0.clone(),
            validated: self.validated.clone(),
        }
    }
}

/// A claim as an outbox entry keeps it: the stored name (a digest), the version this
/// attempt wrote, and what its input was validated against. No key or input.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClaimRef {
    name: String,
    version: String,
    #[serde(default)]
    validated: Vec<Validated>,
}

impl ActivityIdempotency {
    /// The claim `held` refers to, in this activity's store: for an answer recovered from
    /// the outbox, which settles the claim its task held when the host stopped.
    pub fn resume(&self, held: ClaimRef) -> Claim {
        // Held in memory again, from before any task of this host runs, until settled.
        let here = self.here.as_ref().map(|here| {
            let id = fastrand::u128(..);
            here.lock().by_name.insert(
                held.name.clone(),
                HeldClaim {
                    id,
                    expires_at_ms: now_ms().saturating_add(millis(self.claim_for)),
                    settling: false,
                    validated: held.validated.clone(),
                },
            );
            (here.clone(), id)
        });
        Claim {
            store: self.store.clone(),
            name: held.name,
            ttl: self.ttl,
            version: Version(held.version),
            validated: held.validated,
            here,
            resumed: true,
        }
    }
}

#[cfg(test)]
mod tests;
