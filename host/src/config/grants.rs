//! The grants keys of an `[[activity]]`: `allowed_outbound_hosts`, `[activity.env]`,
//! `[[activity.dir]]`, `[activity.outbound]` and `[activity.aws]`, resolved into the
//! activity's [`GrantsConfig`].

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sfn_wasm_outbound::{
    AllowedHost, AwsGrant, OutboundLimits, is_label, is_region, read_ca_file,
    service_endpoints_from_env,
};

use super::checks::{Problem, within};
use std::time::Duration;

use crate::aws::AwsConfig;
use crate::grants::{DirGrant, EnvSource, EnvVar, GrantsConfig, check_guest_path};
use crate::secrets::{DEFAULT_REFRESH, SecretRef, SecretSource, SecretStore};

/// `[activity.outbound]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawOutbound {
    pub max_requests: u32,
    pub max_response_bytes: u64,
    pub connect_timeout_ms: u64,
    pub first_byte_timeout_ms: u64,
    pub pool_idle_seconds: u64,
    pub pool_max_idle_per_host: u32,
    pub pool_max_idle: u32,
    pub max_concurrent_requests: u32,
    pub max_request_buffer_bytes: u64,
    pub ca_file: Option<PathBuf>,
}

impl Default for RawOutbound {
    fn default() -> Self {
        let limits = OutboundLimits::default();
        Self {
            max_requests: limits.max_requests,
            max_response_bytes: limits.max_response_bytes,
            connect_timeout_ms: limits.connect_timeout_ms,
            first_byte_timeout_ms: limits.first_byte_timeout_ms,
            pool_idle_seconds: limits.pool_idle_seconds,
            pool_max_idle_per_host: limits.pool_max_idle_per_host,
            pool_max_idle: limits.pool_max_idle,
            max_concurrent_requests: limits.max_concurrent_requests,
            max_request_buffer_bytes: limits.max_request_buffer_bytes,
            ca_file: None,
        }
    }
}

/// `[activity.aws]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAws {
    pub services: Vec<String>,
    pub regions: Option<Vec<String>>,
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
    #[serde(default)]
    pub allow_credential_apis: bool,
    #[serde(default)]
    pub private_endpoints: bool,
}

/// One `[[activity.dir]]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDir {
    pub host: PathBuf,
    pub guest: String,
    #[serde(default)]
    pub writable: bool,
}

/// The grants keys of one `[[activity]]` as written.
pub(super) struct RawGrants<'a> {
    pub allowed_outbound_hosts: &'a [String],
    pub env: &'a toml::Table,
    pub dir: &'a [RawDir],
    pub outbound: &'a RawOutbound,
    pub aws: Option<&'a RawAws>,
    /// The config's `[aws]`: the default region, and where AWS requests go.
    pub host_aws: &'a AwsConfig,
}

/// Checks and resolves an activity's grants; on error, the key under the activity and
/// the message.
pub(super) fn resolve(activity: &RawGrants<'_>, base: &Path) -> Result<GrantsConfig, Problem> {
    let allowed_outbound_hosts = resolve_allowed_hosts(activity.allowed_outbound_hosts)?;
    let env = resolve_env(activity.env)?;
    let dirs = resolve_dirs(activity.dir, base)?;
    let (limits, ca_file) = resolve_outbound(activity.outbound, base)?;
    let aws = activity
        .aws
        .map(|raw| resolve_aws(raw, activity.host_aws))
        .transpose()?;

    Ok(GrantsConfig {
        allowed_outbound_hosts,
        env,
        dirs,
        outbound: limits,
        ca_file,
        aws,
    })
}

/// Parses `allowed_outbound_hosts`, each entry keyed by its index.
fn resolve_allowed_hosts(entries: &[String]) -> Result<Vec<AllowedHost>, Problem> {
    let mut allowed_outbound_hosts = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let entry = AllowedHost::parse(entry)
            .map_err(|message| (format!("allowed_outbound_hosts[{index}]"), message))?;
        allowed_outbound_hosts.push(entry);
    }
    Ok(allowed_outbound_hosts)
}

/// Resolves `[activity.env]`, in the table's order.
fn resolve_env(table: &toml::Table) -> Result<Vec<EnvVar>, Problem> {
    let mut env = Vec::with_capacity(table.len());
    for (name, value) in table {
        env.push(resolve_env_var(name, value)?);
    }
    Ok(env)
}

/// Resolves one `[activity.env]` variable, keyed `env.NAME`.
fn resolve_env_var(name: &str, value: &toml::Value) -> Result<EnvVar, Problem> {
    let key = format!("env.{name}");
    if name.is_empty() || name.contains(['=', '\0']) {
        return Err((
            key,
            "a variable name must be non-empty, without `=` or NUL".into(),
        ));
    }
    let source = env_source(value).map_err(|message| (key.clone(), message))?;
    if let EnvSource::Literal(value) = &source
        && value.contains('\0')
    {
        return Err((key, "a value cannot contain NUL".into()));
    }
    let var = EnvVar {
        name: name.to_owned(),
        source,
    };
    // Read now, so that a missing variable stops the host before it polls (secrets
    // are read when the config is loaded, with the AWS settings).
    if !matches!(var.source, EnvSource::Secret(_)) {
        var.value(&SecretStore::default())
            .map_err(|message| (key, message))?;
    }
    Ok(var)
}

/// Where one `[activity.env]` variable's value comes from, as written: a literal, a host
/// variable or a secret.
fn env_source(value: &toml::Value) -> Result<EnvSource, String> {
    match value {
        toml::Value::String(literal) => Ok(EnvSource::Literal(literal.clone())),
        toml::Value::Table(table)
            if table.len() == 1 && table.get("from_env").is_some_and(toml::Value::is_str) =>
        {
            let from = table["from_env"].as_str().unwrap_or_default().to_owned();
            Ok(EnvSource::FromEnv(from))
        }
        toml::Value::Table(table)
            if table.contains_key("from_secretsmanager") || table.contains_key("from_ssm") =>
        {
            Ok(EnvSource::Secret(secret(table)?))
        }
        _ => Err(
            "must be a string (`NAME = \"value\"`), `{ from_env = \"HOST_VARIABLE\" }`, `{ from_secretsmanager = \"NAME_OR_ARN\" }` or `{ from_ssm = \"/PARAMETER\" }`"
                .into(),
        ),
    }
}

/// Resolves `[[activity.dir]]`: each host folder must exist (relative to `base`), and
/// each guest path must be valid and granted once.
fn resolve_dirs(raw_dirs: &[RawDir], base: &Path) -> Result<Vec<DirGrant>, Problem> {
    let mut dirs: Vec<DirGrant> = Vec::with_capacity(raw_dirs.len());
    for (index, dir) in raw_dirs.iter().enumerate() {
        let key = |name: &str| format!("dir[{index}].{name}");
        let host = base.join(&dir.host);
        if !host.is_dir() {
            return Err((
                key("host"),
                format!(
                    "{} is not a folder: create it or fix the path, which is relative to the config file's folder",
                    host.display()
                ),
            ));
        }
        let guest = &dir.guest;
        check_guest_path(guest).map_err(|message| (key("guest"), message))?;
        if let Some(other) = dirs.iter().position(|d| d.guest == *guest) {
            return Err((
                key("guest"),
                format!(
                    "{guest} is already granted by dir[{other}]: give each folder its own guest path"
                ),
            ));
        }
        dirs.push(DirGrant {
            host,
            guest: guest.clone(),
            writable: dir.writable,
        });
    }
    Ok(dirs)
}

/// Checks `[activity.outbound]`'s limits and reads its `ca_file` (relative to `base`).
fn resolve_outbound(
    raw: &RawOutbound,
    base: &Path,
) -> Result<(OutboundLimits, Option<PathBuf>), Problem> {
    let limits = OutboundLimits {
        max_requests: raw.max_requests,
        max_response_bytes: raw.max_response_bytes,
        connect_timeout_ms: raw.connect_timeout_ms,
        first_byte_timeout_ms: raw.first_byte_timeout_ms,
        pool_idle_seconds: raw.pool_idle_seconds,
        pool_max_idle_per_host: raw.pool_max_idle_per_host,
        pool_max_idle: raw.pool_max_idle,
        max_concurrent_requests: raw.max_concurrent_requests,
        max_request_buffer_bytes: raw.max_request_buffer_bytes,
    };
    check_outbound_limits(&limits)?;
    let ca_file = raw
        .ca_file
        .as_ref()
        .map(|path| {
            let path = base.join(path);
            read_ca_file(&path)
                .map(|_| path)
                .map_err(|message| ("outbound.ca_file".to_owned(), message))
        })
        .transpose()?;
    Ok((limits, ca_file))
}

/// Checks each `[activity.outbound]` limit against its range, keyed `outbound.NAME`.
fn check_outbound_limits(limits: &OutboundLimits) -> Result<(), Problem> {
    within(limits.max_requests, 0..=1_000_000)
        .map_err(|message| ("outbound.max_requests".to_owned(), message))?;
    within(limits.max_response_bytes, 0..=1 << 40)
        .map_err(|message| ("outbound.max_response_bytes".to_owned(), message))?;
    within(limits.connect_timeout_ms, 1..=3_600_000)
        .map_err(|message| ("outbound.connect_timeout_ms".to_owned(), message))?;
    within(limits.first_byte_timeout_ms, 1..=86_400_000)
        .map_err(|message| ("outbound.first_byte_timeout_ms".to_owned(), message))?;
    within(limits.pool_idle_seconds, 0..=86_400)
        .map_err(|message| ("outbound.pool_idle_seconds".to_owned(), message))?;
    within(limits.pool_max_idle_per_host, 1..=1024)
        .map_err(|message| ("outbound.pool_max_idle_per_host".to_owned(), message))?;
    within(limits.pool_max_idle, 1..=4096)
        .map_err(|message| ("outbound.pool_max_idle".to_owned(), message))?;
    within(limits.max_concurrent_requests, 1..=1024)
        .map_err(|message| ("outbound.max_concurrent_requests".to_owned(), message))?;
    within(limits.max_request_buffer_bytes, 0..=1 << 30)
        .map_err(|message| ("outbound.max_request_buffer_bytes".to_owned(), message))?;
    Ok(())
}

/// `{ from_secretsmanager = "NAME_OR_ARN", json_key = "key", refresh_seconds = 300 }` or
/// `{ from_ssm = "/name", refresh_seconds = 300 }`.
fn secret(table: &toml::Table) -> Result<SecretRef, String> {
    let text = |name: &str| -> Result<Option<String>, String> {
        match table.get(name) {
            None => Ok(None),
            Some(toml::Value::String(value)) if !value.is_empty() => Ok(Some(value.clone())),
            Some(_) => Err(format!("`{name}` must be a non-empty string")),
        }
    };
    let source = match (text("from_secretsmanager")?, text("from_ssm")?) {
        (Some(id), None) => SecretSource::SecretsManager {
            id,
            json_key: text("json_key")?,
        },
        (None, Some(name)) => {
            if table.contains_key("json_key") {
                return Err(
                    "`json_key` picks a field of a Secrets Manager secret; a parameter has none"
                        .into(),
                );
            }
            SecretSource::Ssm { name }
        }
        _ => return Err("give one of `from_secretsmanager` and `from_ssm`".into()),
    };
    let allowed = [
        "from_secretsmanager",
        "from_ssm",
        "json_key",
        "refresh_seconds",
    ];
    if let Some(unknown) = table.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!(
            "unknown key `{unknown}`: a secret takes {}",
            allowed.join(", ")
        ));
    }
    let refresh = match table.get("refresh_seconds") {
        None => DEFAULT_REFRESH,
        Some(toml::Value::Integer(seconds)) if (1..=86_400).contains(seconds) => {
            Duration::from_secs(u64::try_from(*seconds).unwrap_or(1))
        }
        Some(other) => {
            return Err(format!(
                "`refresh_seconds` must be a whole number of seconds between 1 and 86400; got {other}"
            ));
        }
    };
    Ok(SecretRef { source, refresh })
}

/// Checks `[activity.aws]`; regions default to `[aws] region`.
fn resolve_aws(raw: &RawAws, host: &AwsConfig) -> Result<AwsGrant, Problem> {
    if raw.services.is_empty() {
        return Err((
            "aws.services".into(),
            "list the SigV4 signing names the guests may call, like [\"s3\", \"sqs\"]".into(),
        ));
    }
    for (index, service) in raw.services.iter().enumerate() {
        if !is_label(service) {
            return Err((
                format!("aws.services[{index}]"),
                format!(
                    "{service:?} is not a signing name: lower-case letters, digits and `-`, like \"s3\" or \"dynamodb\""
                ),
            ));
        }
    }
    let regions = match (&raw.regions, &host.region) {
        (Some(regions), _) if regions.is_empty() => {
            return Err((
                "aws.regions".into(),
                "list at least one region, like [\"us-east-1\"], or leave the key out for `[aws] region`".into(),
            ));
        }
        (Some(regions), _) => regions.clone(),
        (None, Some(region)) => vec![region.clone()],
        (None, None) => {
            return Err((
                "aws.regions".into(),
                "name the regions the guests may call, like [\"us-east-1\"], or set `[aws] region`"
                    .into(),
            ));
        }
    };
    for (index, region) in regions.iter().enumerate() {
        if !is_region(region) {
            return Err((
                format!("aws.regions[{index}]"),
                format!("{region:?} is not a region name like \"us-east-1\""),
            ));
        }
    }
    if let Some(role) = &raw.role_arn
        && !is_role_arn(role)
    {
        return Err((
            "aws.role_arn".into(),
            format!(
                "{role:?} is not a role ARN: arn:aws:iam::123456789012:role/NAME (the role the host assumes for this activity's requests)"
            ),
        ));
    }
    if let Some(external_id) = &raw.external_id {
        if raw.role_arn.is_none() {
            return Err((
                "aws.external_id".into(),
                "is passed to AssumeRole: set `role_arn` too, or remove it".into(),
            ));
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || "+=,.@:/-_".contains(c);
        if !(2..=1224).contains(&external_id.len()) || !external_id.chars().all(allowed) {
            return Err((
                "aws.external_id".into(),
                "must be 2 to 1224 characters: letters, digits and +=,.@:/-_ (as STS takes it)"
                    .into(),
            ));
        }
    }
    Ok(AwsGrant {
        services: raw.services.clone(),
        regions,
        role_arn: raw.role_arn.clone(),
        external_id: raw.external_id.clone(),
        host_region: host.region.clone(),
        endpoint_url: host.endpoint_url.clone(),
        allow_credential_apis: raw.allow_credential_apis,
        private_endpoints: raw.private_endpoints,
        service_endpoints: service_endpoints_from_env(&raw.services, |name| {
            std::env::var(name).ok()
        }),
    })
}

/// `arn:PARTITION:iam::ACCOUNT:role/PATH/NAME`.
fn is_role_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    matches!(
        parts.as_slice(),
        ["arn", partition, "iam", "", account, resource]
            if !partition.is_empty()
                && account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && resource.strip_prefix("role/").is_some_and(|name| !name.is_empty())
    )
}
