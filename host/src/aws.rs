//! The `[aws]` settings and the four Step Functions APIs the host calls.
//!
//! A leaf, so that everything that talks to AWS (Step Functions, S3 handler sources) and
//! the config that reads these settings can all depend on it without depending on each
//! other. The APIs are named once, in [`Api`]; what differs per API (a rate, a token
//! bucket) is a [`PerApi`] table indexed by it.

use std::ops::Index;

use serde::Deserialize;

/// The `[aws]` table.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    /// The region; the default chain (`AWS_REGION`, profile) otherwise.
    pub region: Option<String>,
    /// Another endpoint, such as a local emulator.
    pub endpoint_url: Option<String>,
    /// `[aws.max_requests_per_second]`: the host's own cap per API; the account's
    /// default quota for the region otherwise.
    #[serde(default)]
    pub max_requests_per_second: RateOverrides,
}

/// A Step Functions API the host calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// Long polls for a task.
    GetActivityTask,
    /// A task's success.
    SendTaskSuccess,
    /// A task's failure.
    SendTaskFailure,
    /// A task's heartbeat.
    SendTaskHeartbeat,
}

impl Api {
    /// Every API, in a fixed order.
    pub const ALL: [Api; 4] = [
        Api::GetActivityTask,
        Api::SendTaskSuccess,
        Api::SendTaskFailure,
        Api::SendTaskHeartbeat,
    ];

    /// The API's name as AWS spells it (`SendTaskSuccess`): config keys, metric labels,
    /// span names.
    pub fn name(self) -> &'static str {
        match self {
            Api::GetActivityTask => "GetActivityTask",
            Api::SendTaskSuccess => "SendTaskSuccess",
            Api::SendTaskFailure => "SendTaskFailure",
            Api::SendTaskHeartbeat => "SendTaskHeartbeat",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One value per [`Api`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PerApi<T>([T; 4]);

impl<T> PerApi<T> {
    /// The table with `value(api)` for each API.
    pub fn from_fn(mut value: impl FnMut(Api) -> T) -> Self {
        Self(Api::ALL.map(&mut value))
    }
}

impl<T> Index<Api> for PerApi<T> {
    type Output = T;
    fn index(&self, api: Api) -> &T {
        &self.0[api.index()]
    }
}

/// Requests per second the host allows itself, per API.
pub type ApiRates = PerApi<f64>;

/// `[aws.max_requests_per_second]`, keyed by API name (the TOML keys are the names of
/// [`Api`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateOverrides {
    #[serde(rename = "GetActivityTask")]
    get_activity_task: Option<f64>,
    #[serde(rename = "SendTaskSuccess")]
    send_task_success: Option<f64>,
    #[serde(rename = "SendTaskFailure")]
    send_task_failure: Option<f64>,
    #[serde(rename = "SendTaskHeartbeat")]
    send_task_heartbeat: Option<f64>,
}

impl RateOverrides {
    /// The rate configured for `api`, if any.
    pub fn get(&self, api: Api) -> Option<f64> {
        match api {
            Api::GetActivityTask => self.get_activity_task,
            Api::SendTaskSuccess => self.send_task_success,
            Api::SendTaskFailure => self.send_task_failure,
            Api::SendTaskHeartbeat => self.send_task_heartbeat,
        }
    }
}

/// Regions where Step Functions' default API quotas are the larger ones (a bucket of
/// 3,000 refilled at 500 per second); elsewhere 1,500 and 300.
const LARGE_QUOTA_REGIONS: [&str; 3] = ["us-east-1", "us-west-2", "eu-west-1"];
/// A client-side bucket holds this many seconds of its rate, as the service's do (3,000
/// for 500 per second; 1,500 for 300).
pub const BURST_SECONDS: f64 = 5.0;
/// The highest rate `[aws.max_requests_per_second]` accepts, per second.
pub const MAX_RATE: f64 = 100_000.0;

impl AwsConfig {
    /// The rate per API: the configured one, else the region's default quota.
    pub fn rates(&self, region: Option<&str>) -> ApiRates {
        let default = if region.is_some_and(|r| LARGE_QUOTA_REGIONS.contains(&r)) {
            500.0
        } else {
            300.0
        };
        PerApi::from_fn(|api| self.max_requests_per_second.get(api).unwrap_or(default))
    }
}

pub use sfn_wasm_outbound::aws::error_code;

/// The AWS SDK settings every client of the host starts from: the default chain
/// (credentials, region), overridden by the config's `[aws]` region and endpoint.
pub async fn sdk_config(aws: &AwsConfig) -> aws_config::SdkConfig {
    sfn_wasm_outbound::aws::sdk_config(aws.region.as_deref(), aws.endpoint_url.as_deref()).await
}

/// An S3 client with the config's `[aws]` settings and these timeouts. With
/// `endpoint_url` (an emulator, MinIO) objects are addressed by path
/// (`ENDPOINT/BUCKET/KEY`), which needs no DNS per bucket.
pub async fn s3_client(
    aws: &AwsConfig,
    connect_timeout: std::time::Duration,
    attempt_timeout: std::time::Duration,
) -> aws_sdk_s3::Client {
    let shared = sdk_config(aws).await;
    let config = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(aws.endpoint_url.is_some())
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(connect_timeout)
                .operation_attempt_timeout(attempt_timeout)
                .build(),
        )
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_default_to_the_regions_quota_per_api() {
        let overrides: RateOverrides = toml::from_str("GetActivityTask = 50").unwrap();
        let aws = AwsConfig {
            max_requests_per_second: overrides,
            ..AwsConfig::default()
        };
        let large = aws.rates(Some("us-east-1"));
        assert_eq!(large[Api::GetActivityTask], 50.0);
        assert_eq!(large[Api::SendTaskSuccess], 500.0);
        assert_eq!(
            aws.rates(Some("eu-central-1"))[Api::SendTaskHeartbeat],
            300.0
        );
        assert_eq!(aws.rates(None)[Api::SendTaskFailure], 300.0);
    }

    #[test]
    fn every_api_is_a_config_key_of_its_own_name() {
        for api in Api::ALL {
            let overrides: RateOverrides = toml::from_str(&format!("{} = 7", api.name())).unwrap();
            for other in Api::ALL {
                let expected = (other == api).then_some(7.0);
                assert_eq!(overrides.get(other), expected, "{}", api.name());
            }
        }
    }
}
