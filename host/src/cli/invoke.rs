//! `sfn-wasm-host invoke`: one task, locally, answer printed as JSON.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use serde_json::json;
use sfn_wasm_host::config::default_cache_dir;
use sfn_wasm_host::delivery::{Delivery, DeliveryOptions, LocalTransport, Unobserved};
use sfn_wasm_host::engine::{
    Capabilities, EngineConfig, Handler, TaskControl, TaskLimits, TaskRequest, WasmEngine,
};
use sfn_wasm_host::grants::{DirGrant, EnvSource, EnvVar, Grants, GrantsConfig, check_guest_path};
use sfn_wasm_host::load::open_cache;
use sfn_wasm_host::outbound::{
    AllowedHost, AwsGrant, OutboundLimits, is_label, is_region, service_endpoints_from_env,
};
use sfn_wasm_host::outcome::Answer;

use super::EXIT_USAGE;

#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// The handler component (`.wasm`, built for wasm32-wasip2), or a source as
    /// `handler` takes it (`oci://REGISTRY/REPOSITORY:TAG`, `s3://BUCKET/KEY`, `https://…`).
    handler: PathBuf,
    /// The task input, a JSON document.
    #[arg(
        long,
        conflicts_with = "input_file",
        required_unless_present = "input_file"
    )]
    input: Option<String>,
    /// Read the task input from this file instead.
    #[arg(long)]
    input_file: Option<PathBuf>,
    /// The cap on the handler's memory, in MiB.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=65536))]
    memory_limit_mb: u64,
    /// How long the handler may run, in seconds.
    #[arg(long, default_value_t = 60.0)]
    timeout_seconds: f64,
    /// Keep compiled handlers here (default: the same folder as `serve`'s default).
    #[arg(long, conflicts_with = "no_cache")]
    cache_dir: Option<PathBuf>,
    /// Compile the handler without reading or writing the cache.
    #[arg(long)]
    no_cache: bool,
    /// Allow outbound HTTP to `scheme://host[:port]` (as `allowed_outbound_hosts`);
    /// repeat for more.
    #[arg(long, value_name = "URL")]
    allow_outbound: Vec<String>,
    /// Set a variable of the handler's environment; repeat for more.
    #[arg(long, value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// Preopen a host folder at a guest path, read-only unless `:rw`; repeat for more.
    #[arg(long, value_name = "HOST:GUEST[:rw]")]
    dir: Vec<String>,
    /// Sign the handler's requests to this AWS service (a SigV4 signing name, as
    /// `[activity.aws] services`) with the host's credentials; repeat for more.
    #[arg(long, value_name = "NAME")]
    aws_service: Vec<String>,
    /// A region those requests may go to (as `[activity.aws] regions`); repeat for more.
    /// Default: `AWS_REGION`.
    #[arg(long, value_name = "REGION", requires = "aws_service")]
    aws_region: Vec<String>,
    /// Send the signed requests here instead of AWS (as `[aws] endpoint_url`, such as a
    /// local emulator). Default: `AWS_ENDPOINT_URL`.
    #[arg(long, value_name = "URL", requires = "aws_service")]
    aws_endpoint_url: Option<String>,
}

/// Prints `{"status":"success","output":...}` or `{"status":"failure",...}`; exits 0 on
/// success, 1 on failure, 2 when the task could not be run at all.
pub fn run(args: InvokeArgs) -> ExitCode {
    let _logs = super::init_logging(sfn_wasm_host::config::LogFormat::Text, false);
    let prepared = match prepare(&args) {
        Ok(prepared) => prepared,
        Err(err) => {
            eprintln!("error: {err:#}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let (engine, handler, request) = prepared;
    let runtime = match super::runtime(tokio::runtime::Builder::new_current_thread()) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let control = request.control.clone();
    let delivery = Delivery::new(
        Arc::new(LocalTransport),
        Arc::new(Unobserved),
        control,
        DeliveryOptions::default(),
    );
    let state = runtime.block_on(async {
        handler.run(&engine, request, delivery.clone()).await;
        delivery.settled().await;
        delivery.state()
    });
    let (line, code) = match state.answer() {
        Some(Answer::Success { output }) => {
            let output: serde_json::Value = serde_json::from_str(output).unwrap_or(json!(output));
            (
                json!({"status": "success", "output": output}),
                ExitCode::SUCCESS,
            )
        }
        Some(Answer::Failure { error, cause }) => (
            json!({"status": "failure", "error": error, "cause": cause}),
            ExitCode::from(1),
        ),
        None => (
            json!({"status": "failure", "error": "SfnWasmHost.NoResponse", "cause": "no answer was recorded"}),
            ExitCode::from(1),
        ),
    };
    println!("{line}");
    code
}

fn prepare(args: &InvokeArgs) -> anyhow::Result<(WasmEngine, Handler, TaskRequest)> {
    let input = match (&args.input, &args.input_file) {
        (Some(input), _) => input.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --input-file {}", path.display()))?,
        (None, None) => anyhow::bail!("give the task input with --input JSON or --input-file FILE"),
    };
    let timeout = super::timeout_arg(args.timeout_seconds)?;
    let memory_bytes = args.memory_limit_mb << 20;
    let engine = WasmEngine::new(EngineConfig::sized(1, memory_bytes))?;
    let cache_dir = if args.no_cache {
        None
    } else {
        args.cache_dir.clone().or_else(default_cache_dir)
    };
    let cache = open_cache(cache_dir.as_deref(), &engine);
    let handler = super::load_handler(&engine, &args.handler, cache.as_ref())?.handler;
    let request =
        TaskRequest {
            input,
            activity_arn: "arn:aws:states:local:000000000000:activity:invoke".into(),
            worker_name: "invoke".into(),
            task_id: "invoke".into(),
            limits: TaskLimits {
                memory_bytes,
                timeout,
                heartbeat_every: None,
            },
            control: TaskControl::default(),
            capabilities: Capabilities::none().with(Arc::new(Grants::resolve(
                &host_folders_apart(grants(args)?, cache_dir.as_deref(), &args.handler)?,
            )?)),
        };
    Ok((engine, handler, request))
}

/// `grants`, once no `--dir` is, contains or lies inside a folder `invoke` keeps for
/// itself (the compile cache, the handler's folder), symlinks resolved: a guest writing
/// there could plant what the host loads. (`serve` checks its config the same way.)
fn host_folders_apart(
    grants: GrantsConfig,
    cache_dir: Option<&std::path::Path>,
    handler: &std::path::Path,
) -> anyhow::Result<GrantsConfig> {
    let handler_folder = std::path::absolute(handler)
        .ok()
        .and_then(|path| path.parent().map(std::path::Path::to_path_buf));
    // A handler reached through a symlink: its real file's folder too.
    let real_folder = std::fs::canonicalize(handler)
        .ok()
        .and_then(|path| path.parent().map(std::path::Path::to_path_buf));
    let owned = [
        ("--cache-dir", cache_dir.map(std::path::Path::to_path_buf)),
        ("the handler's folder", handler_folder),
        ("the handler's folder", real_folder),
    ];
    for grant in &grants.dirs {
        let granted = sfn_wasm_host::config::canonical(&grant.host);
        for (name, folder) in &owned {
            let Some(folder) = folder else { continue };
            let folder = sfn_wasm_host::config::canonical(folder);
            if granted.starts_with(&folder) || folder.starts_with(&granted) {
                anyhow::bail!(
                    "--dir {}: overlaps {name} ({}), a folder the host keeps for itself; grant a folder that neither contains nor lies inside it",
                    grant.host.display(),
                    folder.display()
                );
            }
        }
    }
    Ok(grants)
}

/// The grants of `--allow-outbound`, `--env` and `--dir`, with the default limits.
fn grants(args: &InvokeArgs) -> anyhow::Result<GrantsConfig> {
    let allowed_outbound_hosts = args
        .allow_outbound
        .iter()
        .map(|entry| {
            AllowedHost::parse(entry).map_err(|why| anyhow::anyhow!("--allow-outbound: {why}"))
        })
        .collect::<anyhow::Result<_>>()?;
    let env = args
        .env
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) if !name.is_empty() => Ok(EnvVar {
                name: name.to_owned(),
                source: EnvSource::Literal(value.to_owned()),
            }),
            _ => anyhow::bail!("--env {pair:?}: give NAME=VALUE"),
        })
        .collect::<anyhow::Result<_>>()?;
    let dirs = args
        .dir
        .iter()
        .map(|spec| {
            let (rest, writable) = match spec.strip_suffix(":rw") {
                Some(rest) => (rest, true),
                None => (spec.strip_suffix(":ro").unwrap_or(spec), false),
            };
            let Some((host, guest)) = rest.rsplit_once(':') else {
                anyhow::bail!("--dir {spec:?}: give HOST:GUEST or HOST:GUEST:rw");
            };
            let host = std::path::absolute(host)
                .with_context(|| format!("--dir {spec:?}: cannot resolve {host}"))?;
            if !host.is_dir() {
                anyhow::bail!("--dir {spec:?}: {} is not a folder", host.display());
            }
            check_guest_path(guest).map_err(|why| anyhow::anyhow!("--dir {spec:?}: {why}"))?;
            Ok(DirGrant {
                host,
                guest: guest.to_owned(),
                writable,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(GrantsConfig {
        allowed_outbound_hosts,
        env,
        dirs,
        outbound: OutboundLimits::default(),
        ca_file: None,
        aws: aws_grant(args)?,
    })
}

/// The grant of `--aws-service`, `--aws-region` and `--aws-endpoint-url`.
fn aws_grant(args: &InvokeArgs) -> anyhow::Result<Option<AwsGrant>> {
    if args.aws_service.is_empty() {
        return Ok(None);
    }
    let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let host_region = from_env("AWS_REGION").or_else(|| from_env("AWS_DEFAULT_REGION"));
    let regions = if args.aws_region.is_empty() {
        vec![host_region.clone().ok_or_else(|| {
            anyhow::anyhow!("--aws-service: give the regions with --aws-region, or set AWS_REGION")
        })?]
    } else {
        args.aws_region.clone()
    };
    for service in &args.aws_service {
        if !is_label(service) {
            anyhow::bail!("--aws-service {service:?}: a signing name, like s3 or sqs");
        }
    }
    for region in &regions {
        if !is_region(region) {
            anyhow::bail!("--aws-region {region:?}: a region name, like us-east-1");
        }
    }
    Ok(Some(AwsGrant {
        services: args.aws_service.clone(),
        regions,
        role_arn: None,
        external_id: None,
        host_region,
        endpoint_url: args
            .aws_endpoint_url
            .clone()
            .or_else(|| from_env("AWS_ENDPOINT_URL")),
        allow_credential_apis: false,
        private_endpoints: false,
        service_endpoints: service_endpoints_from_env(&args.aws_service, from_env),
    }))
}
