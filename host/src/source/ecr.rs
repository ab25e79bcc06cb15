//! Credentials for Amazon ECR registries (`ACCOUNT.dkr.ecr.REGION.amazonaws.com`), from
//! `ecr:GetAuthorizationToken` with the host's own AWS credentials: no credential
//! helper binary. A token lasts 12 hours; it is asked for again an hour before it ends.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;
use tokio::sync::Mutex;

use crate::aws::{AwsConfig, sdk_config};

/// How long before its end a token is replaced.
const REFRESH_BEFORE: Duration = Duration::from_secs(3600);

/// The region of an ECR registry host, `None` for any other registry.
pub(super) fn region_of(registry: &str) -> Option<&str> {
    let host = registry.split(':').next().unwrap_or(registry);
    let mut parts = host.split('.');
    let account = parts.next()?;
    let (dkr, ecr, region) = (parts.next()?, parts.next()?, parts.next()?);
    let rest: Vec<&str> = parts.collect();
    let ecr_host = account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && dkr == "dkr"
        && (ecr == "ecr" || ecr == "ecr-fips")
        && matches!(
            rest.as_slice(),
            ["amazonaws", "com"] | ["amazonaws", "com", "cn"]
        );
    ecr_host.then_some(region)
}

/// ECR tokens per registry, kept until an hour before they end.
pub(super) struct EcrTokens {
    aws: AwsConfig,
    tokens: Mutex<HashMap<String, (RegistryAuth, SystemTime)>>,
}

impl EcrTokens {
    pub(super) fn new(aws: AwsConfig) -> Self {
        Self {
            aws,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// The credentials for `registry` in `region`.
    ///
    /// # Errors
    /// What ECR said (its code and message), never the token.
    pub(super) async fn auth(&self, registry: &str, region: &str) -> Result<RegistryAuth, String> {
        let mut tokens = self.tokens.lock().await;
        if let Some((auth, ends)) = tokens.get(registry)
            && SystemTime::now() + REFRESH_BEFORE < *ends
        {
            return Ok(auth.clone());
        }
        let shared = sdk_config(&self.aws).await;
        let (auth, ends) = authorization_token(&shared, region).await?;
        tokens.insert(registry.to_owned(), (auth.clone(), ends));
        Ok(auth)
    }
}

/// Asks ECR in `region` for a registry token with `shared`'s credentials: the basic
/// credentials it decodes to, and when it ends (12 hours on AWS).
///
/// # Errors
/// What ECR said (its code and message, e.g. `AccessDeniedException` naming
/// `ecr:GetAuthorizationToken`), never the token.
pub async fn authorization_token(
    shared: &aws_config::SdkConfig,
    region: &str,
) -> Result<(RegistryAuth, SystemTime), String> {
    let config = aws_sdk_ecr::config::Builder::from(shared)
        .region(aws_sdk_ecr::config::Region::new(region.to_owned()))
        .build();
    let output = aws_sdk_ecr::Client::from_conf(config)
        .get_authorization_token()
        .send()
        .await
        .map_err(|err| {
            use aws_sdk_ecr::error::ProvideErrorMetadata;
            format!(
                "ecr:GetAuthorizationToken in {region} failed: {}: {}",
                err.code().unwrap_or("no answer"),
                err.message().map_or_else(
                    || aws_sdk_ecr::error::DisplayErrorContext(&err).to_string(),
                    str::to_owned
                )
            )
        })?;
    let data = output
        .authorization_data()
        .first()
        .ok_or_else(|| format!("ecr:GetAuthorizationToken in {region} returned no token"))?;
    let auth = decode(data.authorization_token().unwrap_or_default()).ok_or_else(|| {
        format!(
            "ecr:GetAuthorizationToken in {region} returned a token that is not base64 USER:PASSWORD"
        )
    })?;
    let ends = data
        .expires_at()
        .and_then(|at| SystemTime::try_from(*at).ok())
        .unwrap_or_else(|| SystemTime::now() + Duration::from_secs(12 * 3600));
    Ok((auth, ends))
}

/// `base64(USER:PASSWORD)` as basic credentials.
fn decode(token: &str) -> Option<RegistryAuth> {
    let text = base64::engine::general_purpose::STANDARD
        .decode(token)
        .ok()?;
    let text = String::from_utf8(text).ok()?;
    let (user, password) = text.split_once(':')?;
    Some(RegistryAuth::Basic(user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecr_hosts_are_known_by_their_name() {
        assert_eq!(
            region_of("123456789012.dkr.ecr.eu-west-1.amazonaws.com"),
            Some("eu-west-1")
        );
        assert_eq!(
            region_of("123456789012.dkr.ecr-fips.us-east-1.amazonaws.com"),
            Some("us-east-1")
        );
        assert_eq!(
            region_of("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn"),
            Some("cn-north-1")
        );
        for other in [
            "ghcr.io",
            "127.0.0.1:5000",
            "12345.dkr.ecr.eu-west-1.amazonaws.com",
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com.evil.example",
            "public.ecr.aws",
        ] {
            assert_eq!(region_of(other), None, "{other}");
        }
    }

    #[test]
    fn a_token_is_user_and_password() {
        let token = base64::engine::general_purpose::STANDARD.encode("AWS:secret");
        assert_eq!(
            decode(&token),
            Some(RegistryAuth::Basic("AWS".into(), "secret".into()))
        );
        assert_eq!(decode("not base64!"), None);
    }
}
