//! What only AWS can say about a config, for `check --remote`: whether credentials can
//! be found, whether each activity exists, whether each S3 handler object is there. Each
//! problem is one line naming the key and what to do; nothing here runs under `serve`.

use std::time::Duration;

use aws_sdk_sfn::config::ProvideCredentials;

use crate::aws::sdk_config;
use crate::config::Config;
use crate::sfn::{AwsStepFunctions, NO_CREDENTIALS, SfnError};
use crate::source::{HandlerSource, S3Source};

/// How long finding credentials may take: the chain's last resort, the instance
/// metadata service, is not there on a laptop, and a check must answer quickly.
const CREDENTIALS_TIMEOUT: Duration = Duration::from_secs(10);

/// One problem: the key (`[aws]`, `activity[0].arn`) and what is wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteProblem {
    /// The config key the problem is about.
    pub key: String,
    /// What is wrong, and what to do.
    pub message: String,
}

impl std::fmt::Display for RemoteProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}`: {}", self.key, self.message)
    }
}

/// Asks AWS about `config`: credentials first (without them nothing else can be asked),
/// then `DescribeActivity` for each activity and `HeadObject` for each S3 handler. Every
/// problem found, in config order; none means AWS agrees with the config.
pub async fn check(config: &Config) -> Vec<RemoteProblem> {
    let shared = sdk_config(&config.aws).await;
    let region = shared
        .region()
        .map_or_else(|| "no region".to_owned(), ToString::to_string);
    let Some(provider) = shared.credentials_provider() else {
        return vec![no_credentials(
            "no credentials provider is configured".into(),
        )];
    };
    match tokio::time::timeout(CREDENTIALS_TIMEOUT, provider.provide_credentials()).await {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => {
            tracing::debug!(error = %err, "no credentials");
            return vec![no_credentials("the default chain found none".into())];
        }
        Err(_) => {
            return vec![no_credentials(format!(
                "none found within {} s",
                CREDENTIALS_TIMEOUT.as_secs()
            ))];
        }
    }
    let mut problems = Vec::new();
    let sfn = AwsStepFunctions::new(&config.aws).await;
    for (index, activity) in config.activities.iter().enumerate() {
        let key = format!("activity[{index}].arn");
        match sfn.describe_activity(&activity.arn).await {
            Ok(()) => {}
            Err(SfnError::Rejected { code, .. }) if code == "ActivityDoesNotExist" => {
                let name = activity.arn.rsplit(':').next().unwrap_or_default();
                problems.push(RemoteProblem {
                    key,
                    message: format!(
                        "{} does not exist in {region} for these credentials: create it (`aws stepfunctions create-activity --name {name}`) or fix the ARN",
                        activity.arn
                    ),
                });
            }
            Err(err) => problems.push(RemoteProblem {
                key,
                message: format!(
                    "cannot describe {}: {err}; check the credentials' permissions (states:DescribeActivity) and `[aws]`",
                    activity.arn
                ),
            }),
        }
    }
    let mut s3 = None;
    for (index, activity) in config.activities.iter().enumerate() {
        let HandlerSource::S3 { bucket, key } = &activity.handler else {
            continue;
        };
        if s3.is_none() {
            s3 = Some(S3Source::new(&config.aws).await);
        }
        let Some(client) = &s3 else { continue };
        if let Err(said) = client.head(bucket, key).await {
            problems.push(RemoteProblem {
                key: format!("activity[{index}].handler"),
                message: format!(
                    "s3://{bucket}/{key} cannot be read ({said}): upload the handler there, or fix the bucket or key"
                ),
            });
        }
    }
    problems
}

fn no_credentials(why: String) -> RemoteProblem {
    RemoteProblem {
        key: "[aws]".into(),
        message: format!("no AWS credentials: {why} ({NO_CREDENTIALS})"),
    }
}
