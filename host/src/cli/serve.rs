//! `sfn-wasm-host serve config.toml`: poll every activity and answer its tasks until
//! SIGTERM or SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use sfn_wasm_host::config::{LogFormat, parse_listen};
use sfn_wasm_host::load;
use sfn_wasm_host::runtime::{HostRuntime, RuntimeParts};
use sfn_wasm_host::sfn::AwsStepFunctions;
use tokio::signal::unix::{SignalKind, signal};

use super::EXIT_USAGE;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The config file.
    config: PathBuf,
    /// Log format; overrides `[host] log_format`.
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Serve /metrics, /healthz, /readyz and /status on IP:PORT; overrides
    /// `[host] admin_listen`.
    #[arg(long, value_name = "IP:PORT", value_parser = parse_listen)]
    admin_listen: Option<std::net::SocketAddr>,
}

/// Serves until a signal, then shuts down: stop polling, let running tasks finish for
/// `shutdown_grace_seconds`, abort the rest (each answered `SfnWasmHost.Shutdown`), exit
/// 0. A second signal aborts running tasks at once.
pub fn run(args: ServeArgs) -> ExitCode {
    let config = match super::read_config(&args.config) {
        Ok(mut config) => {
            if let Some(addr) = args.admin_listen {
                config.host.admin.listen = Some(addr);
            }
            config
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let _logs = super::init_logging(args.log_format.unwrap_or(config.host.log_format), true);
    raise_open_files_limit();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(config.runtime_threads());
    match super::runtime(builder) {
        Ok(runtime) => {
            let code = runtime.block_on(serve(config));
            // A reload may still be compiling on a blocking thread: do not wait for it.
            runtime.shutdown_background();
            code
        }
        Err(code) => code,
    }
}

/// Raises the soft limit on open files to the hard one. Each Step Functions long poll,
/// guest HTTP connection, handler file and admin connection holds a descriptor, and the
/// soft limit is often 1,024 where the hard one is far higher: running out shows up as
/// failed polls and refused connections, not as an error that names the cause. A
/// failure is only logged: the host still runs under the limit it has.
fn raise_open_files_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    // `None` is unlimited: nothing to raise to (the soft one) or nothing to raise (the hard
    // one, which Linux never grants for files anyway).
    let (Some(soft), Some(hard)) = (limit.current, limit.maximum) else {
        tracing::debug!(soft = ?limit.current, hard = ?limit.maximum, "open files limit left as it is");
        return;
    };
    if soft >= hard {
        tracing::debug!(limit = soft, "open files limit already at its hard limit");
        return;
    }
    let raised = Rlimit {
        current: Some(hard),
        maximum: Some(hard),
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => tracing::info!(
            from = soft,
            to = hard,
            "raised the open files limit to its hard limit"
        ),
        Err(err) => {
            tracing::warn!(limit = soft, hard, error = %err, "cannot raise the open files limit")
        }
    }
}

async fn serve(config: sfn_wasm_host::config::Config) -> ExitCode {
    // Signals are installed before anything starts, so none is missed.
    let signals = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    );
    let (mut terminate, mut interrupt, mut hangup) = match signals {
        (Ok(terminate), Ok(interrupt), Ok(hangup)) => (terminate, interrupt, hangup),
        (Err(err), _, _) | (_, Err(err), _) | (_, _, Err(err)) => {
            eprintln!("error: cannot install signal handlers: {err}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let loaded = match load::load(config).await {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("error: {err:#}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let sfn = Arc::new(AwsStepFunctions::new(&loaded.config.aws).await);
    let stopping = format!(
        "polling stops; running tasks get up to {:.0} s (shutdown_grace_seconds), then are answered SfnWasmHost.Shutdown; a second SIGTERM or SIGINT aborts them now",
        loaded.config.host.shutdown_grace.as_secs_f64()
    );
    let parts = RuntimeParts { loaded, sfn };
    let mut host = match HostRuntime::start(parts).await {
        Ok(host) => host,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(EXIT_USAGE);
        }
    };

    loop {
        tokio::select! {
            _ = terminate.recv() => { tracing::info!("SIGTERM: shutting down: {stopping}"); break }
            _ = interrupt.recv() => { tracing::info!("SIGINT: shutting down: {stopping}"); break }
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading every handler and re-reading from_env values");
                host.reload();
            }
        }
    }
    // Polling stops first (and /readyz turns 503); a reload still compiling is left
    // behind, never waited for.
    host.initiate_shutdown();
    let abort = host.abort_token();
    let shutdown = host.shutdown();
    tokio::pin!(shutdown);
    let report = tokio::select! {
        report = &mut shutdown => report,
        _ = async { tokio::select! { _ = terminate.recv() => {}, _ = interrupt.recv() => {} } } => {
            tracing::warn!("second signal: aborting running tasks now");
            abort.cancel();
            shutdown.await
        }
    };
    tracing::info!(aborted = report.aborted, "stopped");
    ExitCode::SUCCESS
}
