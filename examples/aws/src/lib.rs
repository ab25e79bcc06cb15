//! Reads an S3 object and sends it as an SQS message with the AWS SDK for Rust, holding
//! no credentials: `{"bucket": "...", "key": "...", "queue_url": "...", "region":
//! "us-east-1"}` → `{"bytes": 42, "message_id": "..."}`.
//!
//! The activity grants `[activity.aws] services = ["s3", "sqs"]`; the SDK signs with
//! placeholder credentials and the host signs again with its own. An AWS error fails the
//! task named by its code (`NoSuchKey`, `QueueDoesNotExist`); a service or region not
//! granted fails with `HTTP-request-denied`.

use serde::{Deserialize, Serialize};
use sfn_wasm_guest::{Context, TaskFailure, aws};

#[derive(Deserialize)]
struct Input {
    bucket: String,
    key: String,
    queue_url: String,
    #[serde(default = "default_region")]
    region: String,
}

fn default_region() -> String {
    "us-east-1".into()
}

#[derive(Serialize)]
struct Output {
    bytes: usize,
    message_id: String,
}

fn forward(input: Input, _ctx: &Context) -> Result<Output, TaskFailure> {
    let config = aws::sdk_config(&input.region);
    let s3 = aws_sdk_s3::Client::new(&config);
    let sqs = aws_sdk_sqs::Client::new(&config);
    aws::block_on(async {
        let object = s3
            .get_object()
            .bucket(&input.bucket)
            .key(&input.key)
            .send()
            .await
            .map_err(aws::failure)?;
        let bytes = object
            .body
            .collect()
            .await
            .map_err(|err| TaskFailure::new("HTTP-error", format!("reading the object: {err}")))?
            .into_bytes();
        let sent = sqs
            .send_message()
            .queue_url(&input.queue_url)
            .message_body(String::from_utf8_lossy(&bytes))
            .send()
            .await
            .map_err(aws::failure)?;
        Ok(Output {
            bytes: bytes.len(),
            message_id: sent.message_id.unwrap_or_default(),
        })
    })
}

sfn_wasm_guest::handler!(forward);
