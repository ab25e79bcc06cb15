//! Handlers in S3: `HeadObject` to see whether the ETag moved, `GetObject` to read it.

use std::time::Duration;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::operation::head_object::{HeadObjectError, HeadObjectOutput};

use super::{Fetch, Fetched, SourceError, too_large};
use crate::aws::AwsConfig;

/// An S3 client with the config's `[aws]` settings.
pub struct S3Source {
    client: aws_sdk_s3::Client,
}

impl S3Source {
    /// The client. With `endpoint_url` (an emulator, MinIO) objects are addressed by path
    /// (`ENDPOINT/BUCKET/KEY`), which needs no DNS per bucket.
    pub async fn new(aws: &AwsConfig) -> Self {
        Self {
            client: crate::aws::s3_client(aws, Duration::from_secs(10), Duration::from_secs(120))
                .await,
        }
    }

    /// Whether the object exists and may be read: `Ok`, else the service's code and
    /// message (`NotFound`, `NoSuchBucket`, `AccessDenied`...) in one line.
    ///
    /// # Errors
    /// The one line, when `HeadObject` fails.
    pub async fn head(&self, bucket: &str, key: &str) -> Result<(), String> {
        use aws_sdk_s3::error::ProvideErrorMetadata;
        match self.head_object(bucket, key).await {
            Ok(_) => Ok(()),
            Err(err) => Err(
                match (err.code(), err.raw_response().map(|r| r.status().as_u16())) {
                    (Some(code), _) => format!("{code}: {}", err.message().unwrap_or("refused")),
                    // HEAD has no body, so a missing object is a bare 404.
                    (None, Some(404)) => "NotFound: no such bucket or key".to_owned(),
                    (None, Some(status)) => format!("HTTP {status}"),
                    (None, None) => DisplayErrorContext(&err).to_string(),
                },
            ),
        }
    }

    async fn head_object(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<HeadObjectOutput, SdkError<HeadObjectError, HttpResponse>> {
        self.client
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
    }

    /// The object unless its ETag is still `known`.
    pub(super) async fn fetch(
        &self,
        bucket: &str,
        key: &str,
        known: Option<&str>,
        max_bytes: u64,
    ) -> Result<Fetch, SourceError> {
        let name = || format!("s3://{bucket}/{key}");
        let failed = |message: String| SourceError::S3 {
            source_name: name(),
            message,
        };
        if let Some(known) = known {
            let head = self
                .head_object(bucket, key)
                .await
                .map_err(|err| failed(DisplayErrorContext(&err).to_string()))?;
            if head.e_tag() == Some(known) {
                return Ok(Fetch::Unchanged);
            }
        }
        let object = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|err| failed(DisplayErrorContext(&err).to_string()))?;
        if object
            .content_length()
            .is_some_and(|length| u64::try_from(length).unwrap_or(u64::MAX) > max_bytes)
        {
            return Err(too_large(name(), max_bytes));
        }
        let tag = object.e_tag().map(str::to_owned);
        let mut body = object.body;
        let mut bytes = Vec::new();
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|err| failed(format!("reading the object: {err}")))?
        {
            if (bytes.len() + chunk.len()) as u64 > max_bytes {
                return Err(too_large(name(), max_bytes));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Fetch::Fetched(Fetched { bytes, tag }))
    }
}
