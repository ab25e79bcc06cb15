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
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::sync::{Mutex, OnceCell};
use wasmtime_wasi_http::{Error, WasiBody};

use super::address::Reach;
use super::allow::Scheme;
use super::send::{Held, HeldBody, Target};
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
    /// `allow_credential_apis`: the guest may call the APIs whose responses carry
    /// credentials (STS `AssumeRole`, `GetSessionToken`, ECR's `GetAuthorizationToken`,
    /// ...). Off by default: signing them would hand the guest credentials.
    pub allow_credential_apis: bool,
    /// `private_endpoints`: AWS names may resolve to private addresses (VPC interface
    /// endpoints with private DNS); never to loopback or link-local ones.
    pub private_endpoints: bool,
    /// Per-service destinations (signing name, URL), from the AWS SDKs' own
    /// `AWS_ENDPOINT_URL_<SERVICE>` variables ([`service_endpoints_from_env`]): one
    /// service to a VPC endpoint or an emulator, the others to AWS. `endpoint_url`, set
    /// in the config, wins over them, as explicit settings win in the SDKs.
    pub service_endpoints: Vec<(String, String)>,
}

/// The `AWS_ENDPOINT_URL_<SERVICE>` variable the AWS SDKs read for a service, by its
/// signing name: the service id upper-cased, spaces and `-` as `_` (`SQS`, `DYNAMODB`,
/// `SECRETS_MANAGER`, `SFN` for `states`).
pub fn endpoint_variable(service: &str) -> String {
    let id = match service {
        "states" => "SFN",
        "secretsmanager" => "SECRETS_MANAGER",
        "events" => "EVENTBRIDGE",
        "monitoring" => "CLOUDWATCH",
        "logs" => "CLOUDWATCH_LOGS",
        "apigateway" => "API_GATEWAY",
        "cognito-idp" => "COGNITO_IDENTITY_PROVIDER",
        "es" => "OPENSEARCH",
        other => other,
    };
    format!(
        "AWS_ENDPOINT_URL_{}",
        id.to_ascii_uppercase().replace('-', "_")
    )
}

/// The granted `services` whose `AWS_ENDPOINT_URL_<SERVICE>` is set (and not empty) in
/// `env`, with its value.
pub fn service_endpoints_from_env(
    services: &[String],
    env: impl Fn(&str) -> Option<String>,
) -> Vec<(String, String)> {
    services
        .iter()
        .filter_map(|service| {
            let url = env(&endpoint_variable(service)).filter(|url| !url.is_empty())?;
            Some((service.clone(), url))
        })
        .collect()
}

impl AwsGrant {
    /// Whether `endpoint` is one of the granted services in a granted region. A global
    /// endpoint (`sts.amazonaws.com`, `BUCKET.s3.amazonaws.com`) is in the region it is
    /// signed for (`us-east-1`): a grant limited to other regions does not reach it.
    pub fn allows(&self, endpoint: &Endpoint) -> bool {
        self.services.contains(&endpoint.service) && self.regions.contains(&endpoint.region)
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
        if self.endpoint_url.is_some() {
            // Where, without what a URL may carry (userinfo, a query token).
            line.push_str(", sent to `[aws] endpoint_url`");
        } else {
            for (service, _) in &self.service_endpoints {
                line.push_str(&format!(
                    ", {service} sent to ${}",
                    endpoint_variable(service)
                ));
            }
        }
        if self.private_endpoints {
            line.push_str(", private endpoints");
        }
        if self.allow_credential_apis {
            line.push_str(", credential APIs allowed");
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
    /// `service_endpoints`, parsed.
    service_endpoints: Vec<(String, http::Uri)>,
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
    /// (for the host's log and `check`) names the AWS error code, never a credential;
    /// the guest hears only the code.
    #[error("{message}")]
    Credentials {
        /// AWS's error code, or the chain's kind of failure.
        code: String,
        /// What went wrong, for the operator (may name the role).
        message: String,
    },
    /// The body is larger than [`MAX_SIGNED_BODY_BYTES`].
    #[error("the body is over the {MAX_SIGNED_BODY_BYTES} bytes the host signs")]
    BodyTooLarge,
    /// The task's signed bodies in flight would hold more than its
    /// `max_request_buffer_bytes`.
    #[error(
        "the task's request bodies held for signing would exceed {0} bytes (`outbound.max_request_buffer_bytes`)"
    )]
    BufferFull(u64),
    /// The request is an API whose response carries credentials, not allowed.
    #[error(
        "{0} returns credentials, which a guest may not receive; allow it with `[activity.aws] allow_credential_apis = true`"
    )]
    CredentialApi(String),
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
            SignError::BufferFull(limit) => Error::HttpRequestBodySize(Some(limit)),
            SignError::CredentialApi(_) => Error::HttpRequestDenied,
            SignError::Body(err) => err,
            // Composed: the code only, never the role or what the chain tried.
            SignError::Credentials { code, .. } => Error::InternalError(Some(format!(
                "the host has no AWS credentials for this request ({code})"
            ))),
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
        let endpoint = grant
            .endpoint_url
            .as_deref()
            .map(|url| endpoint_uri(url, "`[aws] endpoint_url`"))
            .transpose()?;
        let service_endpoints = grant
            .service_endpoints
            .iter()
            .map(|(service, url)| {
                let name = format!("${}", endpoint_variable(service));
                Ok((service.clone(), endpoint_uri(url, &name)?))
            })
            .collect::<Result<_, String>>()?;
        Ok(Self {
            grant,
            endpoint,
            service_endpoints,
            credentials: CredentialsCache::new(source),
        })
    }

    /// Where `service`'s requests go instead of AWS, if anywhere: `[aws] endpoint_url`,
    /// else the service's own `AWS_ENDPOINT_URL_<SERVICE>`.
    fn endpoint_for(&self, service: &str) -> Option<&http::Uri> {
        self.endpoint.as_ref().or_else(|| {
            self.service_endpoints
                .iter()
                .find(|(name, _)| name == service)
                .map(|(_, uri)| uri)
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
    /// the AWS host itself over https (at a public address, or a private one with
    /// `private_endpoints`).
    pub(super) fn destination(&self, endpoint: &Endpoint, host: &str, authority: String) -> Target {
        match self.endpoint_for(&endpoint.service) {
            Some(uri) => {
                let scheme = match uri.scheme_str() {
                    Some("https") => Scheme::Https,
                    _ => Scheme::Http,
                };
                Target {
                    scheme,
                    host: uri.host().unwrap_or_default().to_owned(),
                    port: uri.port_u16().unwrap_or(scheme.default_port()),
                    reach: Reach::Literal,
                    authority,
                }
            }
            None => Target {
                scheme: Scheme::Https,
                host: host.to_owned(),
                port: 443,
                reach: if self.grant.private_endpoints {
                    Reach::PrivateNetwork
                } else {
                    Reach::Public
                },
                authority,
            },
        }
    }

    /// Rewrites `request` for its destination and signs it for `endpoint` with
    /// `credentials` (from [`AwsSigner::credentials`]): the guest's signing headers
    /// dropped, the URI and `Host` the destination's (S3 path-style at an
    /// `endpoint_url`), the body read whole to be signed (streamed unsigned for S3),
    /// its bytes counted in `held` (the task's budget) until hyper has sent them.
    ///
    /// # Errors
    /// [`SignError`]: a body too large for one request or for the task's budget, a
    /// failed body stream, an unsignable header, an API that vends credentials.
    pub(super) async fn sign(
        &self,
        request: http::Request<WasiBody>,
        endpoint: &Endpoint,
        credentials: Credentials,
        mut held: Held,
    ) -> Result<http::Request<WasiBody>, SignError> {
        let (mut parts, body) = request.into_parts();
        // Named by the URI or headers: refused before the body is read.
        if !self.grant.allow_credential_apis
            && let Some(api) = credential_api(endpoint, &parts, None)
        {
            tokio::spawn(drain(body));
            return Err(SignError::CredentialApi(api));
        }
        for name in SIGNING_HEADERS {
            parts.headers.remove(name);
        }
        let original = parts.uri.clone();
        let path = original.path_and_query().map_or("/", |p| p.as_str());
        let uri = match self.endpoint_for(&endpoint.service) {
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
            let collected = read_held(body, &mut held).await?;
            if !self.grant.allow_credential_apis
                && let Some(api) = credential_api(endpoint, &parts, Some(&collected))
            {
                return Err(SignError::CredentialApi(api));
            }
            let full = HeldBody::new(collected.clone(), held).boxed_unsync();
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
                    .map_err(|err| no_credentials(&err));
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
                .map_err(|err| no_credentials(&err)),
            Built::Chain(None) => Err(no_provider()),
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
                            .map_err(|err| no_credentials(&err))?;
                    }
                    None => return Err(no_provider()),
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
                        SignError::Credentials {
                            message: format!("cannot assume {role_arn}: {code}: {message}"),
                            code: code.to_string(),
                        }
                    })?;
                let Some(c) = assumed.credentials else {
                    return Err(SignError::Credentials {
                        code: "NoCredentials".into(),
                        message: format!("AssumeRole of {role_arn} returned no credentials"),
                    });
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

/// `url` as a destination: a URL with a scheme and host. The error names `what` (the key
/// or variable), never the URL, which may carry a token.
fn endpoint_uri(url: &str, what: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|err| format!("{what} is not a URL: {err}"))?;
    if uri.authority().is_none() || uri.scheme_str().is_none() {
        return Err(format!(
            "{what} needs a scheme and host, like http://127.0.0.1:4566"
        ));
    }
    Ok(uri)
}

/// The chain's error, without what it tried in detail (its text can name files).
fn no_credentials(err: &aws_credential_types::provider::error::CredentialsError) -> SignError {
    use aws_credential_types::provider::error::CredentialsError as E;
    let (code, why) = match err {
        E::CredentialsNotLoaded(_) => ("CredentialsNotLoaded", "the default chain found none"),
        E::ProviderTimedOut(_) => ("ProviderTimedOut", "the provider timed out"),
        E::InvalidConfiguration(_) => ("InvalidConfiguration", "the AWS configuration is invalid"),
        E::ProviderError(_) => ("ProviderError", "the provider failed"),
        _ => ("Unknown", "unknown error"),
    };
    SignError::Credentials {
        code: code.into(),
        message: format!("the host has no AWS credentials: {why}"),
    }
}

fn no_provider() -> SignError {
    SignError::Credentials {
        code: "NoProvider".into(),
        message: "the host has no AWS credentials provider".into(),
    }
}

/// Reads a body to be signed whole, holding its bytes in `held` (the task's budget):
/// more than [`MAX_SIGNED_BODY_BYTES`] for one body, or than the task's budget for all
/// of them, fails before it is held.
async fn read_held(mut body: WasiBody, held: &mut Held) -> Result<Bytes, SignError> {
    let mut collected = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(SignError::Body)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if collected.len() + data.len() > MAX_SIGNED_BODY_BYTES {
            tokio::spawn(drain(body));
            return Err(SignError::BodyTooLarge);
        }
        if !held.take(data.len() as u64) {
            tokio::spawn(drain(body));
            return Err(SignError::BufferFull(held.limit()));
        }
        collected.extend_from_slice(&data);
    }
    Ok(collected.freeze())
}

/// Reads the rest of a refused body and discards it, so that the guest's writes end
/// and it hears why the request failed (see `send::refuse`). Run beside the refusal,
/// which the guest hears at once: a body the guest never finishes is drained until its
/// task ends (its `Store` drops the body's sender), holding nothing.
async fn drain(mut body: WasiBody) {
    while let Some(Ok(_)) = body.frame().await {}
}

/// The APIs whose responses carry credentials, or tokens that are exchanged for them or
/// for a login (AWS's operation names): signing one would hand the guest something it
/// could use anywhere, for as long as it lasts. A deny-list, matched however the request
/// names the operation; `allow_credential_apis` lifts it for an activity that needs one.
const CREDENTIAL_APIS: [&str; 22] = [
    "AssumeRole",
    "AssumeRoleWithSAML",
    "AssumeRoleWithWebIdentity",
    "AssumeRoot",
    "GetSessionToken",
    "GetFederationToken",
    "GetWebIdentityToken",
    "GetAuthorizationToken",
    "GetRoleCredentials",
    "GetCredentialsForIdentity",
    "GetOpenIdToken",
    "GetOpenIdTokenForDeveloperIdentity",
    "CreateToken",
    "CreateAccessKey",
    "CreateServiceSpecificCredential",
    "ResetServiceSpecificCredential",
    "CreateLoginProfile",
    "UpdateLoginProfile",
    "GetClusterCredentials",
    "GetClusterCredentialsWithIAM",
    "GetCredentials",
    "CreateSession",
];

/// The credential-vending API a request calls, if it calls one, however it names the
/// operation: a query or form `Action` (STS, IAM; the body is read as a form whatever
/// its `Content-Type` says), every `X-Amz-Target` (JSON APIs: ECR, Cognito), the last
/// segment of a Smithy RPC path (`/service/S/operation/OP`), or a REST path
/// (CodeArtifact's token, SSO's role credentials), percent-decoded; S3 Express
/// `CreateSession` by its `session` query. Values are trimmed, as servers and the signer
/// trim them. `body` is the whole body when it was read (to be signed).
fn credential_api(
    endpoint: &Endpoint,
    parts: &http::request::Parts,
    body: Option<&[u8]>,
) -> Option<String> {
    let named = |operation: &str| {
        let operation = operation.trim();
        CREDENTIAL_APIS
            .iter()
            .any(|api| api.eq_ignore_ascii_case(operation))
            .then(|| format!("{} {operation}", endpoint.service))
    };
    let from_form = |form: &[u8]| {
        form_urlencoded::parse(form).find_map(|(name, value)| {
            if name.trim().eq_ignore_ascii_case("action") {
                named(&value)
            } else if endpoint.service == "s3" && name.trim() == "session" {
                Some("s3 CreateSession".into())
            } else {
                None
            }
        })
    };
    if let Some(api) = from_form(parts.uri.query().unwrap_or("").as_bytes()) {
        return Some(api);
    }
    for target in parts.headers.get_all("x-amz-target") {
        let target = String::from_utf8_lossy(target.as_bytes());
        let operation = target.trim().rsplit('.').next().unwrap_or_default();
        if let Some(api) = named(operation) {
            return Some(api);
        }
    }
    let path: String = form_urlencoded::parse(format!("p={}", parts.uri.path()).as_bytes())
        .next()
        .map(|(_, decoded)| decoded.to_ascii_lowercase())
        .unwrap_or_default();
    if path.contains("/authorization-token") || path.contains("/federation/credentials") {
        return Some(format!("{} {path}", endpoint.service));
    }
    if let Some((_, operation)) = path.rsplit_once("/operation/")
        && let Some(api) = named(operation.trim_end_matches('/'))
    {
        return Some(api);
    }
    body.and_then(from_form)
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
            allow_credential_apis: false,
            private_endpoints: false,
            service_endpoints: Vec::new(),
        };
        assert!(grant.allows(&endpoint("sqs", "us-east-1", None, false)));
        assert!(!grant.allows(&endpoint("sqs", "eu-west-1", None, false)));
        assert!(!grant.allows(&endpoint("sns", "us-east-1", None, false)));
        assert!(grant.allows(&endpoint("s3", "us-east-1", Some("b"), true)));
        // A global endpoint is in the region it is signed for.
        let europe = AwsGrant {
            regions: vec!["eu-west-1".into()],
            services: vec!["s3".into(), "sts".into()],
            ..grant
        };
        for host in [
            "anybucket.s3.amazonaws.com",
            "s3.amazonaws.com",
            "sts.amazonaws.com",
        ] {
            let global = Endpoint::parse(host).unwrap();
            assert!(!europe.allows(&global), "{host}");
        }
        assert!(europe.allows(&Endpoint::parse("b.s3.eu-west-1.amazonaws.com").unwrap()));
    }

    #[test]
    fn service_endpoints_follow_the_sdks_variable_names() {
        assert_eq!(endpoint_variable("sqs"), "AWS_ENDPOINT_URL_SQS");
        assert_eq!(endpoint_variable("states"), "AWS_ENDPOINT_URL_SFN");
        assert_eq!(
            endpoint_variable("secretsmanager"),
            "AWS_ENDPOINT_URL_SECRETS_MANAGER"
        );
        assert_eq!(
            endpoint_variable("cognito-identity"),
            "AWS_ENDPOINT_URL_COGNITO_IDENTITY"
        );
        assert_eq!(
            endpoint_variable("cognito-idp"),
            "AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER"
        );
        let env =
            |name: &str| (name == "AWS_ENDPOINT_URL_SQS").then(|| "http://10.0.0.5".to_owned());
        assert_eq!(
            service_endpoints_from_env(&["s3".into(), "sqs".into()], env),
            [("sqs".to_owned(), "http://10.0.0.5".to_owned())]
        );
    }

    fn parts(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut request = http::Request::post(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn credential_vending_apis_are_recognised_by_query_target_path_and_form() {
        let sts = Endpoint::parse("sts.us-east-1.amazonaws.com").unwrap();
        let form = [(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )];
        for (endpoint, parts, body) in [
            (
                &sts,
                parts(
                    "https://sts.us-east-1.amazonaws.com/?Action=AssumeRole&Version=2011-06-15",
                    &[],
                ),
                None,
            ),
            (
                &sts,
                parts("https://sts.us-east-1.amazonaws.com/", &form),
                Some(&b"Version=2011-06-15&Action=GetSessionToken"[..]),
            ),
            (
                &sts,
                parts("https://sts.us-east-1.amazonaws.com/", &form),
                Some(&b"Action=GetFederationToken&Name=x"[..]),
            ),
            (
                &Endpoint::parse("iam.amazonaws.com").unwrap(),
                parts("https://iam.amazonaws.com/", &form),
                Some(&b"Action=CreateAccessKey&UserName=x"[..]),
            ),
            (
                &Endpoint::parse("cognito-identity.us-east-1.amazonaws.com").unwrap(),
                parts(
                    "https://cognito-identity.us-east-1.amazonaws.com/",
                    &[(
                        "x-amz-target",
                        "AWSCognitoIdentityService.GetCredentialsForIdentity",
                    )],
                ),
                Some(&b"{}"[..]),
            ),
            (
                &Endpoint::parse("ecr.us-east-1.amazonaws.com").unwrap(),
                parts(
                    "https://ecr.us-east-1.amazonaws.com/",
                    &[(
                        "x-amz-target",
                        "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken",
                    )],
                ),
                Some(&b"{}"[..]),
            ),
            (
                &Endpoint::parse("codeartifact.us-east-1.amazonaws.com").unwrap(),
                parts(
                    "https://codeartifact.us-east-1.amazonaws.com/v1/authorization-token?domain=d",
                    &[],
                ),
                None,
            ),
            (
                &Endpoint::parse("b.s3.us-east-1.amazonaws.com").unwrap(),
                parts("https://b.s3.us-east-1.amazonaws.com/?session", &[]),
                None,
            ),
            // However it is written: a padded or second target, a body whose
            // Content-Type does not say form, an encoded path, a Smithy RPC path.
            (
                &Endpoint::parse("ecr.us-east-1.amazonaws.com").unwrap(),
                parts(
                    "https://ecr.us-east-1.amazonaws.com/",
                    &[
                        (
                            "x-amz-target",
                            "AmazonEC2ContainerRegistry_V20150921.DescribeImages",
                        ),
                        (
                            "x-amz-target",
                            "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken\t",
                        ),
                    ],
                ),
                Some(&b"{}"[..]),
            ),
            (
                &sts,
                parts(
                    "https://sts.us-east-1.amazonaws.com/",
                    &[("content-type", "text/plain")],
                ),
                Some(&b"Action=AssumeRole+&Version=2011-06-15"[..]),
            ),
            (
                &Endpoint::parse("codeartifact.us-east-1.amazonaws.com").unwrap(),
                parts(
                    "https://codeartifact.us-east-1.amazonaws.com/v1/authorization%2Dtoken",
                    &[],
                ),
                None,
            ),
            (
                &Endpoint::parse("redshift-serverless.us-east-1.amazonaws.com").unwrap(),
                parts(
                    "https://redshift-serverless.us-east-1.amazonaws.com/service/RedshiftServerless/operation/GetCredentials",
                    &[],
                ),
                Some(&b""[..]),
            ),
        ] {
            assert!(
                credential_api(endpoint, &parts, body).is_some(),
                "{}",
                parts.uri
            );
        }
        // Not credential APIs: who am I, a message that merely mentions one, a JSON
        // body that looks like a form.
        for (endpoint, parts, body) in [
            (
                &sts,
                parts("https://sts.us-east-1.amazonaws.com/", &form),
                Some(&b"Action=GetCallerIdentity"[..]),
            ),
            (
                &Endpoint::parse("sqs.us-east-1.amazonaws.com").unwrap(),
                parts(
                    "https://sqs.us-east-1.amazonaws.com/",
                    &[
                        ("x-amz-target", "AmazonSQS.SendMessage"),
                        ("content-type", "application/x-amz-json-1.0"),
                    ],
                ),
                Some(&br#"{"MessageBody":"x&Action=AssumeRole"}"#[..]),
            ),
        ] {
            assert_eq!(
                credential_api(endpoint, &parts, body),
                None,
                "{}",
                parts.uri
            );
        }
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
