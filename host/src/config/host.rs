//! `[host]`: process-wide settings.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::checks::{Problem, at, optional, seconds_within, within};
use sfn_wasm_outbound::read_ca_file;

/// The log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For people.
    #[default]
    Text,
    /// One JSON object per line, on stdout.
    Json,
}

/// `[host]` as written.
// Every field is optional, so that a missing `[host]` table and an empty one mean the
// same: serde's `#[serde(default = ...)]` applies only to keys of a table that exists,
// and a derived `Default` would turn `cache` off for a config with no `[host]` at all.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHost {
    pub worker_prefix: Option<String>,
    pub shutdown_grace_seconds: Option<f64>,
    #[serde(default)]
    pub log_format: LogFormat,
    pub cache_dir: Option<PathBuf>,
    pub cache: Option<bool>,
    pub cache_max_mb: Option<u64>,
    pub answer_retry_seconds: Option<f64>,
    pub outbox_dir: Option<PathBuf>,
    pub outbox_max_mb: Option<u64>,
    pub admin_listen: Option<String>,
    pub admin_max_connections: Option<u64>,
    pub admin_token_file: Option<PathBuf>,
    pub otel: Option<RawOtel>,
}

/// `[host.otel]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOtel {
    pub endpoint: String,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    pub ca_file: Option<PathBuf>,
}

/// `[host.otel] headers`: sent with every export (a collector's API key). Their values
/// never reach a log or a `Debug` print: only the names do.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct OtelHeaders(Vec<(String, String)>);

impl OtelHeaders {
    /// The headers, name and value.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

impl std::fmt::Debug for OtelHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(name, _)| (name, "<redacted>")))
            .finish()
    }
}

/// The default of `admin_max_connections` (the admin server's own default).
const DEFAULT_ADMIN_MAX_CONNECTIONS: u64 = 64;
/// The longest token `admin_token_file` may hold: a header value, not a document.
const MAX_ADMIN_TOKEN_BYTES: u64 = 4096;

/// `[host] admin_token_file`, read: the bearer token `/status` requires. Only its
/// SHA-256 is kept (what the admin server compares), and `Debug` shows neither, so the
/// token never reaches a log, a `check` message or a debug print.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken([u8; 32]);

impl AdminToken {
    /// The token's SHA-256.
    pub fn sha256(&self) -> [u8; 32] {
        self.0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// The `[host]` table, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct HostConfig {
    /// Worker names are `PREFIX:RANDOM`.
    pub worker_prefix: String,
    /// After SIGTERM, how long running tasks may take before they are aborted.
    pub shutdown_grace: Duration,
    /// The log format, unless `--log-format` overrides it.
    pub log_format: LogFormat,
    /// Where compiled handlers are kept between runs; `None` when `cache = false` or no
    /// folder could be found.
    pub cache_dir: Option<PathBuf>,
    /// The most the compile cache may hold, in bytes; the least recently used entries
    /// are evicted past it.
    pub cache_max_bytes: u64,
    /// How long the host keeps retrying an answer Step Functions could not be reached
    /// for (network, 5xx, throttling) before it gives up on it.
    pub answer_retry: Duration,
    /// `outbox_dir`: where answers are kept until Step Functions takes them, so that they
    /// outlive the process (see [`crate::outbox`]); `None`: no outbox.
    pub outbox_dir: Option<PathBuf>,
    /// `outbox_max_mb`, in bytes: the most the outbox holds; past it answers are sent
    /// without an entry.
    pub outbox_max_bytes: u64,
    /// Where the admin server (`/metrics`, `/healthz`, `/readyz`, `/status`) listens;
    /// `None`: no admin server.
    pub admin_listen: Option<std::net::SocketAddr>,
    /// `admin_max_connections`: the most connections the admin server keeps open at once
    /// (default 64); one more is answered 503 and closed.
    pub admin_max_connections: usize,
    /// `admin_token_file`, read at start: the bearer token `/status` requires; `None`:
    /// `/status` is open to whoever reaches `admin_listen`.
    pub admin_token: Option<AdminToken>,
    /// `[host.otel] endpoint`: the OTLP/HTTP collector traces go to (`/v1/traces` is
    /// appended). `None`: the `OTEL_EXPORTER_OTLP_ENDPOINT` variable decides, at start.
    pub otel_endpoint: Option<String>,
    /// `[host.otel] headers`.
    pub otel_headers: OtelHeaders,
    /// `[host.otel] ca_file`: roots trusted for an `https://` collector besides Mozilla's.
    pub otel_ca_file: Option<PathBuf>,
}

impl HostConfig {
    /// Checks `[host]`; relative paths resolve against `base`, the config's folder.
    pub(super) fn resolve(raw: RawHost, base: &Path) -> Result<Self, Problem> {
        let grace = raw.shutdown_grace_seconds.unwrap_or(30.0);
        let shutdown_grace =
            seconds_within(grace, 0.0, 86_400.0).map_err(at("shutdown_grace_seconds"))?;
        let worker_prefix = resolve_worker_prefix(raw.worker_prefix)?;
        let cache_dir = match (raw.cache.unwrap_or(true), raw.cache_dir) {
            (false, _) => None,
            (true, Some(dir)) => Some(base.join(dir)),
            (true, None) => default_cache_dir(),
        };
        let cache_max_mb =
            within(raw.cache_max_mb.unwrap_or(1024), 1..=1 << 20).map_err(at("cache_max_mb"))?;
        let retry = raw.answer_retry_seconds.unwrap_or(600.0);
        let answer_retry =
            seconds_within(retry, 0.0, 86_400.0).map_err(at("answer_retry_seconds"))?;
        let (outbox_dir, outbox_max_mb) = resolve_outbox(raw.outbox_dir, raw.outbox_max_mb, base)?;
        let admin_listen = optional(raw.admin_listen.as_deref(), "admin_listen", parse_listen)?;
        let admin_max_connections = within(
            raw.admin_max_connections
                .unwrap_or(DEFAULT_ADMIN_MAX_CONNECTIONS),
            1..=65_536,
        )
        .map_err(at("admin_max_connections"))?;
        let admin_token = optional(
            raw.admin_token_file.map(|path| base.join(path)),
            "admin_token_file",
            |path| read_admin_token(&path),
        )?;
        let (otel_endpoint, otel_headers, otel_ca_file) = match raw.otel {
            None => (None, OtelHeaders::default(), None),
            Some(otel) => resolve_otel(otel, base)?,
        };
        Ok(Self {
            otel_endpoint,
            otel_headers,
            otel_ca_file,
            worker_prefix,
            shutdown_grace,
            log_format: raw.log_format,
            cache_dir,
            cache_max_bytes: cache_max_mb << 20,
            answer_retry,
            outbox_dir,
            outbox_max_bytes: outbox_max_mb << 20,
            admin_listen,
            // Within 1..=65,536: fits every usize this builds for.
            admin_max_connections: usize::try_from(admin_max_connections).unwrap_or(usize::MAX),
            admin_token,
        })
    }
}

/// `worker_prefix` as written, checked; by default the machine's host name.
fn resolve_worker_prefix(prefix: Option<String>) -> Result<String, Problem> {
    match prefix {
        Some(prefix) if prefix.trim().is_empty() || prefix.len() > 64 => {
            Err(at("worker_prefix")("must be 1 to 64 characters".into()))
        }
        Some(prefix) => Ok(prefix),
        None => Ok(gethostname::gethostname().to_string_lossy().into_owned()),
    }
}

/// Checks `outbox_dir` (relative to `base`) and `outbox_max_mb`, which bounds it: the
/// folder, if any, and the bound in MiB.
fn resolve_outbox(
    dir: Option<PathBuf>,
    max_mb: Option<u64>,
    base: &Path,
) -> Result<(Option<PathBuf>, u64), Problem> {
    let outbox_dir = dir.map(|dir| base.join(dir));
    if let Some(dir) = &outbox_dir
        && dir.exists()
        && !dir.is_dir()
    {
        return Err(at("outbox_dir")(format!(
            "{} is not a folder: name a folder on a durable volume (it is created if missing)",
            dir.display()
        )));
    }
    if max_mb.is_some() && outbox_dir.is_none() {
        return Err(at("outbox_max_mb")(
            "bounds `outbox_dir`, which is not set: add `outbox_dir = \"DIR\"` or remove it".into(),
        ));
    }
    let outbox_max_mb = within(max_mb.unwrap_or(100), 1..=1 << 20).map_err(at("outbox_max_mb"))?;
    Ok((outbox_dir, outbox_max_mb))
}

/// Checks `[host.otel]`: the endpoint, its headers and its `ca_file` (relative to `base`).
fn resolve_otel(
    otel: RawOtel,
    base: &Path,
) -> Result<(Option<String>, OtelHeaders, Option<PathBuf>), Problem> {
    let endpoint = check_otel_endpoint(&otel.endpoint).map_err(at("otel.endpoint"))?;
    let headers = otel
        .headers
        .into_iter()
        .map(|(name, value)| check_header(name, value))
        .collect::<Result<Vec<_>, _>>()?;
    let ca_file = otel.ca_file.map(|path| base.join(path));
    if let Some(path) = &ca_file {
        read_ca_file(path).map_err(at("otel.ca_file"))?;
    }
    Ok((Some(endpoint), OtelHeaders(headers), ca_file))
}

/// Reads the bearer token from `path`: one line of visible ASCII (surrounding white space
/// and the final line break are dropped). Messages name the file and never quote it.
fn read_admin_token(path: &Path) -> Result<AdminToken, String> {
    let mut text = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_ADMIN_TOKEN_BYTES + 1).read_to_end(&mut text))
        .map_err(|err| {
            format!(
                "cannot read {}: {err}; write the token /status requires there (one line), or remove the key",
                path.display()
            )
        })?;
    if text.len() as u64 > MAX_ADMIN_TOKEN_BYTES {
        return Err(format!(
            "{} holds more than {MAX_ADMIN_TOKEN_BYTES} bytes: it should hold one token, on one line",
            path.display()
        ));
    }
    let token = text.trim_ascii();
    if token.is_empty() {
        return Err(format!(
            "{} is empty: write the token /status requires there (one line, e.g. from `openssl rand -hex 32`)",
            path.display()
        ));
    }
    if !token.iter().all(u8::is_ascii_graphic) {
        return Err(format!(
            "{} must hold one token of visible ASCII characters, without spaces or line breaks inside",
            path.display()
        ));
    }
    Ok(AdminToken(Sha256::digest(token).into()))
}

/// Parses an admin server address, `IP:PORT` (`127.0.0.1:9464`, `[::1]:9464`,
/// `0.0.0.0:9464` to listen on every interface).
///
/// # Errors
/// What is wrong, in words for a config error or a `--admin-listen` message.
pub fn parse_listen(text: &str) -> Result<std::net::SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        format!(
            "must be IP:PORT, like \"127.0.0.1:9464\" (a host name is not accepted); got {text:?}"
        )
    })
}

/// Checks one `[host.otel] headers` entry: an HTTP header name and a value HTTP allows.
fn check_header(name: String, value: String) -> Result<(String, String), Problem> {
    let key = format!("otel.headers.{name}");
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(at(&key)(
            "is not an HTTP header name: use letters, digits and - (like \"api-key\")".into(),
        ));
    }
    if value.is_empty() || http::HeaderValue::from_str(&value).is_err() {
        // The value is a secret: the message does not repeat it.
        return Err(at(&key)(
            "must be a non-empty header value without control characters or line breaks".into(),
        ));
    }
    Ok((name, value))
}

/// Checks an OTLP/HTTP endpoint: an `http://` or `https://` URL with a host.
///
/// # Errors
/// What is wrong, in words.
pub fn check_otel_endpoint(text: &str) -> Result<String, String> {
    let text = text.trim();
    let rest = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(text.to_owned()),
        _ => Err(format!(
            "must be an http:// or https:// URL of an OTLP/HTTP collector, like \"http://127.0.0.1:4318\"; got {:?}",
            crate::source::redact_url(text)
        )),
    }
}

/// `$XDG_CACHE_HOME/sfn-wasm-host`, else `$HOME/.cache/sfn-wasm-host`: where compiled
/// handlers are kept unless configured otherwise.
pub fn default_cache_dir() -> Option<PathBuf> {
    let from_env = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    from_env("XDG_CACHE_HOME")
        .or_else(|| from_env("HOME").map(|home| home.join(".cache")))
        .map(|dir| dir.join("sfn-wasm-host"))
}
