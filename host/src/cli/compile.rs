//! `sfn-wasm-host compile HANDLER.wasm|oci://…|s3://…|https://…`: fill the compile cache
//! ahead of a deploy, so that `serve` (at start and on a hot swap) loads the handler
//! without compiling it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use sfn_wasm_host::config::default_cache_dir;
use sfn_wasm_host::engine::{EngineConfig, WasmEngine};
use sfn_wasm_host::load::open_cache;

use super::EXIT_USAGE;

#[derive(Debug, Args)]
pub struct CompileArgs {
    /// The handler components to compile: `.wasm` files, or sources as `handler` takes
    /// them (`oci://REGISTRY/REPOSITORY:TAG`, `s3://BUCKET/KEY`, `https://…`).
    #[arg(required = true)]
    handlers: Vec<PathBuf>,
    /// The cache to fill: the folder `serve` reads (`[host] cache_dir`; default: the
    /// same default as `serve`).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
}

/// Compiles each handler into the cache, or finds it there; prints one line each.
/// Exits 0 when every handler is in the cache, 2 otherwise.
pub fn run(args: CompileArgs) -> ExitCode {
    let _logs = super::init_logging(sfn_wasm_host::config::LogFormat::Text, false);
    let Some(dir) = args.cache_dir.or_else(default_cache_dir) else {
        eprintln!(
            "error: no cache folder: give --cache-dir (neither XDG_CACHE_HOME nor HOME is set)"
        );
        return ExitCode::from(EXIT_USAGE);
    };
    // Artifacts do not depend on how the pool is sized, only on the compiler settings,
    // which every engine of this build shares: one engine serves every config.
    let engine = match WasmEngine::new(EngineConfig::default()) {
        Ok(engine) => engine,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let Some(cache) = open_cache(Some(&dir), &engine) else {
        eprintln!(
            "error: cannot use {} as the handler cache (see the warning above)",
            dir.display()
        );
        return ExitCode::from(EXIT_USAGE);
    };
    let mut failed = false;
    for path in &args.handlers {
        match super::load_handler(&engine, path, Some(&cache)) {
            Ok(loaded) => println!(
                "ok: {} (sha256 {}) -> {}: {} in {} ms",
                super::shown_handler(path),
                loaded.handler.digest(),
                cache.path(loaded.handler.digest()).display(),
                match loaded.cache.name() {
                    "hit" => "already compiled",
                    _ => "compiled",
                },
                loaded.elapsed.as_millis()
            ),
            Err(err) => {
                eprintln!("error: {err:#}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::from(EXIT_USAGE)
    } else {
        ExitCode::SUCCESS
    }
}
