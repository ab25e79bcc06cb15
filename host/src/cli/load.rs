//! The loading path `serve` and `check` share: config, engine, cache, handlers. `check`
//! runs exactly this and stops, so it finds every problem `serve` would meet before
//! polling.

use std::path::Path;
use std::sync::Arc;

use sfn_wasm_host::config::Config;
use sfn_wasm_host::engine::{
    ArtifactCache, Digest, EngineConfig, Handler, LoadedHandler, WasmEngine,
};
use sfn_wasm_host::source::{Fetch, Fetcher, HandlerSource, check_pin};

/// A config with its engine, cache and one loaded handler per activity.
pub struct Loaded {
    pub config: Config,
    pub engine: Arc<WasmEngine>,
    pub cache: Option<ArtifactCache>,
    pub handlers: Vec<LoadedHandler>,
    /// The ETag / Last-Modified of each remote handler read.
    pub source_tags: Vec<Option<String>>,
}

/// Loads everything; each error names the file and key. S3 and HTTPS handlers are
/// fetched here: a host does not start without its handlers.
pub async fn load(config: Config) -> anyhow::Result<Loaded> {
    let engine = WasmEngine::new(EngineConfig {
        max_concurrent_tasks: config.total_workers(),
        max_memory_bytes: config.max_memory_bytes(),
        pooling: true,
        ..EngineConfig::default()
    })
    .map_err(|err| {
        anyhow::anyhow!(
            "{}: `activity[*].max_concurrent_tasks` (else `workers`): {err}",
            config.file.display()
        )
    })?;
    let cache = open_cache(config.host.cache_dir.as_deref(), &engine)
        .map(|cache| cache.with_max_bytes(config.host.cache_max_bytes));
    let mut handlers = Vec::with_capacity(config.activities.len());
    let fetcher = if config.activities.iter().any(|a| a.handler.is_remote()) {
        Some(Fetcher::new(&config.aws).await?)
    } else {
        None
    };
    let mut source_tags = Vec::with_capacity(config.activities.len());
    for (index, activity) in config.activities.iter().enumerate() {
        // `load_ms` counts reading (or fetching) the module as well as compiling it.
        let started = std::time::Instant::now();
        let key = |name: &str| format!("{}: `activity[{index}].{name}`", config.file.display());
        let (name, bytes) = match (&activity.handler, &fetcher) {
            (HandlerSource::File(path), _) => {
                let bytes = std::fs::read(path).map_err(|err| {
                    anyhow::anyhow!("{}: cannot read {}: {err}", key("handler"), path.display())
                })?;
                source_tags.push(None);
                (path.clone(), bytes)
            }
            (source, Some(fetcher)) => {
                let fetched = fetcher
                    .fetch(source, None, activity.handler_max_bytes)
                    .await
                    .map_err(|err| anyhow::anyhow!("{}: {err}", key("handler")))?;
                let Fetch::Fetched(fetched) = fetched else {
                    anyhow::bail!(
                        "{}: {source} answered \"not modified\" to a first read",
                        key("handler")
                    );
                };
                source_tags.push(fetched.tag);
                (source.to_string().into(), fetched.bytes)
            }
            (source, None) => anyhow::bail!("{}: no client for {source}", key("handler")),
        };
        check_pin(&bytes, activity.sha256.as_deref()).map_err(|reason| {
            anyhow::anyhow!("{}: {}: {reason}", key("sha256"), activity.handler)
        })?;
        let digest = Digest::of(&bytes);
        let mut handler = Handler::prepare(&engine, &name, &bytes, digest, cache.as_ref())
            .map_err(|err| anyhow::anyhow!("{}: {err}", key("handler")))?;
        handler.elapsed = started.elapsed();
        handlers.push(handler);
    }
    Ok(Loaded {
        config,
        engine: Arc::new(engine),
        cache,
        handlers,
        source_tags,
    })
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

/// Reads the config file, for a subcommand.
pub fn config(path: &Path) -> anyhow::Result<Config> {
    Ok(Config::load(path)?)
}
