//! AWS requests of a guest, signed by the host: `[activity.aws]`.
//!
//! A guest that calls AWS would otherwise need access keys in its environment, and a
//! compromised or buggy handler could walk off with them. Every request of a guest
//! passes through the host, so the host signs instead: a request whose host is an AWS
//! endpoint of a granted service and region ([`Endpoint::parse`]) loses any
//! `Authorization`, `X-Amz-Date`, `X-Amz-Security-Token` and `X-Amz-Content-Sha256` the
//! guest set, and is signed (SigV4, with the AWS SDK's own `aws-sigv4`) with the host's
//! credential chain, or with the credentials of `role_arn` (STS `AssumeRole`). The
//! guest never holds a credential: not in its environment, not in a response, not in an
//! error.
//!
//! With `[aws] endpoint_url` set (LocalStack, a VPC endpoint), the request goes there
//! instead: path, query and body kept, S3's virtual-hosted form turned path-style,
//! still signed for the service and region the original host named. So the same handler
//! runs unchanged against an emulator and against AWS.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use http_body_util::{BodyExt, Full, Limited};
use tokio::sync::{Mutex, OnceCell};
use wasmtime_wasi_http::{Error, WasiBody};

use super::allow::Scheme;
use super::send::Target;
use crate::aws::AwsConfig;

/// The headers a guest may not set on a signed request: the host writes them.
const SIGNING_HEADERS: [&str; 4] = [
    "authorization",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
];

/// The largest body the host reads whole to sign (every service but S3, whose bodies
/// stream unsigned, `UNSIGNED-PAYLOAD`): AWS's JSON and query APIs take far less
/// (SQS 1 MiB, DynamoDB items 400 KB). Larger fails with `HTTP-request-body-size`.
pub const MAX_SIGNED_BODY_BYTES: usize = 16 << 20;

/// How long before their expiry cached credentials are fetched again: the SDK's own
/// margin, or half their lifetime when that is shorter.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// How long an assumed role's session lasts: STS's default.
const SESSION_SECONDS: i32 = 3600;

/// The name AssumeRole sessions carry, in CloudTrail.
const SESSION_NAME: &str = "sfn-wasm-host";

/// `[activity.aws]`, checked: what the activity's guests may call, signed by the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsGrant {
    /// SigV4 signing names (`s3`, `sqs`).
    pub services: Vec<String>,
    /// Regions (`us-east-1`); the config defaults them to `[aws] region`.
    pub regions: Vec<String>,
    /// A role to assume for these requests, instead of the host's own credentials.
    pub role_arn: Option<String>,
    /// Passed to `AssumeRole`.
    pub external_id: Option<String>,
    /// `[aws] region`, for the credential chain and STS.
    pub host_region: Option<String>,
    /// `[aws] endpoint_url`: where granted requests go instead of AWS.
    pub endpoint_url: Option<String>,
}

impl AwsGrant {
    /// Whether `endpoint` is one of the granted services in a granted region (a global
    /// endpoint needs only its service).
    pub fn allows(&self, endpoint: &Endpoint) -> bool {
        self.services.contains(&endpoint.service)
            && (endpoint.global || self.regions.contains(&endpoint.region))
    }

    /// `check`'s line: `aws s3, sqs in us-east-1 (role arn:...)`, never a credential.
    pub fn describe(&self) -> String {
        let mut line = format!(
            "aws {} in {}, signed by the host",
            self.services.join(", "),
            self.regions.join(", ")
        );
        match &self.role_arn {
            Some(role) => line.push_str(&format!(" as role {role}")),
            None => line.push_str(" with its own credentials"),
        }
        if let Some(endpoint) = &self.endpoint_url {
            line.push_str(&format!(", sent to {endpoint}"));
        }
        line
    }
}

/// The AWS endpoint a request's host names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The SigV4 signing name (`s3`; `ses` for `email.*`).
    pub service: String,
    /// The region the request is signed for (`us-east-1` for a global endpoint).
    pub region: String,
    /// S3's virtual-hosted form: the bucket in the host name.
    pub bucket: Option<String>,
    /// A global endpoint (`iam.amazonaws.com`): no region in the name.
    pub global: bool,
}

impl Endpoint {
    /// Reads `host` (lower case, no port) as an AWS endpoint:
    /// `SERVICE.REGION.amazonaws.com`, `BUCKET.s3.REGION.amazonaws.com`, the global
    /// `SERVICE.amazonaws.com` (signed in `us-east-1`) and `BUCKET.s3.amazonaws.com`.
    /// `None` for anything else, look-alikes included
    /// (`s3.us-east-1.amazonaws.com.attacker.test`).
    pub fn parse(host: &str) -> Option<Self> {
        let name = host.strip_suffix(".amazonaws.com")?;
        let labels: Vec<&str> = name.split('.').collect();
        if labels.iter().any(|label| !is_label(label)) {
            return None;
        }
        let signing_name = |prefix: &str| match prefix {
            "email" => "ses".to_owned(),
            other => other.to_owned(),
        };
        match labels.as_slice() {
            [service] => Some(Self {
                service: signing_name(service),
                region: "us-east-1".into(),
                bucket: None,
                global: true,
            }),
            [service, region] if is_region(region) => Some(Self {
                service: signing_name(service),
                region: (*region).into(),
                bucket: None,
                global: false,
            }),
            [bucket @ .., "s3"] if !bucket.is_empty() => Some(Self {
                service: "s3".into(),
                region: "us-east-1".into(),
                bucket: Some(bucket.join(".")),
                global: true,
            }),
            [bucket @ .., "s3", region] if !bucket.is_empty() && is_region(region) => Some(Self {
                service: "s3".into(),
                region: (*region).into(),
                bucket: Some(bucket.join(".")),
                global: false,
            }),
            _ => None,
        }
    }
}

/// Whether `name` can be a SigV4 signing name or endpoint label: lower-case letters,
/// digits and `-`.
pub fn is_label(label: &str) -> bool {
    !label.is_empty()
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Whether `label` is shaped like a region name (`us-east-1`, `eu-central-2`,
/// `us-gov-west-1`): lower-case words, then a number.
pub fn is_region(label: &str) -> bool {
    let parts: Vec<&str> = label.split('-').collect();
    parts.len() >= 3
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty()
}

/// Signs an activity's granted AWS requests. Credentials are fetched on first use and
/// cached until shortly before they expire; one signer per activity, shared by its
/// tasks.
pub struct AwsSigner {
    grant: AwsGrant,
    endpoint: Option<http::Uri>,
    credentials: CredentialsCache,
}

impl std::fmt::Debug for AwsSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsSigner")
            .field("grant", &self.grant)
            .finish_non_exhaustive()
    }
}

/// Why a granted request could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// No credentials: the chain found none, or the role cannot be assumed. The text
    /// names the AWS error code, never a credential.
    #[error("{0}")]
    Credentials(String),
    /// The body is larger than [`MAX_SIGNED_BODY_BYTES`].
    #[error("the body is over the {MAX_SIGNED_BODY_BYTES} bytes the host signs")]
    BodyTooLarge,
    /// The guest's body stream failed.
    #[error("the request body failed")]
    Body(Error),
    /// The request cannot be signed as written (a header value that is not text).
    #[error("cannot sign the request: {0}")]
    Unsignable(String),
}

impl SignError {
    /// The `wasi:http` error the guest gets.
    pub fn into_error(self) -> Error {
        match self {
            SignError::BodyTooLarge => {
                Error::HttpRequestBodySize(Some(MAX_SIGNED_BODY_BYTES as u64))
            }
            SignError::Body(err) => err,
            other => Error::InternalError(Some(other.to_string())),
        }
    }
}

impl AwsSigner {
    /// A signer for `grant`, with the host's credential chain (or `role_arn`'s
    /// credentials). Nothing is fetched until the first request.
    ///
    /// # Errors
    /// When `endpoint_url` is not a URL with a scheme and host (the config checks it).
    pub fn new(grant: AwsGrant) -> Result<Self, String> {
        let source = CredentialsSource::Lazy {
            aws: AwsConfig {
                region: grant.host_region.clone(),
                endpoint_url: grant.endpoint_url.clone(),
                ..AwsConfig::default()
            },
            role: grant
                .role_arn
                .clone()
                .map(|arn| (arn, grant.external_id.clone())),
            built: Box::default(),
        };
        Self::with_source(grant, source)
    }

    fn with_source(grant: AwsGrant, source: CredentialsSource) -> Result<Self, String> {
        let endpoint = match &grant.endpoint_url {
            Some(url) => {
                let uri: http::Uri = url
                    .parse()
                    .map_err(|err| format!("`[aws] endpoint_url` {url:?}: {err}"))?;
                if uri.authority().is_none() || uri.scheme_str().is_none() {
                    return Err(format!(
                        "`[aws] endpoint_url` {url:?} needs a scheme and host, like http://127.0.0.1:4566"
                    ));
                }
                Some(uri)
            }
            None => None,
        };
        Ok(Self {
            grant,
            endpoint,
            credentials: CredentialsCache::new(source),
        })
    }

    /// The grant.
    pub fn grant(&self) -> &AwsGrant {
        &self.grant
    }

    /// Fetches (or returns the cached) credentials: what `check` verifies.
    ///
    /// # Errors
    /// [`SignError::Credentials`], naming the AWS error code.
    pub async fn credentials(&self) -> Result<Credentials, SignError> {
        self.credentials.get().await
    }

    /// Where a request to `authority` (an AWS endpoint) goes: `[aws] endpoint_url`,
    /// named by the operator and so reachable on loopback and private addresses, else
    /// the AWS host itself over https.
    pub(super) fn destination(&self, host: &str, authority: String) -> Target {
        match &self.endpoint {
            Some(uri) => {
                let scheme = match uri.scheme_str() {
                    Some("https") => Scheme::Https,
                    _ => Scheme::Http,
                };
                Target {
                    scheme,
                    host: uri.host().unwrap_or_default().to_owned(),
                    port: uri.port_u16().unwrap_or(scheme.default_port()),
                    literal: true,
                    authority,
                }
            }
            None => Target {
                scheme: Scheme::Https,
                host: host.to_owned(),
                port: 443,
                literal: false,
                authority,
            },
        }
    }

    /// Rewrites `request` for its destination and signs it for `endpoint` with
    /// `credentials` (from [`AwsSigner::credentials`]): the guest's signing headers
    /// dropped, the URI and `Host` the destination's (S3 path-style at an
    /// `endpoint_url`), the body read whole to be signed (streamed unsigned for S3).
    ///
    /// # Errors
    /// [`SignError`]: a body too large, a failed body stream, an unsignable header.
    pub async fn sign(
        &self,
        request: http::Request<WasiBody>,
        endpoint: &Endpoint,
        credentials: Credentials,
    ) -> Result<http::Request<WasiBody>, SignError> {
        let (mut parts, body) = request.into_parts();
        for name in SIGNING_HEADERS {
            parts.headers.remove(name);
        }
        let original = parts.uri.clone();
        let path = original.path_and_query().map_or("/", |p| p.as_str());
        let uri = match &self.endpoint {
            Some(base) => {
                let prefix = base.path().trim_end_matches('/');
                let path = match &endpoint.bucket {
                    Some(bucket) => format!("{prefix}/{bucket}{path}"),
                    None => format!("{prefix}{path}"),
                };
                let authority = base.authority().map_or("", |a| a.as_str());
                format!(
                    "{}://{authority}{path}",
                    base.scheme_str().unwrap_or("http")
                )
            }
            None => format!(
                "https://{}{path}",
                original.authority().map_or("", |a| a.host())
            ),
        };
        parts.uri = uri
            .parse()
            .map_err(|err| SignError::Unsignable(format!("{err}")))?;
        let host = parts.uri.authority().map_or("", |a| a.as_str()).to_owned();
        parts.headers.insert(
            http::header::HOST,
            http::HeaderValue::from_str(&host)
                .map_err(|err| SignError::Unsignable(err.to_string()))?,
        );

        let s3 = endpoint.service == "s3";
        let (body, bytes) = if s3 {
            (body, None)
        } else {
            let collected = Limited::new(body, MAX_SIGNED_BODY_BYTES)
                .collect()
                .await
                .map_err(|err| match err.downcast::<Error>() {
                    Ok(err) => SignError::Body(*err),
                    Err(_) => SignError::BodyTooLarge,
                })?
                .to_bytes();
            let full = Full::new(collected.clone())
                .map_err(|never| match never {})
                .boxed_unsync();
            (full, Some(collected))
        };

        let identity: Identity = credentials.into();
        let mut settings = SigningSettings::default();
        if s3 {
            // S3 wants the payload hash header, and paths encoded once, as written.
            settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
            settings.percent_encoding_mode = PercentEncodingMode::Single;
            settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        }
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&endpoint.region)
            .name(&endpoint.service)
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|err| SignError::Unsignable(err.to_string()))?
            .into();
        let mut headers = Vec::with_capacity(parts.headers.len());
        for (name, value) in &parts.headers {
            let value = value.to_str().map_err(|_| {
                SignError::Unsignable(format!("the value of the header {name} is not text"))
            })?;
            headers.push((name.as_str(), value));
        }
        let signable_body = match &bytes {
            Some(bytes) => SignableBody::Bytes(bytes),
            None => SignableBody::UnsignedPayload,
        };
        let uri_text = parts.uri.to_string();
        let signable = SignableRequest::new(
            parts.method.as_str(),
            uri_text.as_str(),
            headers.into_iter(),
            signable_body,
        )
        .map_err(|err| SignError::Unsignable(err.to_string()))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|err| SignError::Unsignable(err.to_string()))?
            .into_parts();
        let mut request = http::Request::from_parts(parts, body);
        instructions.apply_to_request_http1x(&mut request);
        Ok(request)
    }
}

/// Where an activity's credentials come from.
enum CredentialsSource {
    /// A provider given directly (the cache's tests).
    #[cfg(test)]
    Provider(SharedCredentialsProvider),
    /// The host's chain (and, with a role, STS), set up on first use: building the
    /// chain is async, and a config with no AWS request should not need credentials.
    Lazy {
        aws: AwsConfig,
        role: Option<(String, Option<String>)>,
        built: Box<OnceCell<Built>>,
    },
}

enum Built {
    Chain(Option<SharedCredentialsProvider>),
    Role {
        /// The host's own chain, which signs the AssumeRole call.
        chain: Option<SharedCredentialsProvider>,
        sts: aws_sdk_sts::Client,
        role_arn: String,
        external_id: Option<String>,
    },
}

impl CredentialsSource {
    async fn fetch(&self) -> Result<Credentials, SignError> {
        let built = match self {
            #[cfg(test)]
            CredentialsSource::Provider(provider) => {
                return provider
                    .provide_credentials()
                    .await
                    .map_err(|err| SignError::Credentials(no_credentials(&err)));
            }
            CredentialsSource::Lazy { aws, role, built } => {
                built
                    .get_or_init(|| async {
                        let shared = crate::aws::sdk_config(aws).await;
                        match role {
                            Some((role_arn, external_id)) => Built::Role {
                                chain: shared.credentials_provider(),
                                sts: aws_sdk_sts::Client::new(&shared),
                                role_arn: role_arn.clone(),
                                external_id: external_id.clone(),
                            },
                            None => Built::Chain(shared.credentials_provider()),
                        }
                    })
                    .await
            }
        };
        match built {
            Built::Chain(Some(provider)) => provider
                .provide_credentials()
                .await
                .map_err(|err| SignError::Credentials(no_credentials(&err))),
            Built::Chain(None) => Err(SignError::Credentials(
                "the host has no AWS credentials provider".into(),
            )),
            Built::Role {
                chain,
                sts,
                role_arn,
                external_id,
            } => {
                // Asked first, so that "no credentials" is not reported as an STS error.
                match chain {
                    Some(chain) => {
                        chain
                            .provide_credentials()
                            .await
                            .map_err(|err| SignError::Credentials(no_credentials(&err)))?;
                    }
                    None => {
                        return Err(SignError::Credentials(
                            "the host has no AWS credentials provider".into(),
                        ));
                    }
                }
                let assumed = sts
                    .assume_role()
                    .role_arn(role_arn)
                    .role_session_name(SESSION_NAME)
                    .set_external_id(external_id.clone())
                    .duration_seconds(SESSION_SECONDS)
                    .send()
                    .await
                    .map_err(|err| {
                        let (code, message) = crate::aws::error_code(&err);
                        SignError::Credentials(format!(
                            "cannot assume {role_arn}: {code}: {message}"
                        ))
                    })?;
                let Some(c) = assumed.credentials else {
                    return Err(SignError::Credentials(format!(
                        "AssumeRole of {role_arn} returned no credentials"
                    )));
                };
                let expiry = SystemTime::try_from(c.expiration).ok();
                Ok(Credentials::new(
                    c.access_key_id,
                    c.secret_access_key,
                    Some(c.session_token),
                    expiry,
                    "AssumeRole",
                ))
            }
        }
    }
}

/// The chain's error, without what it tried in detail (its text can name files).
fn no_credentials(err: &aws_credential_types::provider::error::CredentialsError) -> String {
    use aws_credential_types::provider::error::CredentialsError as E;
    let why = match err {
        E::CredentialsNotLoaded(_) => "the default chain found none",
        E::ProviderTimedOut(_) => "the provider timed out",
        E::InvalidConfiguration(_) => "the AWS configuration is invalid",
        E::ProviderError(_) => "the provider failed",
        _ => "unknown error",
    };
    format!("the host has no AWS credentials: {why}")
}

/// Credentials fetched once and kept until shortly before they expire.
struct CredentialsCache {
    source: CredentialsSource,
    cached: Mutex<Option<(Credentials, SystemTime)>>,
}

impl CredentialsCache {
    fn new(source: CredentialsSource) -> Self {
        Self {
            source,
            cached: Mutex::new(None),
        }
    }

    /// The cached credentials while fresh, else new ones. One fetch at a time: tasks
    /// that ask meanwhile wait for it rather than asking STS too.
    async fn get(&self) -> Result<Credentials, SignError> {
        let mut cached = self.cached.lock().await;
        let now = SystemTime::now();
        if let Some((credentials, fetched)) = cached.as_ref()
            && fresh(credentials, *fetched, now)
        {
            return Ok(credentials.clone());
        }
        let credentials = self.source.fetch().await?;
        *cached = Some((credentials.clone(), now));
        Ok(credentials)
    }
}

/// Whether credentials fetched at `fetched` may still be used at `now`: no expiry, or
/// more than the refresh margin (or half their lifetime, if shorter) left.
fn fresh(credentials: &Credentials, fetched: SystemTime, now: SystemTime) -> bool {
    let Some(expiry) = credentials.expiry() else {
        return true;
    };
    let lifetime = expiry.duration_since(fetched).unwrap_or_default();
    let margin = REFRESH_MARGIN.min(lifetime / 2);
    expiry.duration_since(now).is_ok_and(|left| left > margin)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn endpoint(service: &str, region: &str, bucket: Option<&str>, global: bool) -> Endpoint {
        Endpoint {
            service: service.into(),
            region: region.into(),
            bucket: bucket.map(Into::into),
            global,
        }
    }

    #[test]
    fn aws_endpoints_are_read_from_the_host_name_and_look_alikes_are_not() {
        for (host, expected) in [
            (
                "sqs.us-east-1.amazonaws.com",
                Some(endpoint("sqs", "us-east-1", None, false)),
            ),
            (
                "s3.eu-central-1.amazonaws.com",
                Some(endpoint("s3", "eu-central-1", None, false)),
            ),
            (
                "my.bucket.s3.us-west-2.amazonaws.com",
                Some(endpoint("s3", "us-west-2", Some("my.bucket"), false)),
            ),
            (
                "bucket.s3.amazonaws.com",
                Some(endpoint("s3", "us-east-1", Some("bucket"), true)),
            ),
            (
                "iam.amazonaws.com",
                Some(endpoint("iam", "us-east-1", None, true)),
            ),
            (
                "email.us-east-1.amazonaws.com",
                Some(endpoint("ses", "us-east-1", None, false)),
            ),
            (
                "dynamodb.us-gov-west-1.amazonaws.com",
                Some(endpoint("dynamodb", "us-gov-west-1", None, false)),
            ),
            ("s3.us-east-1.amazonaws.com.attacker.test", None),
            ("amazonaws.com", None),
            ("evil.amazonaws.com.example", None),
            ("sqs.us-east-1.evilamazonaws.com", None),
            ("a.b.sqs.us-east-1.amazonaws.com", None),
            ("sqs..amazonaws.com", None),
            ("SQS.us-east-1.amazonaws.com", None),
        ] {
            assert_eq!(Endpoint::parse(host), expected, "{host}");
        }
    }

    #[test]
    fn a_grant_allows_its_services_in_its_regions() {
        let grant = AwsGrant {
            services: vec!["s3".into(), "sqs".into()],
            regions: vec!["us-east-1".into()],
            role_arn: None,
            external_id: None,
            host_region: None,
            endpoint_url: None,
        };
        assert!(grant.allows(&endpoint("sqs", "us-east-1", None, false)));
        assert!(!grant.allows(&endpoint("sqs", "eu-west-1", None, false)));
        assert!(!grant.allows(&endpoint("sns", "us-east-1", None, false)));
        assert!(grant.allows(&endpoint("s3", "us-east-1", Some("b"), true)));
    }

    /// Credentials that expire `lifetime` after each fetch; counts the fetches.
    #[derive(Debug)]
    struct Expiring {
        lifetime: Duration,
        fetched: std::sync::atomic::AtomicU32,
    }

    impl ProvideCredentials for Expiring {
        fn provide_credentials<'a>(
            &'a self,
        ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            let n = self
                .fetched
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            aws_credential_types::provider::future::ProvideCredentials::ready(Ok(Credentials::new(
                format!("AKID{n}"),
                "secret",
                None,
                Some(SystemTime::now() + self.lifetime),
                "test",
            )))
        }
    }

    #[tokio::test]
    async fn the_cache_fetches_once_and_again_before_expiry() {
        let provider = Arc::new(Expiring {
            lifetime: Duration::from_millis(600),
            fetched: Default::default(),
        });
        let cache = CredentialsCache::new(CredentialsSource::Provider(
            SharedCredentialsProvider::new(ExpiringRef(provider.clone())),
        ));
        let first = cache.get().await.unwrap();
        let again = cache.get().await.unwrap();
        assert_eq!(first.access_key_id(), again.access_key_id(), "cached");
        // Past half of its 600 ms life: fetched again, before it expires.
        tokio::time::sleep(Duration::from_millis(350)).await;
        let refreshed = cache.get().await.unwrap();
        assert_eq!(refreshed.access_key_id(), "AKID1");
        assert_eq!(
            provider.fetched.load(std::sync::atomic::Ordering::SeqCst),
            2
        );
    }

    #[derive(Debug)]
    struct ExpiringRef(Arc<Expiring>);

    impl ProvideCredentials for ExpiringRef {
        fn provide_credentials<'a>(
            &'a self,
        ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            self.0.provide_credentials()
        }
    }

    #[test]
    fn credentials_are_fetched_again_before_they_expire() {
        let now = SystemTime::now();
        let expiring = |seconds| {
            Credentials::new(
                "AKID",
                "secret",
                None,
                Some(now + Duration::from_secs(seconds)),
                "test",
            )
        };
        // An hour's session: kept until 5 minutes before its end.
        assert!(fresh(&expiring(3600), now, now));
        assert!(fresh(&expiring(3600), now, now + Duration::from_secs(3200)));
        assert!(!fresh(
            &expiring(3600),
            now,
            now + Duration::from_secs(3400)
        ));
        // A 4 s session: kept for its first half.
        assert!(fresh(&expiring(4), now, now + Duration::from_secs(1)));
        assert!(!fresh(&expiring(4), now, now + Duration::from_secs(3)));
        // No expiry: kept.
        let forever = Credentials::new("AKID", "secret", None, None, "test");
        assert!(fresh(&forever, now, now + Duration::from_secs(86_400)));
    }
}
