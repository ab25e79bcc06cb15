//! `[host.otel]`: where traces go (an OTLP/HTTP collector), with what headers, trusting
//! which roots.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sfn_wasm_outbound::read_ca_file;

use super::checks::{Problem, at};

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

/// `[host.otel]`, resolved: the collector traces are exported to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtelConfig {
    /// `endpoint`: the OTLP/HTTP collector (`/v1/traces` is appended).
    pub endpoint: String,
    /// `headers`, sent with every export.
    pub headers: OtelHeaders,
    /// `ca_file`: roots trusted for an `https://` collector besides Mozilla's, absolute.
    pub ca_file: Option<PathBuf>,
}

impl OtelConfig {
    /// Checks `[host.otel]`: the endpoint, its headers and its `ca_file` (relative to `base`).
    pub(super) fn resolve(otel: RawOtel, base: &Path) -> Result<Self, Problem> {
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
        Ok(Self {
            endpoint,
            headers: OtelHeaders(headers),
            ca_file,
        })
    }
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
