//! The loading path `serve` and `check` share: config, engine, cache, handlers. `check`
//! runs exactly this and stops, so it finds every problem `serve` would meet before
//! polling.

use std::path::Path;
use std::sync::Arc;

use sfn_wasm_host::config::Config;
use sfn_wasm_host::engine::{ArtifactCache, EngineConfig, Handler, LoadedHandler, WasmEngine};

/// A config with its engine, cache and one loaded handler per activity.
pub struct Loaded {
    pub config: Config,
    pub engine: Arc<WasmEngine>,
    pub cache: Option<ArtifactCache>,
    pub handlers: Vec<LoadedHandler>,
}

/// Loads everything; each error names the file and key.
pub fn load(config: Config) -> anyhow::Result<Loaded> {
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
    for (index, activity) in config.activities.iter().enumerate() {
        let handler = Handler::load(&engine, &activity.handler, cache.as_ref()).map_err(|err| {
            anyhow::anyhow!(
                "{}: `activity[{index}].handler`: {err}",
                config.file.display()
            )
        })?;
        handlers.push(handler);
    }
    Ok(Loaded {
        config,
        engine: Arc::new(engine),
        cache,
        handlers,
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
