//! `sfn-wasm-host check config.toml`: everything `serve` loads, nothing it polls.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use sfn_wasm_host::load;

use super::EXIT_USAGE;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The config file.
    config: PathBuf,
}

/// Validates the config and loads every handler; prints what would run. Exits 0 when
/// `serve` would start, 2 otherwise.
pub fn run(args: CheckArgs) -> ExitCode {
    let _logs = super::init_logging(sfn_wasm_host::config::LogFormat::Text, false);
    let runtime = match super::runtime(tokio::runtime::Builder::new_current_thread()) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let loaded = match super::read_config(&args.config)
        .and_then(|config| Ok(runtime.block_on(load::load(config))?))
    {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("error: {err:#}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    for (activity, loaded_handler) in loaded.config.activities.iter().zip(&loaded.handlers) {
        let handler = &loaded_handler.handler;
        println!(
            "ok: {} -> {} (sha256 {}, cache {}, loaded in {} ms; {} workers, {} tasks at once, {} MiB, {} s timeout)",
            activity.arn,
            activity.handler,
            handler.digest(),
            loaded_handler.cache.name(),
            loaded_handler.elapsed.as_millis(),
            activity.pollers,
            activity.max_concurrent_tasks,
            activity.memory_limit_bytes >> 20,
            activity.task_timeout.as_secs_f64(),
        );
        for grant in activity.grants.describe() {
            println!("    grants: {grant}");
        }
    }
    ExitCode::SUCCESS
}
