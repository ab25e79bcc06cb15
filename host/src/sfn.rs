//! Step Functions, as the runtime needs it: poll, answer, heartbeat.
//!
//! [`StepFunctions`] is the whole surface the runtime uses, so a fake can stand in for
//! unit tests and benchmarks; [`AwsStepFunctions`] is the real `aws-sdk-sfn` client, and
//! the one the integration tests run against an emulator.

use std::time::Duration;

use async_trait::async_trait;
use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_sfn::Client;
use aws_sdk_sfn::config::retry::RetryConfig;
use aws_sdk_sfn::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::config::AwsConfig;

/// `GetActivityTask` holds a request for up to 60 s; reads must wait longer than that, or
/// the SDK gives up on a poll that may already have taken a task off the queue.
pub const POLL_READ_TIMEOUT: Duration = Duration::from_secs(70);
/// The whole poll attempt, above [`POLL_READ_TIMEOUT`].
pub const POLL_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(75);
/// One answer or heartbeat attempt.
pub const ANSWER_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// A task handed out by `GetActivityTask`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityTask {
    /// The task token: the only way to answer the task. Never logged.
    pub token: String,
    /// The task input (JSON, as Step Functions sent it).
    pub input: String,
}

/// Why a Step Functions call failed, as the toolkit reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SfnError {
    /// The task no longer accepts answers (`InvalidToken`, `TaskDoesNotExist`,
    /// `TaskTimedOut`).
    #[error("the task is closed: {0}")]
    TaskClosed(String),
    /// Anything else: network, throttling, credentials, a missing activity.
    #[error("{0}")]
    Unavailable(String),
}

/// The Step Functions calls the runtime makes.
#[async_trait]
pub trait StepFunctions: Send + Sync + 'static {
    /// Long-polls `activity_arn`; `None` when the poll ended without a task.
    async fn poll(
        &self,
        activity_arn: &str,
        worker_name: &str,
    ) -> Result<Option<ActivityTask>, SfnError>;
    /// `SendTaskSuccess`.
    async fn send_success(&self, token: &str, output: &str) -> Result<(), SfnError>;
    /// `SendTaskFailure`.
    async fn send_failure(&self, token: &str, error: &str, cause: &str) -> Result<(), SfnError>;
    /// `SendTaskHeartbeat`.
    async fn send_heartbeat(&self, token: &str) -> Result<(), SfnError>;
}

/// The `aws-sdk-sfn` client, tuned for long polls.
///
/// Two clients share one configuration: the poller reads for up to
/// [`POLL_READ_TIMEOUT`], has no stalled-stream protection (a pending long poll streams
/// nothing by design; the protection would only burn CPU watching it) and no SDK retries
/// (the worker's own backoff, with its `polling:error` events, handles failures). The
/// answerer uses short timeouts and the SDK's standard retries, since an answer matters
/// more than a poll.
#[derive(Debug, Clone)]
pub struct AwsStepFunctions {
    poller: Client,
    answerer: Client,
}

impl AwsStepFunctions {
    /// Builds the clients from the default AWS chain (credentials, region), overridden by
    /// the config's `[aws]` table.
    pub async fn new(aws: &AwsConfig) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = &aws.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(url) = &aws.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let shared = loader.load().await;

        let poller = aws_sdk_sfn::config::Builder::from(&shared)
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .read_timeout(POLL_READ_TIMEOUT)
                    .operation_attempt_timeout(POLL_ATTEMPT_TIMEOUT)
                    .build(),
            )
            .build();
        let answerer = aws_sdk_sfn::config::Builder::from(&shared)
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .retry_config(RetryConfig::standard().with_max_attempts(3))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(ANSWER_ATTEMPT_TIMEOUT)
                    .build(),
            )
            .build();
        Self {
            poller: Client::from_conf(poller),
            answerer: Client::from_conf(answerer),
        }
    }
}

/// Maps an SDK error: the task-closed codes to [`SfnError::TaskClosed`], the rest to
/// [`SfnError::Unavailable`] with the full error chain.
fn map_error<E, R>(err: SdkError<E, R>) -> SfnError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    if let Some(code) = err.code()
        && matches!(code, "InvalidToken" | "TaskDoesNotExist" | "TaskTimedOut")
    {
        let message = err
            .message()
            .map(|m| format!("{code}: {m}"))
            .unwrap_or_else(|| code.to_owned());
        return SfnError::TaskClosed(message);
    }
    SfnError::Unavailable(DisplayErrorContext(&err).to_string())
}

#[async_trait]
impl StepFunctions for AwsStepFunctions {
    async fn poll(
        &self,
        activity_arn: &str,
        worker_name: &str,
    ) -> Result<Option<ActivityTask>, SfnError> {
        let output = self
            .poller
            .get_activity_task()
            .activity_arn(activity_arn)
            .worker_name(worker_name)
            .send()
            .await
            .map_err(map_error)?;
        Ok(output
            .task_token
            .filter(|token| !token.is_empty())
            .map(|token| ActivityTask {
                token,
                input: output.input.unwrap_or_else(|| "{}".to_owned()),
            }))
    }

    async fn send_success(&self, token: &str, output: &str) -> Result<(), SfnError> {
        self.answerer
            .send_task_success()
            .task_token(token)
            .output(output)
            .send()
            .await
            .map_err(map_error)?;
        Ok(())
    }

    async fn send_failure(&self, token: &str, error: &str, cause: &str) -> Result<(), SfnError> {
        self.answerer
            .send_task_failure()
            .task_token(token)
            .error(error)
            .cause(cause)
            .send()
            .await
            .map_err(map_error)?;
        Ok(())
    }

    async fn send_heartbeat(&self, token: &str) -> Result<(), SfnError> {
        self.answerer
            .send_task_heartbeat()
            .task_token(token)
            .send()
            .await
            .map_err(map_error)?;
        Ok(())
    }
}
