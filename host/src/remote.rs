//! What only AWS can say about a config, for `check --remote`: whether credentials can
//! be found, whether each activity and each callback's queue exists, whether each S3 handler object is there. Each
//! problem is one line naming the key and what to do; nothing here runs under `serve`.

use std::time::Duration;

use aws_sdk_sfn::config::ProvideCredentials;

use crate::aws::sdk_config;
use crate::config::{Config, TaskSource};
use crate::sfn::{AwsStepFunctions, NO_CREDENTIALS, SfnError};
use crate::source::{HandlerSource, S3Source};
use crate::sqs::Sqs;
use crate::store::{Claimed, S3Store, Store, StoreError, StoreLocation};

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
/// then `DescribeActivity` for each activity, `GetQueueAttributes` for each callback's
/// queue, `HeadObject` for each S3 handler, and a
/// probe of each S3 store with the calls its tasks make (idempotency: a conditional
/// create, a read and a conditional replace of a probe object, left in place; progress:
/// a read of a missing name, a write and, unless kept after success, a delete). Every
/// problem found, in config order; none means AWS agrees with the config.
pub async fn check(config: &Config) -> Vec<RemoteProblem> {
    let shared = sdk_config(&config.aws).await;
    let region = shared
        .region()
        .map_or_else(|| "no region".to_owned(), ToString::to_string);
    if let Some(problem) = credentials_problem(&shared).await {
        return vec![problem];
    }
    let mut problems = activity_problems(config, &region).await;
    problems.extend(handler_object_problems(config).await);
    problems.extend(store_problems(config).await);
    problems
}

/// Why the host's credential chain finds no credentials (within
/// [`CREDENTIALS_TIMEOUT`]), if it finds none.
async fn credentials_problem(shared: &aws_config::SdkConfig) -> Option<RemoteProblem> {
    let Some(provider) = shared.credentials_provider() else {
        return Some(no_credentials(
            "no credentials provider is configured".into(),
        ));
    };
    match tokio::time::timeout(CREDENTIALS_TIMEOUT, provider.provide_credentials()).await {
        Ok(Ok(_)) => None,
        Ok(Err(err)) => {
            tracing::debug!(error = %err, "no credentials");
            Some(no_credentials("the default chain found none".into()))
        }
        Err(_) => Some(no_credentials(format!(
            "none found within {} s",
            CREDENTIALS_TIMEOUT.as_secs()
        ))),
    }
}

/// `DescribeActivity` for each activity and `GetQueueAttributes` for each callback's
/// queue: one problem per activity or queue that does not exist in `region` or cannot
/// be read, and per queue without a dead-letter queue.
async fn activity_problems(config: &Config, region: &str) -> Vec<RemoteProblem> {
    let mut problems = Vec::new();
    let sfn = AwsStepFunctions::new(&config.aws).await;
    let sqs = Sqs::new(&config.aws);
    for activity in &config.activities {
        let problem = match &activity.source {
            TaskSource::Activity(arn) => activity_problem(&sfn, arn, region).await,
            TaskSource::Callback(callback) => {
                queue_problem(&sqs, &callback.queue_url, region).await
            }
        };
        problems.extend(problem.map(|(key, message)| RemoteProblem {
            key: activity.key.key(key).into(),
            message,
        }));
    }
    problems
}

/// What `DescribeActivity` says is wrong with `arn`, if anything, and under which key.
async fn activity_problem(
    sfn: &AwsStepFunctions,
    arn: &str,
    region: &str,
) -> Option<(&'static str, String)> {
    match sfn.describe_activity(arn).await {
        Ok(()) => None,
        Err(SfnError::Rejected { code, .. }) if code == "ActivityDoesNotExist" => {
            let name = arn.rsplit(':').next().unwrap_or_default();
            Some((
                "arn",
                format!(
                    "{arn} does not exist in {region} for these credentials: create it (`aws stepfunctions create-activity --name {name}`) or fix the ARN"
                ),
            ))
        }
        Err(err) => Some((
            "arn",
            format!(
                "cannot describe {arn}: {err}; check the credentials' permissions (states:DescribeActivity) and `[aws]`"
            ),
        )),
    }
}

/// What `GetQueueAttributes` says is wrong with a callback's queue, if anything: it
/// does not exist, cannot be read, or has no dead-letter queue for messages that are
/// not tasks.
async fn queue_problem(sqs: &Sqs, url: &str, region: &str) -> Option<(&'static str, String)> {
    let shown = crate::source::redact_url(url);
    match sqs.attributes(url).await {
        Ok(attributes) if !attributes.contains_key("RedrivePolicy") => Some((
            "queue_url",
            format!(
                "{shown} has no redrive policy: a message that is not a task would be received again and again; give the queue a dead-letter queue (`RedrivePolicy` with `maxReceiveCount`)"
            ),
        )),
        Ok(_) => None,
        Err(SfnError::Rejected { code, .. })
            if code == "QueueDoesNotExist" || code == "AWS.SimpleQueueService.NonExistentQueue" =>
        {
            Some((
                "queue_url",
                format!(
                    "{shown} does not exist in {region} for these credentials: create it (`aws sqs create-queue`) or fix the URL"
                ),
            ))
        }
        Err(err) => Some((
            "queue_url",
            format!(
                "cannot read {shown}'s attributes: {err}; check the credentials' permissions (sqs:GetQueueAttributes, sqs:ReceiveMessage, sqs:ChangeMessageVisibility, sqs:DeleteMessage) and `[aws]`"
            ),
        )),
    }
}

/// `HeadObject` for each S3 handler: one problem per object that cannot be read. The
/// S3 client is made only when a handler is in S3.
async fn handler_object_problems(config: &Config) -> Vec<RemoteProblem> {
    let mut problems = Vec::new();
    let mut s3 = None;
    for activity in &config.activities {
        let HandlerSource::S3 { bucket, key } = &activity.handler else {
            continue;
        };
        if s3.is_none() {
            s3 = Some(S3Source::new(&config.aws).await);
        }
        let Some(client) = &s3 else { continue };
        if let Err(said) = client.head(bucket, key).await {
            problems.push(RemoteProblem {
                key: activity.key.key("handler").into(),
                message: format!(
                    "s3://{bucket}/{key} cannot be read ({said}): upload the handler there, or fix the bucket or key"
                ),
            });
        }
    }
    problems
}

/// A probe of each S3 store (idempotency, progress) with the calls its tasks make: one
/// problem per store that refuses one.
async fn store_problems(config: &Config) -> Vec<RemoteProblem> {
    let mut problems = Vec::new();
    for activity in &config.activities {
        if let Some(idempotency) = &activity.idempotency
            && let StoreLocation::S3 { bucket, prefix } = &idempotency.store
        {
            let store = S3Store::new(&config.aws, bucket, prefix);
            if let Err(message) = probe_claims(&store, bucket, prefix).await {
                problems.push(RemoteProblem {
                    key: activity.key.key("idempotency").key("store").into(),
                    message,
                });
            }
        }
        if let Some(progress) = &activity.progress
            && let StoreLocation::S3 { bucket, prefix } = &progress.store
        {
            let store = S3Store::new(&config.aws, bucket, prefix);
            if let Err(message) =
                probe_progress(&store, bucket, prefix, !progress.keep_after_success).await
            {
                problems.push(RemoteProblem {
                    key: activity.key.key("progress").key("store").into(),
                    message,
                });
            }
        }
    }
    problems
}

/// The object the store probes write (and leave: the idempotency policy grants no
/// delete); a few bytes, under the store's prefix.
const PROBE: &str = "sfn-wasm-host-check-probe";

/// `arn:aws:s3:::BUCKET/PREFIX/*`, as a policy names a store's objects.
fn objects(bucket: &str, prefix: &str) -> String {
    if prefix.is_empty() {
        format!("arn:aws:s3:::{bucket}/*")
    } else {
        format!("arn:aws:s3:::{bucket}/{prefix}/*")
    }
}

/// What a refused store call means for the host's credentials: `permission` is missing
/// on `resource` when S3 said `AccessDenied`.
fn refused(call: &str, err: &StoreError, permission: &str, resource: &str) -> String {
    if err.code == "AccessDenied" || err.code == "Forbidden" {
        format!(
            "{call} was refused ({err}): the host's credentials need {permission} on {resource} (see docs/src/permissions.md)"
        )
    } else {
        format!("{call} failed ({err}): check the bucket, `[aws]` and the credentials")
    }
}

/// Idempotency claims work with these credentials: a conditional create
/// (`If-None-Match`), a read of what it found, and a conditional replace (`If-Match`),
/// the calls a task makes (`s3:PutObject`, `s3:GetObject`; no list, no delete).
async fn probe_claims(store: &S3Store, bucket: &str, prefix: &str) -> Result<(), String> {
    let resource = objects(bucket, prefix);
    let data = br#"{"state":"running","expires_at_ms":0,"claim":"check"}"#;
    store.put_if_absent(PROBE, data).await.map_err(|err| {
        refused(
            "a conditional create (If-None-Match)",
            &err,
            "s3:PutObject",
            &resource,
        )
    })?;
    let found = store
        .read(PROBE)
        .await
        .map_err(|err| refused("a read", &err, "s3:GetObject", &resource))?
        .ok_or_else(|| {
            "the object a conditional create just wrote reads as missing: the store does not keep what it is given".to_owned()
        })?;
    match store.put_if_match(PROBE, data, &found.version).await {
        Ok(Claimed::Yes(_)) => Ok(()),
        Ok(Claimed::AlreadyTaken) => Err(
            "a conditional replace (If-Match) of the version just read failed: the store does not support S3's conditional writes".into(),
        ),
        Err(err) => Err(refused("a conditional replace (If-Match)", &err, "s3:PutObject", &resource)),
    }
}

/// Checkpoints work with these credentials: a missing checkpoint reads as missing (S3
/// says 403, not 404, without `s3:ListBucket`), one can be written, and, unless kept
/// after success, deleted.
async fn probe_progress(
    store: &S3Store,
    bucket: &str,
    prefix: &str,
    deletes: bool,
) -> Result<(), String> {
    let resource = objects(bucket, prefix);
    // Never written by anyone: a name that is missing.
    let missing = format!("{PROBE}-missing");
    match store.read(&missing).await {
        Ok(_) => {}
        Err(err) if err.code == "AccessDenied" || err.code == "Forbidden" => {
            return Err(format!(
                "a read of a missing checkpoint was refused ({err}), where it must read as missing: the host's credentials need s3:ListBucket on arn:aws:s3:::{bucket} and s3:GetObject on {resource} (see the `progress-store` policy in docs/src/permissions.md)"
            ));
        }
        Err(err) => return Err(refused("a read", &err, "s3:GetObject", &resource)),
    }
    store
        .put(PROBE, b"{}")
        .await
        .map_err(|err| refused("a write", &err, "s3:PutObject", &resource))?;
    if deletes {
        store
            .delete(PROBE)
            .await
            .map_err(|err| refused("a delete", &err, "s3:DeleteObject", &resource))?;
    }
    Ok(())
}

fn no_credentials(why: String) -> RemoteProblem {
    RemoteProblem {
        key: "[aws]".into(),
        message: format!("no AWS credentials: {why} ({NO_CREDENTIALS})"),
    }
}
