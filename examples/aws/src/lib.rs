//! Reads an S3 object and sends it as an SQS message, with no credentials of its own:
//! `{"bucket": "...", "key": "...", "queue_url": "...", "region": "us-east-1"}` →
//! `{"bytes": 42, "message_id": "..."}`.
//!
//! The activity grants `[activity.aws] services = ["s3", "sqs"]`; the host signs both
//! requests. An AWS error fails the task named by its code (`NoSuchKey`,
//! `QueueDoesNotExist`); a service or region not granted fails with
//! `HTTP-request-denied`.

use serde::{Deserialize, Serialize};
use sfn_wasm_guest::{Context, Failure, aws};

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

fn forward(input: Input, _ctx: &Context) -> Result<Output, Failure> {
    let object = aws::s3_get_object(&input.region, &input.bucket, &input.key)?;
    let text = String::from_utf8_lossy(&object);
    let message_id = aws::sqs_send_message(&input.region, &input.queue_url, &text)?;
    Ok(Output {
        bytes: object.len(),
        message_id,
    })
}

sfn_wasm_guest::handler!(forward);
