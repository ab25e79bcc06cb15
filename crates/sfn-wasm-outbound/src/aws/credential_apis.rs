//! The AWS APIs whose responses carry credentials, recognised however a request names
//! the operation: a guest may not call them through the host's signature unless allowed.

use super::Endpoint;

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
pub(super) fn credential_api(
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
