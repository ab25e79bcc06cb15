//! Subcommands, one file each. Library errors become `anyhow` errors with context here,
//! at the edge, and every exit code is decided here.

mod invoke;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Poll Step Functions activities and answer their tasks (not available yet).
    Serve {
        /// The config file.
        config: std::path::PathBuf,
    },
    /// Validate a config file and its handlers without polling (not available yet).
    Check {
        /// The config file.
        config: std::path::PathBuf,
    },
}

impl Cli {
    /// Runs the chosen subcommand and returns the process exit code.
    pub fn run(self) -> ExitCode {
        match self.command {
            Command::Invoke(args) => invoke::run(args),
            Command::Serve { .. } | Command::Check { .. } => {
                eprintln!("error: `serve` and `check` are not available in this version yet");
                ExitCode::from(EXIT_USAGE)
            }
        }
    }
}

/// Logs to stderr for people, so stdout stays machine-readable.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
