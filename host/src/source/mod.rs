//! Where a handler's bytes come from: a file, an S3 object, an HTTPS URL or an OCI
//! registry.
//!
//! A remote source is polled every `source_poll_seconds` with a cheap "has it changed?"
//! question (S3: `HeadObject`'s ETag; HTTPS: `If-None-Match` / `If-Modified-Since`; OCI:
//! the manifest digest a tag names now), and only read when it has. Reading is size-capped (`handler_max_mb`) and the bytes are
//! checked against the activity's `sha256` pin, when it has one, before anything
//! compiles them. A fetch that fails leaves the current version serving.

mod cosign;
mod ecr;
mod http;
mod oci;
mod s3;

use std::fmt;
use std::path::PathBuf;

use crate::aws::AwsConfig;
use crate::ids::sha256_hex;

pub use self::cosign::VerifyKey;
pub use self::ecr::authorization_token as ecr_authorization_token;
pub use self::http::HttpSource;
pub use self::oci::{OciHandler, OciSource, WASM_CONFIG, WASM_LAYER};
pub use self::s3::S3Source;

/// Where an activity's handler lives, as written in `handler = "..."`.
///
/// Its `Display` and `Debug` show a URL without its userinfo, query and fragment (see
/// [`redact_url`]): a presigned URL's token or a password never reaches a log, an event
/// or `check`'s output.
#[derive(Clone, PartialEq, Eq)]
pub enum HandlerSource {
    /// A local file (watched for changes unless `watch = false`).
    File(PathBuf),
    /// `s3://BUCKET/KEY`.
    S3 {
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
    },
    /// `https://...` (or `http://` to a loopback address, for local tests).
    Url(String),
    /// `oci://REGISTRY/REPOSITORY:TAG` or `oci://REGISTRY/REPOSITORY@sha256:DIGEST`.
    Oci(OciHandler),
}

impl HandlerSource {
    /// Parses `handler = "..."`: `s3://BUCKET/KEY`, `https://HOST/PATH`,
    /// `oci://REGISTRY/REPOSITORY:TAG` (or `@sha256:DIGEST`), or a path (relative to
    /// `base`, the config file's folder).
    ///
    /// # Errors
    /// What is wrong and what to do, for the config error.
    pub fn parse(text: &str, base: &std::path::Path) -> Result<Self, String> {
        if let Some(rest) = text.strip_prefix("oci://") {
            return OciHandler::parse(rest).map(Self::Oci);
        }
        if let Some(rest) = text.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() || key.is_empty() || key.ends_with('/') {
                return Err(format!(
                    "{text:?} is not an S3 object: write s3://BUCKET/KEY, like \"s3://my-bucket/handlers/enrich.wasm\""
                ));
            }
            return Ok(Self::S3 {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
            });
        }
        if text.starts_with("https://") || text.starts_with("http://") {
            let shown = redact_url(text);
            let uri: ::http::Uri = text
                .parse()
                .map_err(|err| format!("{shown:?} is not a URL: {err}"))?;
            let Some(host) = uri.host() else {
                return Err(format!("{shown:?} has no host"));
            };
            if uri.scheme_str() == Some("http") && !is_loopback(host) {
                return Err(format!(
                    "{shown:?}: plain http:// is accepted only for a loopback address (local tests); use https://"
                ));
            }
            return Ok(Self::Url(text.to_owned()));
        }
        if text.contains("://") {
            return Err(format!(
                "{:?}: the handler must be a file path, s3://BUCKET/KEY, https://URL or oci://REGISTRY/REPOSITORY:TAG",
                redact_url(text)
            ));
        }
        let path = base.join(text);
        if !path.is_file() {
            return Err(format!(
                "{} is not a file: build the handler (e.g. `cargo build --release --target wasm32-wasip2`) or fix the path, which is relative to the config file's folder",
                path.display()
            ));
        }
        Ok(Self::File(path))
    }

    /// This source with `verify_key` (read by `key` only for an OCI source: only its
    /// versions carry signatures).
    ///
    /// # Errors
    /// For the config error, when the source is not `oci://` or `key` fails.
    pub fn with_verify_key(
        self,
        key: impl FnOnce() -> Result<VerifyKey, String>,
    ) -> Result<Self, String> {
        match self {
            Self::Oci(handler) => Ok(Self::Oci(OciHandler {
                verify_key: Some(key()?),
                ..handler
            })),
            other => Err(format!(
                "checks the cosign signatures of an oci:// handler, but the handler is {other}: remove `verify_key`, or ship the handler to an OCI registry and sign it"
            )),
        }
    }

    /// Whether the host polls the source (S3, HTTPS and OCI) rather than watching a file.
    pub fn is_remote(&self) -> bool {
        !matches!(self, Self::File(_))
    }

    /// The local file, for a file source.
    pub fn file(&self) -> Option<&std::path::Path> {
        match self {
            Self::File(path) => Some(path),
            _ => None,
        }
    }
}

impl fmt::Display for HandlerSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
            Self::Url(url) => f.write_str(&redact_url(url)),
            Self::Oci(handler) => handler.fmt(f),
        }
    }
}

impl fmt::Debug for HandlerSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
            Self::S3 { bucket, key } => f
                .debug_struct("S3")
                .field("bucket", bucket)
                .field("key", key)
                .finish(),
            Self::Url(url) => f.debug_tuple("Url").field(&redact_url(url)).finish(),
            Self::Oci(handler) => f.debug_tuple("Oci").field(handler).finish(),
        }
    }
}

/// `url` as it may be printed: without userinfo, query and fragment, which can carry a
/// password or a presigned URL's token (`https://user:pass@host/h.wasm?X-Amz-Signature=..`
/// is shown as `https://host/h.wasm`). A password may hold `/`, `?` or `#` unencoded, so
/// everything up to the last `@` is taken for userinfo: a path with a `@` is shown from
/// after it (too little, never a secret).
pub fn redact_url(url: &str) -> String {
    let url = url.trim();
    let (scheme, rest) = match url.find("://") {
        Some(at) => url.split_at(at + 3),
        None => ("", url),
    };
    let rest = rest.rsplit_once('@').map_or(rest, |(_, after)| after);
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    format!("{scheme}{}", &rest[..end])
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare == "localhost"
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Why a remote handler could not be fetched. The current version keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// S3 said no, or could not be reached.
    #[error("S3 GetObject/HeadObject on {source_name} failed: {message}")]
    S3 {
        /// The source.
        source_name: String,
        /// What the SDK said.
        message: String,
    },
    /// The HTTPS request failed.
    #[error("GET {url} failed: {message}")]
    Http {
        /// The URL, redacted ([`redact_url`]).
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The registry said no, or could not be reached, or holds no component there.
    #[error("{source_name}: {message}")]
    Oci {
        /// The source.
        source_name: String,
        /// What went wrong.
        message: String,
    },
    /// `verify_key` is set and no signature of this version verifies against it: the
    /// version is refused, as one that fails its `sha256` pin is. It is checked again at
    /// the next poll (a signature may be pushed after the artifact, or have been
    /// unreadable this time); `handler:rejected` says so once.
    #[error("{source_name} ({digest}) is refused: {reason}")]
    Unverified {
        /// The source.
        source_name: String,
        /// The manifest digest refused.
        digest: String,
        /// Why: no signature, none by this key, or unreadable.
        reason: String,
    },
    /// A handler file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The module is larger than `handler_max_mb`.
    #[error(
        "{source_name} is larger than the {limit_mb} MiB cap (`handler_max_mb`); raise it, or ship a smaller module"
    )]
    TooLarge {
        /// The source.
        source_name: String,
        /// The cap, in MiB.
        limit_mb: u64,
    },
}

/// What a source holds now.
#[derive(Debug)]
pub enum Fetch {
    /// The same version as last time (same ETag / Last-Modified): nothing was read.
    Unchanged,
    /// A version, read whole.
    Fetched(Fetched),
}

/// A module read from a source.
#[derive(Debug)]
pub struct Fetched {
    /// The module's bytes.
    pub bytes: Vec<u8>,
    /// What identifies this version at the source (ETag, else Last-Modified), to ask
    /// "changed since?" next time.
    pub tag: Option<String>,
}

/// Reads remote sources: one S3 client (built from `[aws]`), one HTTPS client and one
/// registry client, shared by every activity.
pub struct Fetcher {
    s3: S3Source,
    http: HttpSource,
    oci: OciSource,
}

impl Fetcher {
    /// Clients for `aws` (region, endpoint, credentials as Step Functions uses them).
    ///
    /// # Errors
    /// When the TLS client cannot be set up.
    pub async fn new(aws: &AwsConfig) -> Result<Self, rustls::Error> {
        Ok(Self {
            s3: S3Source::new(aws).await,
            http: HttpSource::new()?,
            oci: OciSource::new(aws),
        })
    }

    /// The module at `source` unless its tag is still `known`; at most `max_bytes`.
    /// A file source is read whole every time.
    ///
    /// # Errors
    /// [`SourceError`]: unreachable, refused, missing, or too large.
    pub async fn fetch(
        &self,
        source: &HandlerSource,
        known: Option<&str>,
        max_bytes: u64,
    ) -> Result<Fetch, SourceError> {
        match source {
            HandlerSource::File(path) => {
                let bytes = tokio::fs::read(path)
                    .await
                    .map_err(|source| SourceError::Read {
                        path: path.clone(),
                        source,
                    })?;
                Ok(Fetch::Fetched(Fetched { bytes, tag: None }))
            }
            HandlerSource::S3 { bucket, key } => self.s3.fetch(bucket, key, known, max_bytes).await,
            HandlerSource::Url(url) => self.http.fetch(url, known, max_bytes).await,
            HandlerSource::Oci(handler) => self.oci.fetch(handler, known, max_bytes).await,
        }
    }
}

/// Checks `bytes` against the activity's `sha256` pin.
///
/// # Errors
/// The message for `handler:rejected` (or the start-up error): both digests.
pub fn check_pin(bytes: &[u8], pin: Option<&str>) -> Result<(), String> {
    let Some(pin) = pin else { return Ok(()) };
    let actual = sha256_hex(bytes);
    if actual == pin {
        Ok(())
    } else {
        Err(format!(
            "its sha256 is {actual}, but the activity's `sha256` pin is {pin}: deploy the pinned module, or change the pin"
        ))
    }
}

/// Parses a `sha256` pin: 64 hex digits, any case.
///
/// # Errors
/// What is wrong, for the config error.
pub fn parse_pin(text: &str) -> Result<String, String> {
    let pin = text.trim().to_ascii_lowercase();
    if pin.len() == 64 && pin.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(pin)
    } else {
        Err(format!(
            "must be the module's SHA-256 as 64 hex digits (`sha256sum handler.wasm`); got {text:?}"
        ))
    }
}

/// A body past `max_bytes`, found while reading.
fn too_large(source: impl fmt::Display, max_bytes: u64) -> SourceError {
    SourceError::TooLarge {
        source_name: source.to_string(),
        limit_mb: max_bytes >> 20,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_by_scheme() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("h.wasm"), b"\0asm").unwrap();
        assert_eq!(
            HandlerSource::parse("s3://b/handlers/h.wasm", dir.path()),
            Ok(HandlerSource::S3 {
                bucket: "b".into(),
                key: "handlers/h.wasm".into()
            })
        );
        assert!(HandlerSource::parse("s3://b", dir.path()).is_err());
        assert!(HandlerSource::parse("s3:///k", dir.path()).is_err());
        assert_eq!(
            HandlerSource::parse("https://example.com/h.wasm", dir.path()),
            Ok(HandlerSource::Url("https://example.com/h.wasm".into()))
        );
        assert!(HandlerSource::parse("http://127.0.0.1:9/h.wasm", dir.path()).is_ok());
        assert!(HandlerSource::parse("http://example.com/h.wasm", dir.path()).is_err());
        assert!(HandlerSource::parse("ftp://example.com/h.wasm", dir.path()).is_err());
        assert_eq!(
            HandlerSource::parse("h.wasm", dir.path()),
            Ok(HandlerSource::File(dir.path().join("h.wasm")))
        );
        assert!(HandlerSource::parse("missing.wasm", dir.path()).is_err());
    }

    #[test]
    fn a_url_is_shown_without_userinfo_query_or_fragment() {
        assert_eq!(
            redact_url("https://user:hunter2@example.com:8443/h.wasm?X-Amz-Signature=abc#f"),
            "https://example.com:8443/h.wasm"
        );
        assert_eq!(
            redact_url("http://127.0.0.1:9/h.wasm"),
            "http://127.0.0.1:9/h.wasm"
        );
        assert_eq!(redact_url("https://a:b@host?t=1"), "https://host");
        // A `@` may end userinfo whatever came before it: shown too little, never more.
        assert_eq!(redact_url("https://host/p@q"), "https://q");
        assert_eq!(redact_url("https://u:p/ss@h/x"), "https://h/x");
        assert_eq!(redact_url("https://u:pa?ss@h/"), "https://h/");
        assert_eq!(redact_url("https://u:pa#ss@h/y#f"), "https://h/y");
        assert_eq!(redact_url("user:pw@host/x?token=1"), "host/x");
        let source =
            HandlerSource::Url("https://u:hunter2@example.com/h.wasm?X-Amz-Signature=abc".into());
        for shown in [source.to_string(), format!("{source:?}")] {
            assert!(
                !shown.contains("hunter2") && !shown.contains("X-Amz-Signature"),
                "{shown}"
            );
            assert!(shown.contains("https://example.com/h.wasm"), "{shown}");
        }
        let err = HandlerSource::parse(
            "http://u:hunter2@example.com/h.wasm?sig=abc",
            std::path::Path::new("."),
        )
        .unwrap_err();
        assert!(
            !err.contains("hunter2") && !err.contains("sig=abc"),
            "{err}"
        );
    }

    #[test]
    fn a_pin_accepts_only_its_module() {
        let digest = sha256_hex(b"module");
        assert!(check_pin(b"module", Some(&digest)).is_ok());
        assert!(
            check_pin(b"other", Some(&digest))
                .unwrap_err()
                .contains(&digest)
        );
        assert!(check_pin(b"other", None).is_ok());
        assert_eq!(parse_pin(&digest.to_uppercase()), Ok(digest));
        assert!(parse_pin("abc").is_err());
    }
}
