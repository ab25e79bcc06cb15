//! The AWS SDK settings the host's clients start from, and the names of the SDK's
//! errors: shared by the guests' credentials (STS, here) and the host's own clients
//! (Step Functions, S3, Secrets Manager), which re-export them.

use aws_config::{BehaviorVersion, Region};

/// The AWS SDK settings every client of the host starts from: the default chain
/// (credentials, region), overridden by the config's `[aws]` `region` and
/// `endpoint_url`.
pub async fn sdk_config(region: Option<&str>, endpoint_url: Option<&str>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = region {
        loader = loader.region(Region::new(region.to_owned()));
    }
    if let Some(url) = endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

/// AWS's error code and message of a failed SDK call, for a line naming them (never a
/// Debug dump); a call that got no coded answer gets a name of the host's:
/// `NoAnswerInTime`, `NotSent` (no credentials to sign with, or the endpoint cannot be
/// reached), `NotBuilt`, `NoErrorCode`.
pub fn error_code<E, R>(
    err: &aws_smithy_runtime_api::client::result::SdkError<E, R>,
) -> (String, String)
where
    E: aws_sdk_sts::error::ProvideErrorMetadata,
{
    use aws_sdk_sts::error::ProvideErrorMetadata;
    use aws_smithy_runtime_api::client::result::SdkError;
    if let Some(code) = err.code() {
        return (
            code.to_owned(),
            err.message().unwrap_or("no message").to_owned(),
        );
    }
    let (code, message) = match err {
        SdkError::TimeoutError(_) => ("NoAnswerInTime", "the service did not answer in time"),
        SdkError::DispatchFailure(_) => (
            "NotSent",
            "the request was not sent: no credentials to sign it with, or the endpoint cannot be reached",
        ),
        SdkError::ConstructionFailure(_) => ("NotBuilt", "the request could not be built"),
        _ => (
            "NoErrorCode",
            "the service answered with an error without a code",
        ),
    };
    (code.to_owned(), message.to_owned())
}
