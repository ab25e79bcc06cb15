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

mod credential_apis;
mod credentials;
mod endpoint;
mod sdk;
mod sign;
#[cfg(test)]
mod tests;

use aws_credential_types::Credentials;
use wasmtime_wasi_http::Error;

use super::address::Reach;
use super::allow::Scheme;
use super::send::Target;
use credentials::{CredentialsCache, CredentialsSource};
use endpoint::endpoint_uri;

pub use endpoint::{Endpoint, endpoint_variable, is_label, is_region, service_endpoints_from_env};
pub use sdk::{error_code, sdk_config};
pub use sign::MAX_SIGNED_BODY_BYTES;

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
            aws: (grant.host_region.clone(), grant.endpoint_url.clone()),
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
}
