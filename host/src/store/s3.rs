//! A store under an S3 prefix, shared by every host that names it: `GetObject`,
//! `PutObject` (with `If-None-Match: *` for a claim), `DeleteObject`.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;

use super::{Claimed, Store, StoreError};
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
    async fn get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
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
        let body = object.body.collect().await.map_err(|err| StoreError {
            code: "ReadFailed".into(),
            message: format!("the object's body could not be read: {err}"),
        })?;
        Ok(Some(body.into_bytes().to_vec()))
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
        let put = self
            .client()
            .await
            .put_object()
            .bucket(&self.bucket)
            .key(self.key(name))
            .if_none_match("*")
            .body(ByteStream::from(data.to_vec()))
            .send()
            .await;
        match put {
            Ok(_) => Ok(Claimed::Yes),
            Err(err) => {
                let error = failed(&err);
                // By code first: `PreconditionFailed` (412) when the object exists,
                // `ConditionalRequestConflict` (409) while another claim of it is in flight.
                let status = err.raw_response().map(|r| r.status().as_u16());
                match (error.code.as_str(), status) {
                    ("PreconditionFailed" | "ConditionalRequestConflict", _) => {
                        Ok(Claimed::AlreadyTaken)
                    }
                    (_, Some(412 | 409)) if error.code == "NoErrorCode" => {
                        Ok(Claimed::AlreadyTaken)
                    }
                    _ => Err(error),
                }
            }
        }
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
