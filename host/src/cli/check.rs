//! `sfn-wasm-host check [--remote] config.toml`: everything `serve` loads, nothing it
//! polls, and the credentials of every `[activity.aws]` grant (its role assumed); with
//! `--remote`, also what only AWS can say (credentials, activities, S3 handler objects).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use sfn_wasm_host::config::Config;
use sfn_wasm_host::load::Loaded;
use sfn_wasm_host::outbound::{AwsGrant, AwsSigner};
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
    if args.remote && !report_remote_problems(&runtime, &config) {
        return ExitCode::from(EXIT_USAGE);
    }
    let loaded = match runtime.block_on(load::load(config)) {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("error: {err:#}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if report_aws_credentials(&runtime, &loaded.config) > 0 {
        return ExitCode::from(EXIT_USAGE);
    }
    print_activities(&loaded);
    if args.remote {
        println!("ok: AWS knows every activity and handler object, with these credentials");
    }
    ExitCode::SUCCESS
}

/// `--remote`: asks AWS about `config` and prints its problems; whether there were none.
fn report_remote_problems(runtime: &tokio::runtime::Runtime, config: &Config) -> bool {
    // One line per problem, each naming its key; loading would only fail again on
    // the same missing objects.
    let problems = runtime.block_on(remote::check(config));
    for problem in &problems {
        eprintln!("error: {}: {problem}", config.file.display());
    }
    problems.is_empty()
}

/// Fetches the credentials of every `[activity.aws]` grant and prints each activity
/// that has none; how many those were. An activity whose guests call AWS needs
/// credentials (or its role) now, not at its first task.
fn report_aws_credentials(runtime: &tokio::runtime::Runtime, config: &Config) -> usize {
    let mut aws_problems = 0;
    for activity in &config.activities {
        let Some(grant) = &activity.grants.aws else {
            continue;
        };
        if let Some(problem) = aws_credentials_problem(runtime, grant) {
            aws_problems += 1;
            let what = match &grant.role_arn {
                Some(_) => {
                    "give the host credentials that may assume the role (sts:AssumeRole), or fix `role_arn`"
                }
                None => "give the host credentials (environment, profile or instance role)",
            };
            eprintln!(
                "error: {}: `{}.aws`: {problem}; {what}",
                config.file.display(),
                activity.key
            );
        }
    }
    aws_problems
}

/// Why `grant` has no credentials (within [`AWS_CREDENTIALS_TIMEOUT`]), if it has none.
fn aws_credentials_problem(runtime: &tokio::runtime::Runtime, grant: &AwsGrant) -> Option<String> {
    match AwsSigner::new(grant.clone()) {
        Ok(signer) => {
            match runtime.block_on(async {
                tokio::time::timeout(AWS_CREDENTIALS_TIMEOUT, signer.credentials()).await
            }) {
                Ok(Ok(_)) => None,
                Ok(Err(err)) => Some(err.to_string()),
                Err(_) => Some(format!(
                    "no credentials within {} s",
                    AWS_CREDENTIALS_TIMEOUT.as_secs()
                )),
            }
        }
        Err(err) => Some(err),
    }
}

/// Prints what would run: one `ok:` line per activity, with its grants and progress.
fn print_activities(loaded: &Loaded) {
    for (activity, loaded) in loaded.config.activities.iter().zip(&loaded.activities) {
        let loaded_handler = &loaded.handler;
        let handler = &loaded_handler.handler;
        println!(
            "ok: {}{} -> {} (world sfn:activity@{}, sha256 {}, cache {}, loaded in {} ms; {} workers, {} tasks at once, {} MiB, {} s timeout)",
            // An activity by its ARN, as always; a callback says what its URL is.
            if activity.source.callback().is_some() {
                "callback "
            } else {
                ""
            },
            activity.name,
            activity.handler,
            handler.world(),
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
        if let Some(progress) = &activity.progress {
            println!(
                "    progress: key {} in {}{}",
                progress.key,
                progress.store,
                if progress.keep_after_success {
                    ", kept after success"
                } else {
                    ""
                }
            );
        }
    }
}

/// How long `check` waits for an activity's AWS credentials (the chain's last resort,
/// the instance metadata service, is not there on a laptop).
const AWS_CREDENTIALS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
