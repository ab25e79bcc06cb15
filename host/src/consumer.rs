//! `ActivityConsumer`: the process's activities, one pool each, and the two-phase shutdown that leaves no received task without an answer.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::delivery::DeliveryOptions;
use crate::engine::{LoadedHandler, TaskControl, WasmEngine};
use crate::events::{Emitter, Events, HandlerEvent};
use crate::grants::{GrantError, Grants, GrantsSlot};
use crate::idempotency::ActivityIdempotency;
use crate::lifecycle::{ActivityShared, task_starts};
use crate::outbound::GuestSockets;
use crate::outbox::Outbox;
use crate::pool::ActivityPoolManager;
use crate::progress::ActivityProgress;
use crate::record::{RecordError, Recorder};
use crate::reload::ReloadTarget;
use crate::rollout::VersionChooser;
use crate::secrets::SecretStore;
use crate::sfn::StepFunctions;
use crate::store::{FolderStore, S3Store, Store, StoreError, StoreLocation};

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
    #[error("{}: activity[{index}]: {source}", file.display())]
    Grants {
        /// The config file.
        file: std::path::PathBuf,
        /// The activity's index.
        index: usize,
        /// What is wrong, with the key under the activity.
        source: GrantError,
    },
    /// An activity's `record` folder cannot be used.
    #[error("{}: `activity[{index}].record`: {source}; fix its permissions or choose another folder", file.display())]
    Record {
        /// The config file.
        file: std::path::PathBuf,
        /// The activity's index.
        index: usize,
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
}

/// The store at `location`, which `key` of the config names: a folder is created
/// (private) here; an S3 client is made at its first call.
fn open_store(
    location: &StoreLocation,
    config: &Config,
    key: &str,
) -> Result<Arc<dyn Store>, ConsumerError> {
    Ok(match location {
        StoreLocation::Folder(dir) => {
            Arc::new(
                FolderStore::open(dir).map_err(|source| ConsumerError::Store {
                    file: config.file.clone(),
                    key: key.to_owned(),
                    source,
                })?,
            )
        }
        StoreLocation::S3 { bucket, prefix } => Arc::new(S3Store::new(&config.aws, bucket, prefix)),
    })
}

/// How a shutdown went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Whether the grace period ran out and running tasks were aborted.
    pub aborted: bool,
}

impl ActivityConsumer {
    /// One pool per activity of `config`; `handlers[i]` serves `config.activities[i]`.
    /// Emits `handler:loaded` for each. Must be called inside the tokio runtime that
    /// will run everything: polls, answers, heartbeats and the guests, which yield it at
    /// every epoch tick (see [`crate::engine`]).
    ///
    /// # Errors
    /// When an activity's grants cannot be resolved.
    ///
    /// # Panics
    /// If `handlers` and `config.activities` differ in length (a programming error).
    pub fn new(
        config: &Config,
        engine: Arc<WasmEngine>,
        handlers: Vec<LoadedHandler>,
        sfn: Arc<dyn StepFunctions>,
        events: Events,
        secrets: Arc<SecretStore>,
    ) -> Result<Self, ConsumerError> {
        assert_eq!(
            handlers.len(),
            config.activities.len(),
            "one handler per activity"
        );
        let stop_polling = CancellationToken::new();
        let tasks = TaskControl::default();
        let give_up = CancellationToken::new();
        let mut pools = Vec::with_capacity(handlers.len());
        let mut reload_targets = Vec::with_capacity(handlers.len());
        let mut grant_slots = Vec::with_capacity(handlers.len());
        let mut secrets_now = Vec::new();
        // One share of the process's descriptors for every guest of every activity.
        let sockets = GuestSockets::for_process();
        let mut recorders = Vec::new();
        let outbox = match &config.host.outbox_dir {
            Some(dir) => Some(Arc::new(
                Outbox::open(dir, config.host.outbox_max_bytes).map_err(|source| {
                    ConsumerError::Store {
                        file: config.file.clone(),
                        key: "host.outbox_dir".into(),
                        source,
                    }
                })?,
            )),
            None => None,
        };
        let delivery = DeliveryOptions {
            retry_for: config.host.answer_retry,
            cancel_grace: std::time::Duration::ZERO,
            give_up: give_up.clone(),
        };
        let mut claims: std::collections::HashMap<String, Arc<ActivityIdempotency>> =
            std::collections::HashMap::new();
        for (index, (activity, loaded)) in config.activities.iter().zip(handlers).enumerate() {
            let share = sockets.for_activity(config.activities.len());
            let grants =
                Grants::resolve_with(&activity.grants, &secrets, &share).map_err(|source| {
                    ConsumerError::Grants {
                        file: config.file.clone(),
                        index,
                        source,
                    }
                })?;
            let grants = GrantsSlot::new(activity.grants.clone(), grants, secrets.clone());
            let arn: Arc<str> = activity.arn.shared();
            secrets_now.extend(grants.keep_secrets_fresh(arn.clone(), stop_polling.child_token()));
            let emitter = Emitter::for_activity(events.clone(), arn.clone());
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
            let recorder = match &activity.record {
                Some(record) => {
                    let recorder = Arc::new(Recorder::start(record).map_err(|source| {
                        ConsumerError::Record {
                            file: config.file.clone(),
                            index,
                            source,
                        }
                    })?);
                    recorders.push(recorder.clone());
                    Some(recorder)
                }
                None => None,
            };
            let progress = match &activity.progress {
                Some(progress) => Some(Arc::new(ActivityProgress::new(
                    open_store(
                        &progress.store,
                        config,
                        &format!("activity[{index}].progress.store"),
                    )?,
                    progress.key.clone(),
                    progress.keep_after_success,
                ))),
                None => None,
            };
            let idempotency = match &activity.idempotency {
                Some(idempotency) => Some(Arc::new(
                    ActivityIdempotency::new(
                        open_store(
                            &idempotency.store,
                            config,
                            &format!("activity[{index}].idempotency.store"),
                        )?,
                        idempotency.key.clone(),
                        idempotency.ttl,
                        // A claim outlives the longest a task can take to be answered.
                        activity.task_timeout + config.host.answer_retry + activity.cancel_grace,
                    )
                    .validating(idempotency.validate.clone()),
                )),
                None => None,
            };
            let shared = Arc::new(ActivityShared {
                arn,
                activity: activity.clone(),
                sfn: sfn.clone(),
                engine: engine.clone(),
                versions: versions.clone(),
                recorder,
                emitter: emitter.clone(),
                tasks: tasks.clone(),
                delivery: DeliveryOptions {
                    cancel_grace: activity.cancel_grace,
                    ..delivery.clone()
                },
                grants: grants.clone(),
                slots: Arc::new(tokio::sync::Semaphore::new(
                    usize::try_from(activity.max_concurrent_tasks).unwrap_or(usize::MAX),
                )),
                starts: activity.max_tasks_per_second.map(task_starts),
                progress,
                idempotency: idempotency.clone(),
                outbox: outbox.clone(),
            });
            if let Some(idempotency) = idempotency {
                claims.insert(activity.arn.to_string(), idempotency);
            }
            pools.push(ActivityPoolManager::new(
                shared,
                config.host.worker_prefix.clone(),
                stop_polling.child_token(),
            ));
            grant_slots.push(grants);
            reload_targets.push(ReloadTarget {
                source: activity.handler.clone(),
                watch: activity.watch,
                poll: activity.source_poll,
                pin: activity.sha256.clone(),
                max_bytes: activity.handler_max_bytes,
                versions,
                tag: None,
                emitter,
            });
        }
        // Once the activities' idempotency stores are open: a recovered answer settles
        // the claim its task held.
        if let Some(outbox) = &outbox {
            let found = outbox.recover(&sfn, &events, &delivery, &|arn| claims.get(arn).cloned());
            if found > 0 {
                tracing::info!(
                    event = "outbox:recovering",
                    answers = found,
                    "outbox:recovering: delivering {found} answers a previous host left"
                );
            }
        }
        Ok(Self {
            pools,
            reload_targets,
            grants: grant_slots,
            secrets_now,
            sockets,
            recorders,
            stop_polling,
            tasks,
            give_up,
        })
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
        ShutdownReport { aborted }
    }
}
