//! The loading path `serve` and `check` share: config, engine, handlers. `check` runs
//! exactly this and stops, so it finds every problem `serve` would meet before polling.

use std::path::Path;
use std::sync::Arc;

use sfn_wasm_host::config::Config;
use sfn_wasm_host::engine::{EngineConfig, Handler, WasmEngine};

/// A config with its engine and one loaded handler per activity.
pub struct Loaded {
    pub config: Config,
    pub engine: Arc<WasmEngine>,
    pub handlers: Vec<Handler>,
}

/// Loads everything; each error names the file and key.
pub fn load(config: Config) -> anyhow::Result<Loaded> {
    let engine = WasmEngine::new(EngineConfig {
        max_concurrent_tasks: config.total_workers(),
        max_memory_bytes: config.max_memory_bytes(),
        pooling: true,
    })?;
    let mut handlers = Vec::with_capacity(config.activities.len());
    for (index, activity) in config.activities.iter().enumerate() {
        let handler = Handler::load_file(&engine, &activity.handler).map_err(|err| {
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
        handlers,
    })
}

/// Reads the config file, for a subcommand.
pub fn config(path: &Path) -> anyhow::Result<Config> {
    Ok(Config::load(path)?)
}
