//! `ActivityConsumer`: the process's activities, one pool each, and the two-phase shutdown that leaves no received task without an answer.

use std::sync::Arc;
use std::time::Duration;

use sfn_wasm_engine::{TaskControl, WasmEngine};
use sfn_wasm_outbound::GuestSockets;
use tokio_util::sync::CancellationToken;

use crate::callback::CallbackQueue;
use crate::config::{ActivityConfig, Config, KeyPath};
use crate::delivery::DeliveryOptions;
use crate::events::{Emitter, Events, HandlerEvent};
use crate::gauges::Gauges;
use crate::grants::{GrantError, Grants, GrantsSlot};
use crate::idempotency::ActivityIdempotency;
use crate::lifecycle::{ActivityShared, task_starts};
use crate::load::LoadedActivity;
use crate::outbox::Outbox;
use crate::pool::ActivityPoolManager;
use crate::progress::ActivityProgress;
use crate::record::{RecordError, Recorder};
use crate::reload::ReloadTarget;
use crate::rollout::VersionChooser;
use crate::secrets::SecretStore;
use crate::sfn::StepFunctions;
use crate::sqs::Sqs;
use crate::store::{FolderStore, Legacy, S3Store, Store, StoreError, StoreLocation, open_journal};

/// After the grace, how long aborted tasks get to deliver their `SfnWasmHost.Shutdown`
/// answers before deliveries still retrying are given up.
pub const FINAL_ANSWERS: Duration = Duration::from_millis(400);

/// At shutdown, how long the task records still queued may take to be written, in all.
const RECORD_FLUSH: Duration = Duration::from_millis(100);

/// Every pool of the process.
pub struct ActivityConsumer {
    pools: Vec<ActivityPoolManager>,
    reload_targets: Vec<ReloadTarget>,
    grants: Vec<GrantsSlot>,
    /// Per activity with secrets: wakes its refresher (SIGHUP).
    secrets_now: Vec<Arc<tokio::sync::Notify>>,
    recorders: Vec<Arc<Recorder>>,
    /// Flushed at the end of a shutdown.
    outbox: Option<Arc<Outbox>>,
    /// The host's descriptors for guests' connections, shared by every activity.
    sockets: GuestSockets,
    stop_polling: CancellationToken,
    tasks: TaskControl,
    give_up: CancellationToken,
}

/// Why the consumer could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// An activity's grants could not be resolved (a `from_env` variable went missing
    /// since the config was read).
    #[error("{}: {table}: {source}", file.display())]
    Grants {
        /// The config file.
        file: std::path::PathBuf,
        /// The activity's table (`activity[0]`, `callback[1]`).
        table: KeyPath,
        /// What is wrong, with the key under the activity.
        source: GrantError,
    },
    /// An activity's `record` folder cannot be used.
    #[error("{}: `{table}.record`: {source}; fix its permissions or choose another folder", file.display())]
    Record {
        /// The config file.
        file: std::path::PathBuf,
        /// The activity's table (`activity[0]`, `callback[1]`).
        table: KeyPath,
        /// What is wrong.
        source: RecordError,
    },
    /// A store the config names cannot be used: an activity's `progress.store` or
    /// `idempotency.store`, or `host.outbox_dir` (a folder that cannot be created).
    #[error("{}: `{key}`: {source}; fix its permissions or choose another folder", file.display())]
    Store {
        /// The config file.
        file: std::path::PathBuf,
        /// The key that names it (`activity[0].progress.store`).
        key: String,
        /// What is wrong.
        source: StoreError,
    },
    /// The loaded handlers are not one per activity of the config (a caller's mistake:
    /// `load` gives exactly one each).
    #[error("{}: {activities} activities but {handlers} loaded handlers; load the config with `load::load`, which loads one per activity", file.display())]
    Handlers {
        /// The config file.
        file: std::path::PathBuf,
        /// How many activities the config has.
        activities: usize,
        /// How many handlers were given.
        handlers: usize,
    },
}

/// The store at `location`, which `key` of the config names: a folder is opened by
/// `folder` (created, private); an S3 client is made at its first call.
fn open_store(
    location: &StoreLocation,
    config: &Config,
    key: &str,
    folder: impl FnOnce(&std::path::Path) -> Result<Arc<dyn Store>, StoreError>,
) -> Result<Arc<dyn Store>, ConsumerError> {
    Ok(match location {
        StoreLocation::Folder(dir) => folder(dir).map_err(|source| ConsumerError::Store {
            file: config.file.clone(),
            key: key.to_owned(),
            source,
        })?,
        StoreLocation::S3 { bucket, prefix } => Arc::new(S3Store::new(&config.aws, bucket, prefix)),
    })
}

/// The outbox `[host] outbox_dir` names, opened (its answers are recovered once the
/// activities are wired).
fn open_outbox(config: &Config) -> Result<Option<Arc<Outbox>>, ConsumerError> {
    let Some(outbox) = &config.host.outbox else {
        return Ok(None);
    };
    let outbox =
        Outbox::open(&outbox.dir, outbox.max_bytes, outbox.durability).map_err(|source| {
            ConsumerError::Store {
                file: config.file.clone(),
                key: "host.outbox_dir".into(),
                source,
            }
        })?;
    Ok(Some(Arc::new(outbox)))
}

/// What every activity's wiring shares.
struct Wiring<'a> {
    config: &'a Config,
    engine: Arc<WasmEngine>,
    sfn: Arc<dyn StepFunctions>,
    events: Events,
    secrets: Arc<SecretStore>,
    sockets: GuestSockets,
    stop_polling: CancellationToken,
    tasks: TaskControl,
    /// The host's delivery options; each activity sets its own `cancel_grace`.
    delivery: DeliveryOptions,
    outbox: Option<Arc<Outbox>>,
    /// The SQS client of every callback (made at its first call).
    sqs: Arc<Sqs>,
}

/// One activity, wired: its pool and what the consumer keeps of it, together.
struct WiredActivity {
    arn: Arc<str>,
    pool: ActivityPoolManager,
    reload_target: ReloadTarget,
    grants: GrantsSlot,
    /// Wakes its secrets' refresh (SIGHUP).
    secrets_now: Option<Arc<tokio::sync::Notify>>,
    recorder: Option<Arc<Recorder>>,
    idempotency: Option<Arc<ActivityIdempotency>>,
}

impl Wiring<'_> {
    /// Wires `activity` (an entry of `config.activities`) with its loaded handler; emits its
    /// `handler:loaded`.
    fn activity(
        &self,
        activity: &ActivityConfig,
        loaded: LoadedActivity,
    ) -> Result<WiredActivity, ConsumerError> {
        let LoadedActivity {
            handler: loaded,
            source_tag,
        } = loaded;
        let config = self.config;
        let share = self.sockets.for_activity(config.activities.len());
        let grants =
            Grants::resolve_with(&activity.grants, &self.secrets, &share).map_err(|source| {
                ConsumerError::Grants {
                    file: config.file.clone(),
                    table: activity.key.clone(),
                    source,
                }
            })?;
        let grants = GrantsSlot::new(activity.grants.clone(), grants, self.secrets.clone());
        let arn: Arc<str> = activity.name.clone();
        let secrets_now = grants.keep_secrets_fresh(arn.clone(), self.stop_polling.child_token());
        let emitter = Emitter::for_source(self.events.clone(), arn.clone(), activity.source.kind());
        emitter.emit(HandlerEvent::Loaded {
            digest: loaded.handler.digest().hex().clone(),
            cache: loaded.cache.name(),
            load_ms: u64::try_from(loaded.elapsed.as_millis()).unwrap_or(u64::MAX),
        });
        let versions = Arc::new(VersionChooser::new(
            loaded.handler,
            activity.rollout,
            emitter.clone(),
        ));
        let recorder = self.recorder(activity)?;
        // Opened in the order the config's sections come: a config with two broken
        // stores is told of the first.
        let progress = self.progress(activity)?;
        let idempotency = self.idempotency(activity)?;
        let shared = Arc::new(ActivityShared {
            arn: arn.clone(),
            activity: activity.clone(),
            sfn: self.sfn.clone(),
            engine: self.engine.clone(),
            versions: versions.clone(),
            recorder: recorder.clone(),
            emitter: emitter.clone(),
            tasks: self.tasks.clone(),
            delivery: DeliveryOptions {
                cancel_grace: activity.cancel_grace,
                ..self.delivery.clone()
            },
            grants: grants.clone(),
            slots: Arc::new(tokio::sync::Semaphore::new(
                usize::try_from(activity.max_concurrent_tasks).unwrap_or(usize::MAX),
            )),
            gauges: Arc::new(Gauges::new(activity.max_concurrent_tasks)),
            starts: activity.max_tasks_per_second.map(task_starts),
            progress,
            idempotency: idempotency.clone(),
            outbox: self.outbox.clone(),
            callback: self.callback_queue(activity),
        });
        Ok(WiredActivity {
            arn,
            pool: ActivityPoolManager::new(
                shared,
                config.host.worker_prefix.clone(),
                self.stop_polling.child_token(),
            ),
            reload_target: ReloadTarget {
                source: activity.handler.clone(),
                watch: activity.watch,
                poll: activity.source_poll,
                pin: activity.sha256.clone(),
                max_bytes: activity.handler_max_bytes,
                versions,
                tag: source_tag,
                emitter,
            },
            grants,
            secrets_now,
            recorder,
            idempotency,
        })
    }

    /// A callback's queue; `None` for an activity.
    fn callback_queue(&self, activity: &ActivityConfig) -> Option<Arc<CallbackQueue>> {
        let queue = activity.source.callback()?;
        Some(Arc::new(CallbackQueue::new(
            self.sqs.clone(),
            self.sfn.clone(),
            queue.clone(),
        )))
    }

    /// The activity's recorder (`record`), started.
    fn recorder(&self, activity: &ActivityConfig) -> Result<Option<Arc<Recorder>>, ConsumerError> {
        let Some(record) = &activity.record else {
            return Ok(None);
        };
        let recorder = Recorder::start(record).map_err(|source| ConsumerError::Record {
            file: self.config.file.clone(),
            table: activity.key.clone(),
            source,
        })?;
        Ok(Some(Arc::new(recorder)))
    }

    /// The activity's progress store (`[activity.progress]`), opened.
    fn progress(
        &self,
        activity: &ActivityConfig,
    ) -> Result<Option<Arc<ActivityProgress>>, ConsumerError> {
        let Some(progress) = &activity.progress else {
            return Ok(None);
        };
        let key = activity.key.key("progress").key("store");
        Ok(Some(Arc::new(ActivityProgress::new(
            // A checkpoint is a file: it may be large (up to 64 MiB) and is saved at
            // the guest's pace, not once per task.
            open_store(&progress.store, self.config, key.as_str(), |dir| {
                Ok(Arc::new(FolderStore::open(dir)?))
            })?,
            progress.key.clone(),
            progress.keep_after_success,
        ))))
    }

    /// The activity's idempotency store (`[activity.idempotency]`), opened.
    fn idempotency(
        &self,
        activity: &ActivityConfig,
    ) -> Result<Option<Arc<ActivityIdempotency>>, ConsumerError> {
        let Some(idempotency) = &activity.idempotency else {
            return Ok(None);
        };
        let key = activity.key.key("idempotency").key("store");
        // A claim outlives the longest a task can take to be answered.
        let claim_ttl =
            activity.task_timeout + self.config.host.answer_retry + activity.cancel_grace;
        let keys = ActivityIdempotency::new(
            // An answer per task: rows of a journal, in group commits.
            open_store(&idempotency.store, self.config, key.as_str(), |dir| {
                Ok(Arc::new(open_journal(
                    dir,
                    idempotency.durability,
                    Legacy::Import(ActivityIdempotency::is_record_name),
                    ActivityIdempotency::KEEPING,
                )?))
            })?,
            idempotency.key.clone(),
            idempotency.ttl,
            claim_ttl,
        )
        .validating(idempotency.validate.clone());
        // A folder serves one host: its claims are held in memory, not written.
        let keys = match &idempotency.store {
            StoreLocation::Folder(dir) => {
                keys.holding_claims_here(dir, &activity.name)
                    .map_err(|source| ConsumerError::Store {
                        file: self.config.file.clone(),
                        key: key.as_str().to_owned(),
                        source,
                    })?
            }
            StoreLocation::S3 { .. } => keys,
        };
        Ok(Some(Arc::new(keys)))
    }
}

/// How a shutdown went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Whether the grace period ran out and running tasks were aborted.
    pub aborted: bool,
}

impl ActivityConsumer {
    /// One pool per activity of `config`; `activities[i]` (its loaded handler) serves
    /// `config.activities[i]`.
    /// Emits `handler:loaded` for each. Must be called inside the tokio runtime that
    /// will run everything: polls, answers, heartbeats and the guests, which yield it at
    /// every epoch tick (see [`crate::engine`]).
    ///
    /// # Errors
    /// [`ConsumerError`]: the outbox or an activity's progress or idempotency store
    /// cannot be opened, its `record` folder cannot be used, its grants cannot be
    /// resolved, or `activities` is not one per activity of `config`.
    pub fn new(
        config: &Config,
        engine: Arc<WasmEngine>,
        activities: Vec<LoadedActivity>,
        sfn: Arc<dyn StepFunctions>,
        events: Events,
        secrets: Arc<SecretStore>,
    ) -> Result<Self, ConsumerError> {
        if activities.len() != config.activities.len() {
            return Err(ConsumerError::Handlers {
                file: config.file.clone(),
                activities: config.activities.len(),
                handlers: activities.len(),
            });
        }
        let stop_polling = CancellationToken::new();
        let tasks = TaskControl::default();
        let give_up = CancellationToken::new();
        let outbox = open_outbox(config)?;
        let wiring = Wiring {
            config,
            engine,
            sfn: sfn.clone(),
            events: events.clone(),
            secrets,
            // One share of the process's descriptors for every guest of every activity.
            sockets: GuestSockets::for_process(),
            stop_polling: stop_polling.clone(),
            tasks: tasks.clone(),
            delivery: DeliveryOptions {
                retry_for: config.host.answer_retry,
                cancel_grace: Duration::ZERO,
                give_up: give_up.clone(),
            },
            outbox: outbox.clone(),
            sqs: Arc::new(Sqs::new(&config.aws)),
        };
        let mut wired = Vec::with_capacity(activities.len());
        for (activity, loaded) in config.activities.iter().zip(activities) {
            wired.push(wiring.activity(activity, loaded)?);
        }
        // Once the activities' idempotency stores are open: a recovered answer settles
        // the claim its task held.
        if let Some(outbox) = &outbox {
            let claims: std::collections::HashMap<String, Arc<ActivityIdempotency>> = wired
                .iter()
                .filter_map(|w| Some((w.arn.to_string(), w.idempotency.clone()?)))
                .collect();
            let found = outbox.recover(&sfn, &events, &wiring.delivery, &|arn| {
                claims.get(arn).cloned()
            });
            if found > 0 {
                tracing::info!(
                    event = "outbox:recovering",
                    answers = found,
                    "outbox:recovering: delivering {found} answers a previous host left"
                );
            }
        }
        let mut consumer = Self {
            pools: Vec::with_capacity(wired.len()),
            reload_targets: Vec::with_capacity(wired.len()),
            grants: Vec::with_capacity(wired.len()),
            secrets_now: Vec::new(),
            sockets: wiring.sockets,
            recorders: Vec::new(),
            outbox,
            stop_polling,
            tasks,
            give_up,
        };
        for activity in wired {
            consumer.pools.push(activity.pool);
            consumer.reload_targets.push(activity.reload_target);
            consumer.grants.push(activity.grants);
            consumer.secrets_now.extend(activity.secrets_now);
            consumer.recorders.extend(activity.recorder);
        }
        Ok(consumer)
    }

    /// Every pool.
    pub fn pools(&self) -> &[ActivityPoolManager] {
        &self.pools
    }

    /// The host's descriptors for guests' connections: `/readyz` says when guests hold
    /// them all.
    pub fn guest_sockets(&self) -> &GuestSockets {
        &self.sockets
    }

    /// Starts every pool's workers.
    pub fn start(&mut self) {
        self.pools.iter_mut().for_each(ActivityPoolManager::start);
    }

    /// The pool of `arn`, to resize it.
    pub fn pool(&self, arn: &str) -> Option<&ActivityPoolManager> {
        self.pools.iter().find(|pool| pool.arn() == arn)
    }

    /// What the [`Reloader`](crate::reload::Reloader) needs to swap handlers, once: the
    /// consumer keeps serving whatever the slots hold.
    pub fn take_reload_targets(&mut self) -> Vec<ReloadTarget> {
        std::mem::take(&mut self.reload_targets)
    }

    /// Resolves every activity's grants again (SIGHUP): `from_env` values are read
    /// anew, and every secret (in the background: new tasks see a new value once it is
    /// read). An activity whose grants fail keeps its previous ones; the error is logged.
    pub fn refresh_grants(&self) {
        for now in &self.secrets_now {
            now.notify_one();
        }
        for (pool, grants) in self.pools.iter().zip(&self.grants) {
            match grants.refresh() {
                Ok(()) => tracing::info!(activity = pool.arn(), "grants re-read"),
                Err(err) => tracing::error!(
                    activity = pool.arn(),
                    error = %err,
                    "cannot re-read the grants; the previous ones stay"
                ),
            }
        }
    }

    /// The first phase of shutdown, idempotent and immediate: start no new poll (polls
    /// in flight are kept, and a task they bring is answered `SfnWasmHost.Shutdown`) and
    /// make every running task's `cancelled()` true.
    pub fn initiate_shutdown(&self) {
        self.stop_polling.cancel();
        self.tasks.cancel.cancel();
    }

    /// The token that aborts every running task when cancelled: each is stopped within an
    /// epoch tick and answered `SfnWasmHost.Shutdown`, and polls in flight are dropped.
    /// For a second signal during [`shutdown`](Self::shutdown).
    pub fn abort_token(&self) -> CancellationToken {
        self.tasks.abort.clone()
    }

    /// Shuts down: [`initiate_shutdown`](Self::initiate_shutdown), then lets polls in
    /// flight return, running tasks finish and answers be delivered for up to `grace`;
    /// then aborts the rest (running guests, polls) and gives their `SfnWasmHost.Shutdown`
    /// answers [`FINAL_ANSWERS`] before giving up on deliveries still retrying.
    pub async fn shutdown(&mut self, grace: Duration) -> ShutdownReport {
        self.initiate_shutdown();
        let abort = self.tasks.abort.clone();
        let give_up = self.give_up.clone();
        let stop_all =
            futures::future::join_all(self.pools.iter_mut().map(ActivityPoolManager::stop));
        tokio::pin!(stop_all);
        let aborted = tokio::select! {
            _ = &mut stop_all => false,
            () = tokio::time::sleep(grace) => true,
        };
        if aborted {
            abort.cancel();
            tokio::select! {
                _ = &mut stop_all => {}
                () = tokio::time::sleep(FINAL_ANSWERS) => {
                    give_up.cancel();
                    stop_all.await;
                }
            }
        }
        // Every task is done; what it recorded is written before the process exits.
        let recorders = self.recorders.clone();
        if !recorders.is_empty() {
            let _ = tokio::task::spawn_blocking(move || {
                crate::record::flush_all(recorders.iter().map(|r| &**r), RECORD_FLUSH);
            })
            .await;
        }
        // Settled entries whose removal waits for a write to ride with: none comes now.
        // (Bounded as the outbox's writes are: a hung volume must not hold the exit.)
        if let Some(outbox) = &self.outbox {
            let _ = tokio::time::timeout(crate::outbox::WRITE_DEADLINE, outbox.flush()).await;
        }
        ShutdownReport { aborted }
    }
}
