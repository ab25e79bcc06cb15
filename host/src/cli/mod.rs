//! Subcommands, one file each. Library errors become `anyhow` errors with context here,
//! at the edge, and every exit code is decided here.

mod check;
mod compile;
mod invoke;
mod log_writer;
mod new;
mod replay;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sfn_wasm_host::config::LogFormat;

/// Exit code for a usage or load error (bad flags, missing or invalid handler).
pub const EXIT_USAGE: u8 = 2;

/// Runs AWS Step Functions activity handlers as sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "sfn-wasm-host", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one task through a handler locally, without Step Functions, and print its
    /// answer as one JSON line.
    Invoke(invoke::InvokeArgs),
    /// Poll the Step Functions activities of a config file and answer their tasks until
    /// SIGTERM or SIGINT.
    Serve(serve::ServeArgs),
    /// Validate a config file and load its handlers, exactly as `serve` would, without
    /// polling.
    Check(check::CheckArgs),
    /// Compile handlers into the compile cache ahead of a deploy, so that `serve` loads
    /// them (at start and on a hot swap) without compiling.
    Compile(compile::CompileArgs),
    /// Write a standalone handler project (Rust, JavaScript or Python) from the templates
    /// built into this binary: the greet handler, its test, a config and a state machine.
    New(new::NewArgs),
    /// Run the task inputs an activity recorded (`record = "DIR"`) through a new handler
    /// version and print what changed; exit 1 if anything did.
    Replay(replay::ReplayArgs),
}

impl Cli {
    /// Runs the chosen subcommand and returns the process exit code.
    pub fn run(self) -> ExitCode {
        match self.command {
            Command::Invoke(args) => invoke::run(args),
            Command::Serve(args) => serve::run(args),
            Command::Check(args) => check::run(args),
            Command::Compile(args) => compile::run(args),
            Command::New(args) => new::run(args),
            Command::Replay(args) => replay::run(args),
        }
    }
}

/// Reads the config file, for a subcommand.
fn read_config(path: &std::path::Path) -> anyhow::Result<sfn_wasm_host::config::Config> {
    Ok(sfn_wasm_host::config::Config::load(path)?)
}

/// `--timeout-seconds`: a positive, finite number of seconds.
fn timeout_arg(seconds: f64) -> anyhow::Result<std::time::Duration> {
    std::time::Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|t| !t.is_zero())
        .ok_or_else(|| {
            anyhow::anyhow!("--timeout-seconds must be a positive number of seconds, not {seconds}")
        })
}

/// Builds the async runtime, or says why not and gives the exit code.
fn runtime(mut builder: tokio::runtime::Builder) -> Result<tokio::runtime::Runtime, ExitCode> {
    builder.enable_all().build().map_err(|err| {
        eprintln!("error: cannot start the async runtime: {err}");
        ExitCode::from(EXIT_USAGE)
    })
}

/// Loads a handler named on the command line (`compile`, `invoke`): a path, or a remote
/// source as `handler` takes it (`s3://`, `https://`, `oci://`), read once with the
/// environment's AWS settings (region, credentials, `AWS_ENDPOINT_URL`) and Docker's
/// `config.json` for registries.
fn load_handler(
    engine: &sfn_wasm_host::engine::WasmEngine,
    arg: &std::path::Path,
    cache: Option<&sfn_wasm_host::engine::ArtifactCache>,
) -> anyhow::Result<sfn_wasm_host::engine::LoadedHandler> {
    use sfn_wasm_host::engine::{Digest, Handler};
    use sfn_wasm_host::source::{Fetch, Fetcher, HandlerSource};
    let text = arg.to_string_lossy();
    if !is_remote(arg) {
        return Ok(Handler::load(engine, arg, cache)?);
    }
    let source = HandlerSource::parse(&text, std::path::Path::new("."))
        .map_err(|message| anyhow::anyhow!("{message}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let fetched = runtime.block_on(async {
        let fetcher = Fetcher::new(&sfn_wasm_host::aws::AwsConfig::default()).await?;
        anyhow::Ok(
            fetcher
                .fetch(&source, None, REMOTE_HANDLER_MAX_BYTES)
                .await?,
        )
    })?;
    let Fetch::Fetched(fetched) = fetched else {
        anyhow::bail!("{source} answered \"not modified\" to a first read");
    };
    let name = std::path::PathBuf::from(source.to_string());
    let digest = Digest::of(&fetched.bytes);
    Ok(Handler::prepare(
        engine,
        &name,
        &fetched.bytes,
        digest,
        cache,
    )?)
}

/// Whether a handler named on the command line is a remote source rather than a path.
fn is_remote(arg: &std::path::Path) -> bool {
    let text = arg.to_string_lossy();
    ["s3://", "https://", "http://", "oci://"]
        .iter()
        .any(|scheme| text.starts_with(scheme))
}

/// A handler named on the command line as it may be printed: a URL without its
/// userinfo, query and fragment (a password, a presigned URL's token).
fn shown_handler(arg: &std::path::Path) -> String {
    if is_remote(arg) {
        sfn_wasm_host::source::redact_url(&arg.to_string_lossy())
    } else {
        arg.display().to_string()
    }
}

/// The largest handler `compile` and `invoke` read from a remote source: `handler_max_mb`'s
/// default.
const REMOTE_HANDLER_MAX_BYTES: u64 = 256 << 20;

/// Sets up logging: `RUST_LOG` filters (default `info`, without the AWS SDK's
/// instance-metadata probes); JSON is one flat object per
/// line. `invoke` and `check` log to stderr so their stdout stays theirs.
///
/// Lines are written by a thread of their own, in batches, through a bounded buffer that
/// drops lines when full (and says how many): a stalled log pipe must never stop polls,
/// answers or heartbeats (see [`log_writer`]). Keep the guard until exit: dropping it
/// flushes what is buffered.
fn init_logging(format: LogFormat, to_stdout: bool) -> Option<log_writer::LogGuard> {
    // By default the AWS SDK's instance-metadata probes are not logged: off EC2 each is a
    // multi-kilobyte warning around the host's own one-line error, which already says
    // what to set (`RUST_LOG=info,aws_config=debug` shows them).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,aws_config::imds=error"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let sink: Box<dyn std::io::Write + Send> = if to_stdout {
        Box::new(std::io::stdout())
    } else {
        Box::new(std::io::stderr())
    };
    let (writer, guard) = match log_writer::start(sink) {
        Ok(started) => started,
        Err(err) => {
            eprintln!("sfn-wasm-host: cannot start the log writer thread ({err}); logging nothing");
            return None;
        }
    };
    let _ = match format {
        LogFormat::Text => builder.with_ansi(false).with_writer(writer).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(writer)
            .try_init(),
    };
    Some(guard)
}
