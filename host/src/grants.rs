//! What an activity's guests may reach beyond their own memory: environment variables,
//! preopened folders and outbound HTTP. Nothing unless the config grants it.
//!
//! The config names the grants ([`EnvVar`], [`DirGrant`], the allow-list and limits);
//! [`Grants`] is their resolved form, built once per activity (and again on SIGHUP, to
//! re-read `from_env` values); each task's instance gets them as a
//! [`Capability`]: its WASI context's environment and folders, and its outbound hooks.
//! Grants belong to the activity, not to the module: a hot swap keeps them.

use std::path::PathBuf;
use std::sync::Arc;

use sfn_wasm_engine::{Capability, InstanceBuilder};
use sfn_wasm_outbound::{
    AllowList, AllowedHost, AwsGrant, AwsSigner, GuestSockets, OutboundLimits, OutboundPolicy,
    OutboundTask, read_ca_file,
};
use tokio::sync::watch;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::secrets::{SecretRef, SecretStore};

/// Where an environment variable's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvSource {
    /// The value written in the config.
    Literal(String),
    /// The host's own environment variable of this name, read at start and on SIGHUP.
    FromEnv(String),
    /// A secret of Secrets Manager or a parameter of Parameter Store, read at start and
    /// every `refresh_seconds` (and on SIGHUP).
    Secret(SecretRef),
}

/// One entry of `[activity.env]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVar {
    /// The name the guest sees.
    pub name: String,
    /// Where its value comes from.
    pub source: EnvSource,
}

impl EnvVar {
    /// The value, read now (a secret's from `secrets`, which reads it).
    ///
    /// # Errors
    /// When a `from_env` variable is not set, or not UTF-8, or a secret has no value in
    /// `secrets`: the message names it.
    pub fn value(&self, secrets: &SecretStore) -> Result<String, String> {
        match &self.source {
            EnvSource::Literal(value) => Ok(value.clone()),
            EnvSource::Secret(secret) => secrets.get(&secret.source).ok_or_else(|| {
                format!(
                    "reads {}, which the host has not read (it reads secrets when it loads the config)",
                    secret.source
                )
            }),
            EnvSource::FromEnv(host_name) => match std::env::var(host_name) {
                Ok(value) => Ok(value),
                Err(std::env::VarError::NotPresent) => Err(format!(
                    "reads {host_name} from the host's environment, which does not set it: export {host_name} before starting the host, or give a literal value"
                )),
                Err(std::env::VarError::NotUnicode(_)) => Err(format!(
                    "reads {host_name} from the host's environment, whose value is not UTF-8"
                )),
            },
        }
    }
}

/// One `[[activity.dir]]`: a host folder the guest sees at `guest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    /// The host folder, absolute.
    pub host: PathBuf,
    /// Where the guest sees it (an absolute guest path).
    pub guest: String,
    /// Whether the guest may create, change and delete files in it.
    pub writable: bool,
}

/// Checks a guest path for a preopened folder: absolute, without `.`, `..` or empty
/// parts (`/` itself is allowed); the message says what a valid one looks like.
///
/// # Errors
/// The message, when `guest` is not such a path.
pub fn check_guest_path(guest: &str) -> Result<(), String> {
    let clean = guest == "/"
        || (guest.starts_with('/')
            && !guest.contains('\0')
            && guest
                .split('/')
                .skip(1)
                .all(|part| !part.is_empty() && part != "." && part != ".."));
    if clean {
        Ok(())
    } else {
        Err(format!(
            "{guest:?} must be an absolute guest path like \"/data\", without `.`, `..` or empty parts"
        ))
    }
}

/// The grants of one activity, as the config states them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantsConfig {
    /// `allowed_outbound_hosts`.
    pub allowed_outbound_hosts: Vec<AllowedHost>,
    /// `[activity.env]`, in the config's order.
    pub env: Vec<EnvVar>,
    /// `[[activity.dir]]`.
    pub dirs: Vec<DirGrant>,
    /// `[activity.outbound]`'s limits and pool settings.
    pub outbound: OutboundLimits,
    /// `[activity.outbound] ca_file`: extra trusted roots (PEM) for the activity's https,
    /// absolute.
    pub ca_file: Option<PathBuf>,
    /// `[activity.aws]`: AWS requests the host signs.
    pub aws: Option<AwsGrant>,
}

impl GrantsConfig {
    /// One line per grant, for `check`: `env NAME (from_env X)`, `dir /data -> /srv/ref
    /// (read-only)`, `outbound https://api.example.com:443`; `none` when there is none.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for entry in &self.allowed_outbound_hosts {
            lines.push(format!("outbound {entry}"));
        }
        if !self.allowed_outbound_hosts.is_empty() {
            let limits = &self.outbound;
            lines.push(format!(
                "outbound limits: {} requests ({} at once), {} bytes of responses per task; connect {} ms, first byte {} ms",
                limits.max_requests,
                limits.max_concurrent_requests,
                limits.max_response_bytes,
                limits.connect_timeout_ms,
                limits.first_byte_timeout_ms
            ));
        }
        if !self.allowed_outbound_hosts.is_empty() || self.aws.is_some() {
            let limits = &self.outbound;
            lines.push(if limits.pool_idle_seconds == 0 {
                "outbound connections: not reused (pool_idle_seconds = 0)".to_owned()
            } else {
                format!(
                    "outbound connections: reused while idle up to {} s, at most {} idle per host and {} in all",
                    limits.pool_idle_seconds, limits.pool_max_idle_per_host, limits.pool_max_idle
                )
            });
        }
        if let Some(ca_file) = &self.ca_file {
            lines.push(format!(
                "outbound ca_file {} (added to the Mozilla roots)",
                ca_file.display()
            ));
        }
        if let Some(aws) = &self.aws {
            lines.push(aws.describe());
        }
        for var in &self.env {
            lines.push(match &var.source {
                EnvSource::Literal(_) => format!("env {} (literal)", var.name),
                EnvSource::FromEnv(from) => format!("env {} (from_env {from})", var.name),
                EnvSource::Secret(secret) => format!(
                    "env {} ({}, read again every {} s)",
                    var.name,
                    secret.source,
                    secret.refresh.as_secs()
                ),
            });
        }
        for dir in &self.dirs {
            lines.push(format!(
                "dir {} -> {} ({})",
                dir.guest,
                dir.host.display(),
                if dir.writable {
                    "writable"
                } else {
                    "read-only"
                }
            ));
        }
        if lines.is_empty() {
            lines.push("none (no network, environment or files)".to_owned());
        }
        lines
    }
}

/// Why an activity's grants could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// A `from_env` variable is missing.
    #[error("`env.{name}` {message}")]
    Env {
        /// The guest's variable.
        name: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// The TLS client for https entries could not be set up.
    #[error("`allowed_outbound_hosts`: cannot set up TLS for https requests: {0}")]
    Tls(String),
    /// `[activity.outbound] ca_file` cannot be read (it could when the config was checked).
    #[error("`outbound.ca_file`: {0}")]
    CaFile(String),
    /// `[activity.aws]` cannot be set up.
    #[error("`aws`: {0}")]
    Aws(String),
}

/// The resolved grants of one activity: what each of its tasks gets. Its `Debug` shows
/// the variables' names, never their values (`from_env` is for secrets).
pub struct Grants {
    env: Vec<(String, String)>,
    dirs: Vec<DirGrant>,
    outbound: Arc<OutboundPolicy>,
}

impl std::fmt::Debug for Grants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grants")
            .field(
                "env",
                &self.env.iter().map(|(name, _)| name).collect::<Vec<_>>(),
            )
            .field("dirs", &self.dirs)
            .field("outbound", &self.outbound)
            .finish()
    }
}

impl Default for Grants {
    /// Nothing: no environment, no folders, no outbound requests.
    fn default() -> Self {
        Self {
            env: Vec::new(),
            dirs: Vec::new(),
            outbound: Arc::new(OutboundPolicy::deny_all()),
        }
    }
}

impl Grants {
    /// Resolves `config`: reads `from_env` values now. A config whose environment reads
    /// secrets needs [`Grants::resolve_with`].
    ///
    /// # Errors
    /// [`GrantError`] naming the key.
    pub fn resolve(config: &GrantsConfig) -> Result<Self, GrantError> {
        Self::resolve_with(
            config,
            &SecretStore::default(),
            &GuestSockets::for_process(),
        )
    }

    /// Resolves `config`: reads `from_env` values now, secrets' from `secrets`; the
    /// guest's connections count against `sockets`, the host's share for every guest.
    ///
    /// # Errors
    /// [`GrantError`] naming the key.
    pub fn resolve_with(
        config: &GrantsConfig,
        secrets: &SecretStore,
        sockets: &GuestSockets,
    ) -> Result<Self, GrantError> {
        let env = config
            .env
            .iter()
            .map(|var| {
                var.value(secrets)
                    .map(|value| (var.name.clone(), value))
                    .map_err(|message| GrantError::Env {
                        name: var.name.clone(),
                        message,
                    })
            })
            .collect::<Result<_, _>>()?;
        let aws = config
            .aws
            .clone()
            .map(AwsSigner::new)
            .transpose()
            .map_err(GrantError::Aws)?;
        let roots = match &config.ca_file {
            Some(path) => read_ca_file(path).map_err(GrantError::CaFile)?,
            None => Vec::new(),
        };
        let outbound = OutboundPolicy::new(
            AllowList::new(config.allowed_outbound_hosts.clone()),
            config.outbound,
            aws,
            roots,
            sockets.clone(),
        )
        .map_err(|err| GrantError::Tls(err.to_string()))?;
        Ok(Self {
            env,
            dirs: config.dirs.clone(),
            outbound: Arc::new(outbound),
        })
    }

    /// The variables the guest sees, in order.
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// The folders the guest sees.
    pub fn dirs(&self) -> &[DirGrant] {
        &self.dirs
    }

    /// The outbound HTTP policy.
    pub fn outbound(&self) -> &Arc<OutboundPolicy> {
        &self.outbound
    }

    /// Adds the environment and the folders to a task's WASI context.
    ///
    /// # Errors
    /// When a granted folder cannot be opened (removed since the host started): the
    /// message names it.
    fn apply(&self, builder: &mut WasiCtxBuilder) -> Result<(), String> {
        for (name, value) in &self.env {
            builder.env(name, value);
        }
        for dir in &self.dirs {
            let perms = if dir.writable {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            builder
                .preopened_dir(&dir.host, &dir.guest, perms)
                .map_err(|err| {
                    format!(
                        "cannot open the folder granted as {} ({}): {err:#}",
                        dir.guest,
                        dir.host.display()
                    )
                })?;
        }
        Ok(())
    }
}

/// What the grants give a task's instance: the environment and the folders in its WASI
/// context, and its outbound HTTP through the activity's policy (every request refused
/// when the allow-list is empty and no AWS service is granted).
impl Capability for Grants {
    fn prepare(&self, instance: &mut InstanceBuilder<'_>) -> Result<(), String> {
        self.apply(instance.wasi())?;
        let task = instance.task();
        let outbound = OutboundTask::new(
            self.outbound.clone(),
            task.activity_arn.clone(),
            task.task_id.clone(),
            instance.log_lines().clone(),
        );
        instance.set_outbound(outbound);
        Ok(())
    }
}

/// An activity's current grants, swapped whole on SIGHUP and when a secret changes.
/// Cheap to clone.
#[derive(Clone)]
pub struct GrantsSlot {
    config: Arc<GrantsConfig>,
    secrets: Arc<SecretStore>,
    current: Arc<watch::Sender<Arc<Grants>>>,
}

impl GrantsSlot {
    /// A slot holding `grants`, resolved from `config` and `secrets`.
    pub fn new(config: GrantsConfig, grants: Grants, secrets: Arc<SecretStore>) -> Self {
        Self {
            config: Arc::new(config),
            secrets,
            current: Arc::new(watch::channel(Arc::new(grants)).0),
        }
    }

    /// Keeps the activity's secrets fresh until `stop`: each is read again every
    /// `refresh_seconds` (all at once when the returned `Notify` fires: SIGHUP), and the
    /// grants are resolved again when a value changed, so that tasks started after see
    /// it. A failed read keeps the last good value and logs `grants:refresh_failed`
    /// (warn; `activity`, `name`, `code`). `None`, and nothing started, without secrets.
    pub fn keep_secrets_fresh(
        &self,
        activity: Arc<str>,
        stop: tokio_util::sync::CancellationToken,
    ) -> Option<Arc<tokio::sync::Notify>> {
        let secrets: Vec<(String, SecretRef)> = self
            .config
            .env
            .iter()
            .filter_map(|var| match &var.source {
                EnvSource::Secret(secret) => Some((var.name.clone(), secret.clone())),
                _ => None,
            })
            .collect();
        if secrets.is_empty() {
            return None;
        }
        let now = Arc::new(tokio::sync::Notify::new());
        let wake = now.clone();
        let slot = self.clone();
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let mut due: Vec<_> = secrets.iter().map(|(_, s)| start + s.refresh).collect();
            loop {
                let next = due.iter().min().copied().unwrap_or(start);
                let all = tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep_until(next) => false,
                    () = wake.notified() => true,
                };
                let mut changed = false;
                for ((name, secret), due) in secrets.iter().zip(due.iter_mut()) {
                    let now = tokio::time::Instant::now();
                    if !all && *due > now {
                        continue;
                    }
                    *due = now + secret.refresh;
                    match slot.secrets.read(&secret.source).await {
                        Ok(new) => changed |= new,
                        Err(err) => tracing::warn!(
                            event = "grants:refresh_failed",
                            activity = &*activity,
                            name = name.as_str(),
                            code = err.code.as_str(),
                            "grants:refresh_failed: `env.{name}`: {err}; the last value stays"
                        ),
                    }
                }
                if changed && let Err(err) = slot.refresh() {
                    tracing::warn!(
                        activity = &*activity,
                        error = %err,
                        "cannot resolve the grants with the new secrets; the previous ones stay"
                    );
                }
            }
        });
        Some(now)
    }

    /// The grants new tasks get.
    pub fn current(&self) -> Arc<Grants> {
        self.current.borrow().clone()
    }

    /// Resolves the grants again (re-reading `from_env` values, taking the secrets'
    /// current values) and swaps them in: tasks that start after see them, running ones
    /// keep theirs. On error the previous grants stay.
    ///
    /// # Errors
    /// As [`Grants::resolve`].
    pub fn refresh(&self) -> Result<(), GrantError> {
        let sockets = self.current().outbound().sockets().clone();
        let grants = Grants::resolve_with(&self.config, &self.secrets, &sockets)?;
        self.current.send_replace(Arc::new(grants));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_env_is_read_at_resolve_and_on_refresh() {
        let name = "SFN_WASM_HOST_TEST_GRANT_REFRESH";
        let config = GrantsConfig {
            env: vec![
                EnvVar {
                    name: "GREETING".into(),
                    source: EnvSource::Literal("hello".into()),
                },
                EnvVar {
                    name: "API_KEY".into(),
                    source: EnvSource::FromEnv(name.into()),
                },
            ],
            ..GrantsConfig::default()
        };
        // SAFETY: this test alone uses this variable; no other thread reads it.
        unsafe { std::env::remove_var(name) };
        let err = Grants::resolve(&config).expect_err("the variable is not set");
        assert!(err.to_string().contains("`env.API_KEY`"), "{err}");
        assert!(err.to_string().contains(name), "{err}");

        // SAFETY: as above.
        unsafe { std::env::set_var(name, "one") };
        let slot = GrantsSlot::new(
            config.clone(),
            Grants::resolve(&config).unwrap(),
            Arc::default(),
        );
        assert_eq!(
            slot.current().env(),
            [
                ("GREETING".to_owned(), "hello".to_owned()),
                ("API_KEY".to_owned(), "one".to_owned())
            ]
        );
        // SAFETY: as above.
        unsafe { std::env::set_var(name, "two") };
        slot.refresh().unwrap();
        assert_eq!(slot.current().env()[1].1, "two");
        // A refresh that fails keeps what was there.
        // SAFETY: as above.
        unsafe { std::env::remove_var(name) };
        assert!(slot.refresh().is_err());
        assert_eq!(slot.current().env()[1].1, "two");
        // Values never show in a debug print.
        let printed = format!("{:?}", slot.current());
        assert!(
            printed.contains("API_KEY") && !printed.contains("two"),
            "{printed}"
        );
    }
}
