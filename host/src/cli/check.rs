//! `sfn-wasm-host check [--remote] config.toml`: everything `serve` loads, nothing it
//! polls; with `--remote`, also what only AWS can say (credentials, activities, S3
//! handler objects).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use sfn_wasm_host::{load, remote};

use super::EXIT_USAGE;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Also ask AWS: resolve credentials, `DescribeActivity` each activity, `HeadObject`
    /// each S3 handler. Without it `check` stays offline (as in a deploy pipeline).
    #[arg(long)]
    remote: bool,
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
    let config = match super::read_config(&args.config) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err:#}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if args.remote {
        // One line per problem, each naming its key; loading would only fail again on
        // the same missing objects.
        let problems = runtime.block_on(remote::check(&config));
        for problem in &problems {
            eprintln!("error: {}: {problem}", config.file.display());
        }
        if !problems.is_empty() {
            return ExitCode::from(EXIT_USAGE);
        }
    }
    let loaded = match runtime.block_on(load::load(config)) {
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
    if args.remote {
        println!("ok: AWS knows every activity and handler object, with these credentials");
    }
    ExitCode::SUCCESS
}
