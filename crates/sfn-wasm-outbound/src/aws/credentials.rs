//! Where an activity's AWS credentials come from (the host's chain, or a role it
//! assumes), and the cache that keeps them until shortly before they expire.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use tokio::sync::{Mutex, OnceCell};

use super::SignError;

/// How long before their expiry cached credentials are fetched again: the SDK's own
/// margin, or half their lifetime when that is shorter.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// How long an assumed role's session lasts: STS's default.
const SESSION_SECONDS: i32 = 3600;

/// The name AssumeRole sessions carry, in CloudTrail.
const SESSION_NAME: &str = "sfn-wasm-host";

/// Where an activity's credentials come from.
pub(super) enum CredentialsSource {
    /// A provider given directly (the cache's tests).
    #[cfg(test)]
    Provider(SharedCredentialsProvider),
    /// The host's chain (and, with a role, STS), set up on first use: building the
    /// chain is async, and a config with no AWS request should not need credentials.
    Lazy {
        /// The `[aws]` region and endpoint the host's chain starts from.
        aws: (Option<String>, Option<String>),
        role: Option<(String, Option<String>)>,
        built: Box<OnceCell<Built>>,
    },
}

pub(super) enum Built {
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
                return provide(provider).await;
            }
            CredentialsSource::Lazy { aws, role, built } => {
                built.get_or_init(|| Built::new(aws, role)).await
            }
        };
        match built {
            Built::Chain(Some(provider)) => provide(provider).await,
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
                        provide(chain).await?;
                    }
                    None => return Err(no_provider()),
                }
                assume_role(sts, role_arn, external_id.clone()).await
            }
        }
    }
}

impl Built {
    /// The host's chain for `aws`, with STS when the credentials are `role`'s.
    async fn new(
        (region, endpoint_url): &(Option<String>, Option<String>),
        role: &Option<(String, Option<String>)>,
    ) -> Self {
        let shared = super::sdk::sdk_config(region.as_deref(), endpoint_url.as_deref()).await;
        match role {
            Some((role_arn, external_id)) => Built::Role {
                chain: shared.credentials_provider(),
                sts: aws_sdk_sts::Client::new(&shared),
                role_arn: role_arn.clone(),
                external_id: external_id.clone(),
            },
            None => Built::Chain(shared.credentials_provider()),
        }
    }
}

/// The credentials `provider` gives, or why it gives none.
async fn provide(provider: &SharedCredentialsProvider) -> Result<Credentials, SignError> {
    provider
        .provide_credentials()
        .await
        .map_err(|err| no_credentials(&err))
}

/// The credentials of `role_arn`, from STS `AssumeRole` (signed with the host's chain):
/// a session of [`SESSION_SECONDS`] named [`SESSION_NAME`].
async fn assume_role(
    sts: &aws_sdk_sts::Client,
    role_arn: &str,
    external_id: Option<String>,
) -> Result<Credentials, SignError> {
    let assumed = sts
        .assume_role()
        .role_arn(role_arn)
        .role_session_name(SESSION_NAME)
        .set_external_id(external_id)
        .duration_seconds(SESSION_SECONDS)
        .send()
        .await
        .map_err(|err| {
            let (code, message) = super::sdk::error_code(&err);
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

/// Credentials fetched once and kept until shortly before they expire.
pub(super) struct CredentialsCache {
    source: CredentialsSource,
    cached: Mutex<Option<(Credentials, SystemTime)>>,
}

impl CredentialsCache {
    pub(super) fn new(source: CredentialsSource) -> Self {
        Self {
            source,
            cached: Mutex::new(None),
        }
    }

    /// The cached credentials while fresh, else new ones. One fetch at a time: tasks
    /// that ask meanwhile wait for it rather than asking STS too.
    pub(super) async fn get(&self) -> Result<Credentials, SignError> {
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
pub(super) fn fresh(credentials: &Credentials, fetched: SystemTime, now: SystemTime) -> bool {
    let Some(expiry) = credentials.expiry() else {
        return true;
    };
    let lifetime = expiry.duration_since(fetched).unwrap_or_default();
    let margin = REFRESH_MARGIN.min(lifetime / 2);
    expiry.duration_since(now).is_ok_and(|left| left > margin)
}
