//! Signing a granted request: the guest's signing headers dropped, the request sent to
//! its destination (S3 path-style at an `endpoint_url`), its body read whole to be
//! signed (streamed unsigned for S3), and SigV4 with the AWS SDK's own `aws-sigv4`.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningInstructions,
    SigningSettings, UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use wasmtime_wasi_http::WasiBody;

use super::credential_apis::credential_api;
use super::{AwsSigner, Endpoint, SignError};
use crate::send::{Held, HeldBody};

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

impl AwsSigner {
    /// Rewrites `request` for its destination and signs it for `endpoint` with
    /// `credentials` (from [`AwsSigner::credentials`]): the guest's signing headers
    /// dropped, the URI and `Host` the destination's (S3 path-style at an
    /// `endpoint_url`), the body read whole to be signed (streamed unsigned for S3),
    /// its bytes counted in `held` (the task's budget) until hyper has sent them.
    ///
    /// # Errors
    /// [`SignError`]: a body too large for one request or for the task's budget, a
    /// failed body stream, an unsignable header, an API that vends credentials.
    pub(crate) async fn sign(
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
        self.redirect(&mut parts, endpoint)?;

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

        let instructions = signature(&parts, endpoint, credentials, bytes.as_deref())?;
        let mut request = http::Request::from_parts(parts, body);
        instructions.apply_to_request_http1x(&mut request);
        Ok(request)
    }

    /// Points the request's URI and `Host` at its destination: `[aws] endpoint_url` (or
    /// the service's own), S3's bucket moved into the path, else the AWS host over https.
    fn redirect(
        &self,
        parts: &mut http::request::Parts,
        endpoint: &Endpoint,
    ) -> Result<(), SignError> {
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
        Ok(())
    }
}

/// The SigV4 signature of a request's head and `body` (`None`: S3's
/// `UNSIGNED-PAYLOAD`) for `endpoint`, signed now: the headers to add.
fn signature(
    parts: &http::request::Parts,
    endpoint: &Endpoint,
    credentials: Credentials,
    body: Option<&[u8]>,
) -> Result<SigningInstructions, SignError> {
    let identity: Identity = credentials.into();
    let mut settings = SigningSettings::default();
    if endpoint.service == "s3" {
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
    let signable_body = match body {
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
    Ok(instructions)
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
