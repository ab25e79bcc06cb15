//! A store under an S3 prefix, shared by every host that names it: `GetObject`,
//! `PutObject` (with `If-None-Match: *` for a claim, `If-Match` for a takeover),
//! `DeleteObject`.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;

use super::{Claimed, Store, StoreError, Version, Versioned};
use crate::aws::{AwsConfig, error_code};

/// Objects under `s3://BUCKET/PREFIX/`.
pub struct S3Store {
    aws: AwsConfig,
    /// Made at the first call (loading the SDK's settings is async).
    client: tokio::sync::OnceCell<aws_sdk_s3::Client>,
    bucket: String,
    prefix: String,
}

impl S3Store {
    /// A store in `bucket` under `prefix`, with the config's `[aws]` settings. With
    /// `endpoint_url` (an emulator, MinIO) objects are addressed by path. Calls time out
    /// after 10 s: a task waits on them.
    pub fn new(aws: &AwsConfig, bucket: &str, prefix: &str) -> Self {
        Self {
            aws: aws.clone(),
            client: tokio::sync::OnceCell::new(),
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        }
    }

    async fn client(&self) -> &aws_sdk_s3::Client {
        self.client
            .get_or_init(|| {
                crate::aws::s3_client(&self.aws, Duration::from_secs(5), Duration::from_secs(10))
            })
            .await
    }

    /// A `PutObject` with `If-None-Match: *` (no `version`) or `If-Match: version`. S3
    /// answers 409 `ConditionalRequestConflict` while another conditional write of the
    /// key is in flight and asks for a retry: a few, then the key counts as taken.
    async fn put_conditionally(
        &self,
        name: &str,
        data: &[u8],
        version: Option<&Version>,
    ) -> Result<Claimed, StoreError> {
        let mut attempt = 0;
        loop {
            let put = self
                .client()
                .await
                .put_object()
                .bucket(&self.bucket)
                .key(self.key(name))
                .set_if_none_match(version.is_none().then(|| "*".to_owned()))
                .set_if_match(version.map(|v| v.0.clone()))
                .body(ByteStream::from(data.to_vec()))
                .send()
                .await;
            match conditional(put.map(|written| written.e_tag))? {
                Conditional::Done(claimed) => return Ok(claimed),
                Conditional::Conflict if attempt < CONFLICT_RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(CONFLICT_BACKOFF * attempt).await;
                }
                Conditional::Conflict => return Ok(Claimed::AlreadyTaken),
            }
        }
    }

    fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }
}

fn failed<E, R>(err: &aws_smithy_runtime_api::client::result::SdkError<E, R>) -> StoreError
where
    E: aws_sdk_sfn::error::ProvideErrorMetadata,
{
    let (code, message) = error_code(err);
    StoreError { code, message }
}

#[async_trait]
impl Store for S3Store {
    async fn read(&self, name: &str) -> Result<Option<Versioned>, StoreError> {
        let got = self
            .client()
            .await
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(name))
            .send()
            .await;
        let object = match got {
            Ok(object) => object,
            Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
                return Ok(None);
            }
            Err(err) => return Err(failed(&err)),
        };
        let version = etag(object.e_tag())?;
        let body = object.body.collect().await.map_err(|err| StoreError {
            code: "ReadFailed".into(),
            message: format!("the object's body could not be read: {err}"),
        })?;
        Ok(Some(Versioned {
            data: body.into_bytes().to_vec(),
            version,
        }))
    }

    async fn put(&self, name: &str, data: &[u8]) -> Result<(), StoreError> {
        self.client()
            .await
            .put_object()
            .bucket(&self.bucket)
            .key(self.key(name))
            .body(ByteStream::from(data.to_vec()))
            .send()
            .await
            .map(drop)
            .map_err(|err| failed(&err))
    }

    async fn put_if_absent(&self, name: &str, data: &[u8]) -> Result<Claimed, StoreError> {
        self.put_conditionally(name, data, None).await
    }

    async fn put_if_match(
        &self,
        name: &str,
        data: &[u8],
        version: &Version,
    ) -> Result<Claimed, StoreError> {
        self.put_conditionally(name, data, Some(version)).await
    }

    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        self.client()
            .await
            .delete_object()
            .bucket(&self.bucket)
            .key(self.key(name))
            .send()
            .await
            .map(drop)
            .map_err(|err| failed(&err))
    }
}

/// The version of an object S3 returned: its ETag, which every `GetObject` and
/// `PutObject` answer carries.
fn etag(tag: Option<&str>) -> Result<Version, StoreError> {
    tag.filter(|tag| !tag.is_empty())
        .map(|tag| Version(tag.to_owned()))
        .ok_or_else(|| StoreError {
            code: "NoETag".into(),
            message: "S3 answered without an ETag: conditional writes need one".into(),
        })
}

/// How often a conditional write S3 answered with 409 is sent again.
const CONFLICT_RETRIES: u32 = 3;
/// The wait before sending it again, times the attempt.
const CONFLICT_BACKOFF: Duration = Duration::from_millis(50);

/// What a conditional `PutObject` came to.
enum Conditional {
    /// Written (with its new ETag), or not because its condition failed.
    Done(Claimed),
    /// 409 `ConditionalRequestConflict`: another conditional write of the key is in
    /// flight; S3 asks for a retry.
    Conflict,
}

/// Reads a conditional `PutObject`'s answer. By code first: `PreconditionFailed` (412)
/// when the object exists (`If-None-Match`) or holds another version (`If-Match`),
/// `NoSuchKey` (404) when an `If-Match` finds nothing, `ConditionalRequestConflict` (409).
fn conditional<E, R>(
    put: Result<Option<String>, aws_smithy_runtime_api::client::result::SdkError<E, R>>,
) -> Result<Conditional, StoreError>
where
    E: aws_sdk_sfn::error::ProvideErrorMetadata,
    R: HttpStatus,
{
    match put {
        Ok(tag) => Ok(Conditional::Done(Claimed::Yes(etag(tag.as_deref())?))),
        Err(err) => {
            let error = failed(&err);
            let status = err.raw_response().map(HttpStatus::status_code);
            match (error.code.as_str(), status) {
                ("ConditionalRequestConflict", _) | ("NoErrorCode", Some(409)) => {
                    Ok(Conditional::Conflict)
                }
                ("PreconditionFailed" | "NoSuchKey", _) | ("NoErrorCode", Some(412 | 404)) => {
                    Ok(Conditional::Done(Claimed::AlreadyTaken))
                }
                _ => Err(error),
            }
        }
    }
}

/// The status of a raw response (the SDK's response type, in tests anything).
trait HttpStatus {
    fn status_code(&self) -> u16;
}

impl HttpStatus for aws_smithy_runtime_api::http::Response {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}
