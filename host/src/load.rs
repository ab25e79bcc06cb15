//! The one loading path: config → engine (sized from the config) → compile cache →
//! each activity's handler, read from its source, checked against its pin and prepared.
//! `check`, `serve`, `invoke`, `replay`, the benches and the tests all start here, so
//! `check` finds every problem `serve` would meet before polling, and a hot swap
//! ([`crate::reload`]) prepares a new version exactly as start-up prepared the first.

use sfn_wasm_engine::{
    ArtifactCache, Digest, EngineConfig, EngineError, Handler, LoadError, LoadedHandler, WasmEngine,
};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::config::{Config, KeyPath};
use crate::grants::EnvSource;
use crate::secrets::{SecretError, SecretStore};
use crate::source::{Fetch, Fetcher, HandlerSource, check_pin};

/// A config with its engine, cache and one loaded handler per activity: what a host
/// runs.
pub struct Loaded {
    /// The config.
    pub config: Config,
    /// The engine the handlers were loaded into.
    pub engine: Arc<WasmEngine>,
    /// The compile cache, for hot swaps.
    pub cache: Option<ArtifactCache>,
    /// One per activity, in config order: its handler's first version and where it
    /// came from.
    pub activities: Vec<LoadedActivity>,
    /// The values of the activities' secrets (`from_secretsmanager`, `from_ssm`), read.
    pub secrets: Arc<SecretStore>,
}

/// One activity's handler as loaded: its first version, and what its source said of it.
pub struct LoadedActivity {
    /// The handler's first version.
    pub handler: LoadedHandler,
    /// For S3 and HTTPS handlers, the ETag / Last-Modified of that version (`None`:
    /// unknown, read again at the source's first poll).
    pub source_tag: Option<String>,
}

impl From<LoadedHandler> for LoadedActivity {
    /// A handler with no source tag (a file, or a test's).
    fn from(handler: LoadedHandler) -> Self {
        Self {
            handler,
            source_tag: None,
        }
    }
}

/// Why loading stopped; each names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum LoadingError {
    /// The engine cannot hold the configured task slots.
    #[error("{}: `activity[*].max_concurrent_tasks` (else `workers`): {error}", file.display())]
    Engine {
        /// The config file.
        file: std::path::PathBuf,
        /// What the engine said (in the message, not as a source: `check` prints the
        /// chain, which would say it twice).
        error: EngineError,
    },
    /// The client for S3 and HTTPS sources cannot be set up.
    #[error(transparent)]
    Fetcher(#[from] rustls::Error),
    /// One activity's secret cannot be read: missing, denied or malformed.
    #[error("{}: `{table}.env.{name}`: {error}; check the name, and that the host's credentials may read it (secretsmanager:GetSecretValue; ssm:GetParameter, and kms:Decrypt for a SecureString)", file.display())]
    Secret {
        /// The config file.
        file: std::path::PathBuf,
        /// The activity's table (`activity[0]`, `callback[1]`).
        table: KeyPath,
        /// The guest's variable.
        name: String,
        /// What AWS said (its error code), never the value.
        error: Box<SecretError>,
    },
    /// One activity's handler: unreadable, unreachable, another digest than its pin, or
    /// not a valid handler.
    #[error("{}: `{table}.{key}`: {message}", file.display())]
    Handler {
        /// The config file.
        file: std::path::PathBuf,
        /// The activity's table (`activity[0]`, `callback[1]`).
        table: KeyPath,
        /// `handler` or `sha256`.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// A diagnostics switch, not a config key: `on-demand` allocates each instance's memory
/// when it starts instead of from the pool reserved up front (wasmtime's
/// `InstanceAllocationStrategy::OnDemand`), so that a profiler that cannot map the pool's
/// tens of GiB of address space (valgrind's callgrind and dhat) can run the host
/// (`scripts/bench-callgrind.sh`). Slower per task, and without the pool's bounds on a
/// guest's address space: never for production.
pub const INSTANCE_ALLOCATION: &str = "SFN_WASM_HOST_INSTANCE_ALLOCATION";

/// The engine a config needs: a pool slot for every task slot of every activity, memory
/// slots as large as the largest cap. The one place the engine is sized.
///
/// # Errors
/// When the task slots are more than one engine can hold.
pub fn engine(config: &Config) -> Result<WasmEngine, LoadingError> {
    let mut sized = EngineConfig::sized(config.total_task_slots(), config.max_memory_bytes());
    sized.guest_threads = config.guest_threads();
    sized.pooling = std::env::var_os(INSTANCE_ALLOCATION).is_none_or(|value| value != "on-demand");
    if !sized.pooling {
        tracing::warn!(
            "{INSTANCE_ALLOCATION}=on-demand: instances are allocated without the pool, for a profiler; never in production"
        );
    }
    WasmEngine::new(sized).map_err(|error| LoadingError::Engine {
        file: config.file.clone(),
        error,
    })
}

/// Loads everything. S3 and HTTPS handlers are fetched here: a host does not start
/// without its handlers.
///
/// # Errors
/// The first problem, naming the file and key.
pub async fn load(config: Config) -> Result<Loaded, LoadingError> {
    let engine = engine(&config)?;
    let cache = open_cache(config.host.cache_dir.as_deref(), &engine)
        .map(|cache| cache.with_max_bytes(config.host.cache_max_bytes));
    let fetcher = if config.activities.iter().any(|a| a.handler.is_remote()) {
        Some(Fetcher::new(&config.aws).await?)
    } else {
        None
    };
    let secrets = Arc::new(SecretStore::new(config.aws.clone()));
    read_secrets(&config, &secrets).await?;
    let mut activities = Vec::with_capacity(config.activities.len());
    for activity in &config.activities {
        let error = |key: &'static str, message: String| LoadingError::Handler {
            file: config.file.clone(),
            table: activity.key.clone(),
            key,
            message,
        };
        // `load_ms` counts reading (or fetching) the module as well as compiling it.
        let started = Instant::now();
        let (bytes, tag) = read(
            &activity.handler,
            fetcher.as_ref(),
            activity.handler_max_bytes,
        )
        .await
        .map_err(|message| error("handler", message))?;
        let name = match &activity.handler {
            HandlerSource::File(path) => path.clone(),
            source => source.to_string().into(),
        };
        let digest = Digest::of(&bytes);
        let mut handler = prepare(
            &engine,
            &name,
            &bytes,
            digest,
            activity.sha256.as_deref(),
            cache.as_ref(),
        )
        .map_err(|err| match err {
            PrepareError::Pin(reason) => error(
                "sha256",
                format!(
                    "{}: {reason}{}",
                    activity.handler,
                    manifest_pin_hint(tag.as_deref(), activity.sha256.as_deref())
                ),
            ),
            PrepareError::Load(err) => error("handler", err.to_string()),
        })?;
        handler.elapsed = started.elapsed();
        activities.push(LoadedActivity {
            handler,
            source_tag: tag,
        });
    }
    Ok(Loaded {
        config,
        engine: Arc::new(engine),
        cache,
        activities,
        secrets,
    })
}

/// Reads every secret of every activity's environment, once each: a host does not start
/// without them.
async fn read_secrets(config: &Config, secrets: &SecretStore) -> Result<(), LoadingError> {
    for activity in &config.activities {
        for var in &activity.grants.env {
            let EnvSource::Secret(secret) = &var.source else {
                continue;
            };
            if secrets.get(&secret.source).is_some() {
                continue;
            }
            secrets
                .read(&secret.source)
                .await
                .map_err(|error| LoadingError::Secret {
                    file: config.file.clone(),
                    table: activity.key.clone(),
                    name: var.name.clone(),
                    error: Box::new(error),
                })?;
        }
    }
    Ok(())
}

/// Reads a handler module from its source for the first time: its bytes, and for a
/// remote source the tag (ETag, Last-Modified) to ask about changes with.
async fn read(
    source: &HandlerSource,
    fetcher: Option<&Fetcher>,
    max_bytes: u64,
) -> Result<(Vec<u8>, Option<String>), String> {
    match (source, fetcher) {
        (HandlerSource::File(path), _) => std::fs::read(path)
            .map(|bytes| (bytes, None))
            .map_err(|err| format!("cannot read {}: {err}", path.display())),
        (source, Some(fetcher)) => match fetcher.fetch(source, None, max_bytes).await {
            Ok(Fetch::Fetched(fetched)) => Ok((fetched.bytes, fetched.tag)),
            Ok(Fetch::Unchanged) => Err(format!(
                "{source} answered \"not modified\" to a first read"
            )),
            Err(err) => Err(err.to_string()),
        },
        (source, None) => Err(format!("no client for {source}")),
    }
}

/// Why a module was not made a handler version.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// Its digest is not the activity's `sha256` pin.
    #[error("{0}")]
    Pin(String),
    /// It is not a valid handler (or cannot be compiled).
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// Makes a module (whose `digest` the caller has) a handler version: checks it against the activity's pin (before
/// compiling anything), then compiles (or takes from the cache) and links it. Start-up
/// and every hot swap go through here. Blocking: compiling may take seconds.
///
/// # Errors
/// [`PrepareError::Pin`] for another digest than the pin, [`PrepareError::Load`] for a
/// module that is not a valid handler.
pub fn prepare(
    engine: &WasmEngine,
    name: &Path,
    bytes: &[u8],
    digest: Digest,
    pin: Option<&str>,
    cache: Option<&ArtifactCache>,
) -> Result<LoadedHandler, PrepareError> {
    check_pin(bytes, pin).map_err(PrepareError::Pin)?;
    Ok(Handler::prepare(engine, name, bytes, digest, cache)?)
}

/// A hint for an `oci://` handler pinned by its manifest's digest (what a registry shows
/// first), not its component's: empty otherwise.
fn manifest_pin_hint(tag: Option<&str>, pin: Option<&str>) -> &'static str {
    let manifest = tag.and_then(|tag| tag.strip_prefix("oci:sha256:"));
    if manifest.is_some() && manifest == pin {
        " (that is the OCI manifest's digest; `sha256` pins the component itself, the digest of its application/wasm layer)"
    } else {
        ""
    }
}

/// Opens the handler cache in `dir`; `None` when there is no folder or it cannot be
/// opened. The cache only saves time, so a problem with it is a warning, not an error.
pub fn open_cache(dir: Option<&Path>, engine: &WasmEngine) -> Option<ArtifactCache> {
    let dir = dir?;
    match ArtifactCache::open(dir, engine) {
        Ok(cache) => Some(cache),
        Err(err) => {
            tracing::warn!(cache = %dir.display(), error = %err, "cannot open the handler cache; compiling every handler");
            None
        }
    }
}
