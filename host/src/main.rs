//! The `sfn-wasm-host` command line.

// No function over 80 lines (`clippy.toml`): a long one is several steps that want names.
#![warn(clippy::too_many_lines)]

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    cli::Cli::parse().run()
}
