//! The AWS SDK for Rust in a handler (feature `aws`), with no credentials: the host signs.
//!
//! A handler whose activity has `[activity.aws]` writes ordinary SDK code. [`sdk_config`]
//! gives the SDK a `wasi:http` client (the AWS SDK's own `aws-smithy-wasm`), a region and
//! placeholder credentials: the SDK signs with those, and the host removes that signature
//! and signs again with its own credentials (or the activity's role), sending the request
//! to `[aws] endpoint_url` when one is set. The guest never holds a credential.
//!
//! ```ignore
//! use sfn_wasm_guest::aws;
//!
//! let config = aws::sdk_config("us-east-1");
//! let s3 = aws_sdk_s3::Client::new(&config);
//! let object = aws::block_on(s3.get_object().bucket("b").key("k").send())
//!     .map_err(aws::failure)?;
//! ```
//!
//! [`failure`] turns an SDK error into a [`TaskFailure`](crate::TaskFailure) named by AWS's error
//! code (`NoSuchKey`, `QueueDoesNotExist`), or by the `wasi:http` error code when the
//! request itself failed (`HTTP-request-denied` when the activity is not granted that
//! service in that region).

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_runtime_api::client::behavior_version::BehaviorVersion;
pub use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_types::SdkConfig;
pub use aws_types::region::Region;
pub use wstd::runtime::block_on;

use crate::http::ErrorCode;

/// The access key the SDK signs with inside the guest: a placeholder the host replaces.
pub const PLACEHOLDER_ACCESS_KEY: &str = "SIGNED-BY-THE-HOST";

/// SDK settings for a handler: `region`, a `wasi:http` client, and placeholder
/// credentials the host replaces with its own signature.
pub fn sdk_config(region: &str) -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            PLACEHOLDER_ACCESS_KEY,
            "the host signs this request",
            None,
            None,
            "sfn-wasm-host",
        )))
        .http_client(aws_smithy_wasm::wasi::WasiHttpClientBuilder::new().build())
        .sleep_impl(aws_smithy_wasm::wasi::WasiSleep)
        .build()
}

/// The failure an SDK error fails the task with: AWS's error code and message when AWS
/// answered, else the `wasi:http` error code of the failed request (`HTTP-error` when
/// there is none).
pub fn failure<E, R>(err: SdkError<E, R>) -> crate::TaskFailure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    if let Some(code) = err.code() {
        return crate::TaskFailure::new(code, err.message().unwrap_or_default());
    }
    // The SDK's wasi:http client (wstd) keeps the error code as an `anyhow` cause, which
    // a `Box<dyn Error>` no longer downcasts: its text is the code's Debug form
    // (`ErrorCode::HttpRequestDenied`), from which the WIT name is read.
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(cause) = source {
        if let Some(code) = cause.downcast_ref::<ErrorCode>() {
            return crate::http::Error::from_code(code.clone(), "sending the request").into();
        }
        let text = cause.to_string();
        if let Some(code) = text
            .split_whitespace()
            .find(|word| word.starts_with("ErrorCode::"))
        {
            let name = crate::http::wit_case_name(code);
            return crate::TaskFailure::new(name.clone(), format!("sending the request: {name}"));
        }
        source = cause.source();
    }
    let message = match &err {
        SdkError::ConstructionFailure(_) => "the request could not be built",
        SdkError::TimeoutError(_) => "the request timed out",
        SdkError::DispatchFailure(_) => "the request could not be sent",
        SdkError::ResponseError(_) => "the response could not be read",
        _ => "AWS answered with an error without a code",
    };
    crate::TaskFailure::new("HTTP-error", message)
}
