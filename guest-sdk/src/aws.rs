//! AWS requests for handlers (feature `aws`), signed by the host.
//!
//! A handler whose activity has `[activity.aws]` sends plain requests to AWS endpoints
//! (`https://SERVICE.REGION.amazonaws.com`); the host removes any signature headers,
//! signs each request with its own credentials (or the activity's role) and sends it,
//! to `[aws] endpoint_url` when one is set. The guest holds no credential, so this
//! module only builds requests and reads AWS's error replies: what to sign with is the
//! host's business.
//!
//! ```ignore
//! let object = sfn_wasm_guest::aws::s3_get_object("us-east-1", "my-bucket", "input.json")?;
//! let id = sfn_wasm_guest::aws::sqs_send_message("us-east-1", &queue_url, "done")?;
//! ```
//!
//! An [`AwsError`] turns into a [`Failure`](crate::Failure) named by AWS's error code
//! (`NoSuchKey`, `QueueDoesNotExist`, `AccessDenied`), or by the `wasi:http` error code
//! when the request itself failed (`HTTP-request-denied` when the activity is not
//! granted that service in that region).

use std::fmt;

use crate::http::{self, Method, Request, Response};

/// `https://SERVICE.REGION.amazonaws.com`: the regional endpoint of `service`.
pub fn endpoint(service: &str, region: &str) -> String {
    format!("https://{service}.{region}.amazonaws.com")
}

/// Why an AWS call failed: AWS answered with an error, or the request failed.
#[derive(Debug, Clone)]
pub enum AwsError {
    /// AWS answered with an error status.
    Service {
        /// The HTTP status.
        status: u16,
        /// AWS's error code (`NoSuchKey`), or `HTTP-<status>` when the reply named none.
        code: String,
        /// AWS's message.
        message: String,
    },
    /// The request failed (denied, timed out, ...): see [`http::Error`].
    Http(http::Error),
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AwsError::Service {
                status,
                code,
                message,
            } => write!(f, "{code} ({status}): {message}"),
            AwsError::Http(err) => err.fmt(f),
        }
    }
}

impl std::error::Error for AwsError {}

impl From<http::Error> for AwsError {
    fn from(err: http::Error) -> Self {
        AwsError::Http(err)
    }
}

impl From<AwsError> for crate::Failure {
    fn from(err: AwsError) -> Self {
        match err {
            AwsError::Service { code, message, .. } => crate::Failure::new(code, message),
            AwsError::Http(err) => err.into(),
        }
    }
}

/// Sends `method` to `path_and_query` of `service`'s endpoint in `region` with
/// `headers` and `body`, and returns the response when its status is a success.
///
/// # Errors
/// [`AwsError::Service`] with AWS's error code for an error status;
/// [`AwsError::Http`] when the request failed.
pub fn send(
    service: &str,
    region: &str,
    method: Method,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: impl Into<Vec<u8>>,
) -> Result<Response, AwsError> {
    let url = format!("{}{path_and_query}", endpoint(service, region));
    let mut builder = Request::builder().method(method).uri(&url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(body.into()).map_err(|err| AwsError::Service {
        status: 0,
        code: "InvalidRequest".into(),
        message: format!("cannot build a request to {url}: {err}"),
    })?;
    let response = http::send(request)?;
    if response.status().is_success() {
        Ok(response)
    } else {
        Err(service_error(&response))
    }
}

/// S3 `GetObject`: the object's bytes.
///
/// # Errors
/// As [`send`] (`NoSuchKey`, `NoSuchBucket`, `AccessDenied`).
pub fn s3_get_object(region: &str, bucket: &str, key: &str) -> Result<Vec<u8>, AwsError> {
    let path = format!("/{}/{}", encode(bucket, false), encode(key, true));
    Ok(send("s3", region, Method::GET, &path, &[], Vec::new())?.into_body())
}

/// S3 `PutObject`.
///
/// # Errors
/// As [`send`].
pub fn s3_put_object(region: &str, bucket: &str, key: &str, body: &[u8]) -> Result<(), AwsError> {
    let path = format!("/{}/{}", encode(bucket, false), encode(key, true));
    send("s3", region, Method::PUT, &path, &[], body.to_vec())?;
    Ok(())
}

/// SQS `SendMessage` (JSON protocol): the message's id.
///
/// # Errors
/// As [`send`] (`QueueDoesNotExist`, `AccessDenied`).
pub fn sqs_send_message(region: &str, queue_url: &str, body: &str) -> Result<String, AwsError> {
    let request = serde_json::json!({"QueueUrl": queue_url, "MessageBody": body});
    let response = send(
        "sqs",
        region,
        Method::POST,
        "/",
        &[
            ("x-amz-target", "AmazonSQS.SendMessage"),
            ("content-type", "application/x-amz-json-1.0"),
        ],
        request.to_string(),
    )?;
    let reply: serde_json::Value =
        serde_json::from_slice(response.body()).map_err(|err| AwsError::Service {
            status: response.status().as_u16(),
            code: "InvalidReply".into(),
            message: format!("SendMessage's reply is not JSON: {err}"),
        })?;
    Ok(reply["MessageId"].as_str().unwrap_or_default().to_owned())
}

/// AWS's error code and message from an error reply: JSON (`__type`, `message`), XML
/// (`<Code>`, `<Message>`), or the `x-amzn-query-error` header.
fn service_error(response: &Response) -> AwsError {
    let status = response.status().as_u16();
    let body = String::from_utf8_lossy(response.body());
    let header = response
        .headers()
        .get("x-amzn-query-error")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_owned);
    let (code, message) = if let Ok(json) = serde_json::from_str::<serde_json::Value>(&body) {
        let code = json["__type"]
            .as_str()
            .or(json["code"].as_str())
            .map(|t| t.rsplit('#').next().unwrap_or(t).to_owned());
        let message = json["message"]
            .as_str()
            .or(json["Message"].as_str())
            .unwrap_or_default()
            .to_owned();
        (code, message)
    } else {
        (
            xml_text(&body, "Code"),
            xml_text(&body, "Message").unwrap_or_default(),
        )
    };
    AwsError::Service {
        status,
        code: header.or(code).unwrap_or_else(|| format!("HTTP-{status}")),
        message,
    }
}

fn xml_text(body: &str, tag: &str) -> Option<String> {
    let start = body.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = body[start..].find(&format!("</{tag}>"))? + start;
    Some(body[start..end].to_owned())
}

/// Percent-encodes a path segment (keeping `/` in keys when `keep_slash`).
fn encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}
