//! Step Functions, as the runtime needs it: poll, answer, heartbeat.
//!
//! [`StepFunctions`] is the whole surface the runtime uses, so a fake can stand in for
//! unit tests and benchmarks; [`AwsStepFunctions`] is the real `aws-sdk-sfn` client, and
//! the one the integration tests run against an emulator.

mod errors;

use std::future::Future;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_sfn::Client;
use aws_sdk_sfn::config::retry::RetryConfig;
pub use errors::{ERROR_CODES, ErrorClass, NO_CREDENTIALS, SfnError, class_of, map_error};

use crate::aws::{Api, AwsConfig, BURST_SECONDS, PerApi, sdk_config};

/// `GetActivityTask` holds a request for up to 60 s; reads must wait longer than that, or
/// the SDK gives up on a poll that may already have taken a task off the queue.
pub const POLL_READ_TIMEOUT: Duration = Duration::from_secs(70);
/// The whole poll attempt, above [`POLL_READ_TIMEOUT`].
pub const POLL_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(75);
/// One answer or heartbeat attempt. The host retries answers itself
/// ([`crate::delivery`]), so one attempt need not wait long.
pub const ANSWER_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// A task handed out by `GetActivityTask`.
#[derive(Clone, PartialEq, Eq)]
pub struct ActivityTask {
    /// The task token: the only way to answer the task. A credential: never logged, and
    /// `Debug` leaves it out.
    pub token: String,
    /// The task input (JSON, as Step Functions sent it).
    pub input: String,
    /// The task's id when its source names it (a callback's SQS message id); `None`: an
    /// activity's, derived from the token ([`crate::ids::task_id`]).
    pub id: Option<String>,
}

impl std::fmt::Debug for ActivityTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActivityTask")
            .field("token", &"<redacted>")
            .field("input_bytes", &self.input.len())
            .finish()
    }
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
/// answerer uses short timeouts and no SDK retries either: the host's delivery loop
/// retries an answer for as long as `[host] answer_retry_seconds`, and needs to see each
/// attempt's outcome (a timed-out attempt may have been delivered).
#[derive(Debug, Clone)]
pub struct AwsStepFunctions {
    poller: Client,
    answerer: Client,
    quotas: Arc<Quotas>,
}

type Bucket = governor::DefaultDirectRateLimiter;

/// One token bucket per API, shared by every worker of the process, so that the host
/// stays under Step Functions' per-account quotas instead of being throttled.
type Quotas = PerApi<Bucket>;

/// A bucket refilled at `rate` per second that holds [`BURST_SECONDS`] of it.
fn bucket(rate: f64) -> Bucket {
    token_bucket(rate, BURST_SECONDS)
}

/// A token bucket refilled at `rate` per second that holds `burst_seconds` of it (at
/// least one token): the host's quotas per API, and `max_tasks_per_second`.
pub fn token_bucket(rate: f64, burst_seconds: f64) -> Bucket {
    let rate = rate.max(0.001);
    let period = Duration::from_secs_f64(1.0 / rate);
    let burst = NonZeroU32::new((rate * burst_seconds).clamp(1.0, f64::from(u32::MAX)) as u32)
        .unwrap_or(NonZeroU32::MIN);
    let quota = governor::Quota::with_period(period)
        .unwrap_or_else(|| governor::Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst);
    governor::RateLimiter::direct(quota)
}

impl AwsStepFunctions {
    /// Builds the clients from the default AWS chain (credentials, region), overridden by
    /// the config's `[aws]` table.
    pub async fn new(aws: &AwsConfig) -> Self {
        let shared = sdk_config(aws).await;
        let poller = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(POLL_READ_TIMEOUT)
            .operation_attempt_timeout(POLL_ATTEMPT_TIMEOUT)
            .build();
        let answerer = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(ANSWER_ATTEMPT_TIMEOUT)
            .build();
        let region = shared.region().map(|r| r.as_ref().to_owned());
        let rates = aws.rates(region.as_deref());
        Self {
            poller: client(&shared, poller),
            answerer: client(&shared, answerer),
            quotas: Arc::new(PerApi::from_fn(|api| bucket(rates[api]))),
        }
    }
}

/// A client with `timeouts`, without SDK retries (the host's own loops retry, and see
/// each attempt) or stalled-stream protection (a pending long poll streams nothing by
/// design).
fn client(shared: &aws_config::SdkConfig, timeouts: TimeoutConfig) -> Client {
    let config = aws_sdk_sfn::config::Builder::from(shared)
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts)
        .build();
    Client::from_conf(config)
}

/// How a Step Functions call ended, as metrics and traces label it: `ok`, `throttled`,
/// `closed` (the task is gone) or `error`.
pub fn result_name(error: Option<&SfnError>) -> &'static str {
    match error {
        None => "ok",
        Some(SfnError::Throttled(_)) => "throttled",
        Some(SfnError::TaskClosed(_)) => "closed",
        Some(_) => "error",
    }
}

impl AwsStepFunctions {
    /// `DescribeActivity`: whether `activity_arn` exists for these credentials, for
    /// `check --remote`. Not on the task path, so not in [`StepFunctions`].
    ///
    /// # Errors
    /// As every call: [`SfnError::Rejected`] with `ActivityDoesNotExist` for a missing
    /// activity.
    pub async fn describe_activity(&self, activity_arn: &str) -> Result<(), SfnError> {
        self.answerer
            .describe_activity()
            .activity_arn(activity_arn)
            .send()
            .await
            .map_err(|err| map_error(err, ""))?;
        Ok(())
    }
}

#[async_trait]
impl StepFunctions for AwsStepFunctions {
    async fn poll(
        &self,
        activity_arn: &str,
        worker_name: &str,
    ) -> Result<Option<ActivityTask>, SfnError> {
        self.quotas[Api::GetActivityTask].until_ready().await;
        let output = self
            .poller
            .get_activity_task()
            .activity_arn(activity_arn)
            .worker_name(worker_name)
            .send()
            .await
            .map_err(|err| map_error(err, ""))?;
        Ok(output
            .task_token
            .filter(|token| !token.is_empty())
            .map(|token| ActivityTask {
                token,
                input: output.input.unwrap_or_else(|| "{}".to_owned()),
                id: None,
            }))
    }

    async fn send_success(&self, token: &str, output: &str) -> Result<(), SfnError> {
        self.quotas[Api::SendTaskSuccess].until_ready().await;
        self.answerer
            .send_task_success()
            .task_token(token)
            .output(output)
            .send()
            .await
            .map_err(|err| map_error(err, token))?;
        Ok(())
    }

    async fn send_failure(&self, token: &str, error: &str, cause: &str) -> Result<(), SfnError> {
        self.quotas[Api::SendTaskFailure].until_ready().await;
        // An empty error or cause is left out: the bare failure, the last resort when
        // the others are refused, carries neither (and so needs no KMS permission).
        let mut request = self.answerer.send_task_failure().task_token(token);
        if !error.is_empty() {
            request = request.error(error);
        }
        if !cause.is_empty() {
            request = request.cause(cause);
        }
        request.send().await.map_err(|err| map_error(err, token))?;
        Ok(())
    }

    async fn send_heartbeat(&self, token: &str) -> Result<(), SfnError> {
        self.quotas[Api::SendTaskHeartbeat].until_ready().await;
        self.answerer
            .send_task_heartbeat()
            .task_token(token)
            .send()
            .await
            .map_err(|err| map_error(err, token))?;
        Ok(())
    }
}

/// Sees every Step Functions call the host makes, after it returns: for metrics and
/// traces, which must not put code on the task path. Must be quick and must not block.
pub trait CallObserver: Send + Sync {
    /// A `GetActivityTask` poll of `arn` that started at `started` and took `elapsed`.
    fn polled(
        &self,
        arn: &str,
        started: SystemTime,
        elapsed: Duration,
        polled: &Result<Option<ActivityTask>, SfnError>,
    );
    /// A `SendTask*` call (`api`) for the task of `token`.
    fn called(
        &self,
        api: Api,
        token: &str,
        started: SystemTime,
        elapsed: Duration,
        error: Option<&SfnError>,
    );
}

/// A [`StepFunctions`] client that times each call once and tells every
/// [`CallObserver`] how it went.
pub struct ObservedSfn {
    inner: Arc<dyn StepFunctions>,
    observers: Vec<Arc<dyn CallObserver>>,
}

impl ObservedSfn {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn StepFunctions>, observers: Vec<Arc<dyn CallObserver>>) -> Self {
        Self { inner, observers }
    }

    async fn call(
        &self,
        api: Api,
        token: &str,
        send: impl Future<Output = Result<(), SfnError>>,
    ) -> Result<(), SfnError> {
        let (started, clock) = (SystemTime::now(), Instant::now());
        let sent = send.await;
        let elapsed = clock.elapsed();
        for observer in &self.observers {
            observer.called(api, token, started, elapsed, sent.as_ref().err());
        }
        sent
    }
}

#[async_trait]
impl StepFunctions for ObservedSfn {
    async fn poll(&self, arn: &str, worker: &str) -> Result<Option<ActivityTask>, SfnError> {
        let (started, clock) = (SystemTime::now(), Instant::now());
        let polled = self.inner.poll(arn, worker).await;
        let elapsed = clock.elapsed();
        for observer in &self.observers {
            observer.polled(arn, started, elapsed, &polled);
        }
        polled
    }

    async fn send_success(&self, token: &str, output: &str) -> Result<(), SfnError> {
        self.call(
            Api::SendTaskSuccess,
            token,
            self.inner.send_success(token, output),
        )
        .await
    }

    async fn send_failure(&self, token: &str, error: &str, cause: &str) -> Result<(), SfnError> {
        self.call(
            Api::SendTaskFailure,
            token,
            self.inner.send_failure(token, error, cause),
        )
        .await
    }

    async fn send_heartbeat(&self, token: &str) -> Result<(), SfnError> {
        self.call(
            Api::SendTaskHeartbeat,
            token,
            self.inner.send_heartbeat(token),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_holds_five_seconds_of_its_rate() {
        let two = bucket(2.0);
        for _ in 0..10 {
            assert!(two.check().is_ok());
        }
        assert!(two.check().is_err(), "the eleventh request waits");
        let tiny = bucket(0.01);
        assert!(tiny.check().is_ok());
    }

    #[test]
    fn a_task_debug_print_leaves_the_token_out() {
        let task = ActivityTask {
            token: "secret-token-AAAA".into(),
            input: r#"{"card": "4111"}"#.into(),
            id: None,
        };
        let printed = format!("{task:?}");
        assert!(!printed.contains("secret-token"), "{printed}");
        assert!(!printed.contains("4111"), "{printed}");
    }
}
