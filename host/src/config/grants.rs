//! The grants keys of an `[[activity]]`: `allowed_outbound_hosts`, `[activity.env]`,
//! `[[activity.dir]]` and `[activity.outbound]`, resolved into the activity's
//! [`GrantsConfig`].

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::checks::{Problem, within};
use crate::grants::{DirGrant, EnvSource, EnvVar, GrantsConfig, check_guest_path};
use crate::outbound::{AllowedHost, OutboundLimits};

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
    pub outbound: OutboundLimits,
}

/// Checks and resolves an activity's grants; on error, the key under the activity and
/// the message.
pub(super) fn resolve(activity: &RawGrants<'_>, base: &Path) -> Result<GrantsConfig, Problem> {
    let mut allowed_outbound_hosts = Vec::with_capacity(activity.allowed_outbound_hosts.len());
    for (index, entry) in activity.allowed_outbound_hosts.iter().enumerate() {
        let entry = AllowedHost::parse(entry)
            .map_err(|message| (format!("allowed_outbound_hosts[{index}]"), message))?;
        allowed_outbound_hosts.push(entry);
    }

    let mut env = Vec::with_capacity(activity.env.len());
    for (name, value) in activity.env {
        let key = format!("env.{name}");
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err((
                key,
                "a variable name must be non-empty, without `=` or NUL".into(),
            ));
        }
        let source = match value {
            toml::Value::String(literal) => EnvSource::Literal(literal.clone()),
            toml::Value::Table(table)
                if table.len() == 1 && table.get("from_env").is_some_and(toml::Value::is_str) =>
            {
                let from = table["from_env"].as_str().unwrap_or_default().to_owned();
                EnvSource::FromEnv(from)
            }
            _ => {
                return Err((
                    key,
                    "must be a string (`NAME = \"value\"`) or `{ from_env = \"HOST_VARIABLE\" }`"
                        .into(),
                ));
            }
        };
        if let EnvSource::Literal(value) = &source
            && value.contains('\0')
        {
            return Err((key, "a value cannot contain NUL".into()));
        }
        let var = EnvVar {
            name: name.clone(),
            source,
        };
        // Read now, so that a missing variable stops the host before it polls.
        var.value().map_err(|message| (key, message))?;
        env.push(var);
    }

    let mut dirs: Vec<DirGrant> = Vec::with_capacity(activity.dir.len());
    for (index, dir) in activity.dir.iter().enumerate() {
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

    let limits = activity.outbound;
    within(limits.max_requests, 0..=1_000_000)
        .map_err(|message| ("outbound.max_requests".to_owned(), message))?;
    within(limits.max_response_bytes, 0..=1 << 40)
        .map_err(|message| ("outbound.max_response_bytes".to_owned(), message))?;
    within(limits.connect_timeout_ms, 1..=3_600_000)
        .map_err(|message| ("outbound.connect_timeout_ms".to_owned(), message))?;
    within(limits.first_byte_timeout_ms, 1..=86_400_000)
        .map_err(|message| ("outbound.first_byte_timeout_ms".to_owned(), message))?;

    Ok(GrantsConfig {
        allowed_outbound_hosts,
        env,
        dirs,
        outbound: limits,
    })
}
