//! `[[callback]]`'s own keys: the SQS queue a Step Functions `.waitForTaskToken` state
//! sends its tasks to, where the token and the input are in each message, and how long
//! a receive waits and a message stays hidden. Every other key is an activity's.

use std::time::Duration;

use super::checks::{Problem, at, within};
use crate::progress::check_pointer;

/// The longest `ReceiveMessage` long poll SQS allows, in seconds.
pub const MAX_WAIT_SECONDS: u32 = 20;
/// The longest visibility timeout SQS allows, in seconds (12 hours).
pub const MAX_VISIBILITY_TIMEOUT_SECONDS: u32 = 43_200;

/// A callback's own keys as written (the rest of `[[callback]]` is an activity's).
#[derive(Debug, Default)]
pub(super) struct CallbackKeys {
    pub queue_url: String,
    pub token: Option<String>,
    pub input: Option<String>,
    pub wait_seconds: Option<u32>,
    pub visibility_timeout_seconds: Option<u32>,
}

/// One `[[callback]]`'s queue, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackConfig {
    /// `queue_url`: the SQS queue (`https://sqs.REGION.amazonaws.com/ACCOUNT/NAME`, or an
    /// emulator's). A name ending in `.fifo` is a FIFO queue.
    pub queue_url: String,
    /// `token`: the JSON pointer to the task token in a message's body (default
    /// `/TaskToken`).
    pub token: String,
    /// `input`: the JSON pointer to the task input in the body; `None` (the default):
    /// the whole body without the token.
    pub input: Option<String>,
    /// `wait_seconds`: how long one `ReceiveMessage` waits for a message (0–20, default
    /// 20: a long poll).
    pub wait: Duration,
    /// `visibility_timeout_seconds`: how long a received message stays hidden from other
    /// workers (1–43200, default 60); the host extends it while the task runs, so a
    /// host that dies lets the message reappear this long after its last extension.
    pub visibility_timeout: Duration,
}

impl CallbackConfig {
    /// Whether the queue is a FIFO queue (its name ends in `.fifo`): each receive takes
    /// one message, so that the next of a message group waits until this one is deleted.
    pub fn fifo(&self) -> bool {
        self.queue_url.trim_end_matches('/').ends_with(".fifo")
    }

    /// Checks a callback's own keys, in the order they are written.
    pub(super) fn resolve(keys: CallbackKeys) -> Result<Self, Problem> {
        let url = keys.queue_url.trim();
        let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
        let path = url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split_once('/'));
        if !scheme_ok || path.is_none_or(|(_, path)| path.trim_matches('/').is_empty()) {
            return Err(at("queue_url")(format!(
                "{:?} is not an SQS queue URL; expected https://sqs.REGION.amazonaws.com/ACCOUNT/NAME (`aws sqs get-queue-url --queue-name NAME` prints it)",
                crate::source::redact_url(url)
            )));
        }
        let token = keys.token.unwrap_or_else(|| "/TaskToken".to_owned());
        if token.is_empty() {
            return Err(at("token")(
                "must point into the message body, as in `/TaskToken`: the whole body cannot be the token".into(),
            ));
        }
        check_pointer(&token).map_err(at("token"))?;
        if let Some(input) = &keys.input {
            check_pointer(input).map_err(at("input"))?;
        }
        let wait = within(
            keys.wait_seconds.unwrap_or(MAX_WAIT_SECONDS),
            0..=MAX_WAIT_SECONDS,
        )
        .map_err(at("wait_seconds"))?;
        let visibility = within(
            keys.visibility_timeout_seconds.unwrap_or(60),
            1..=MAX_VISIBILITY_TIMEOUT_SECONDS,
        )
        .map_err(at("visibility_timeout_seconds"))?;
        Ok(Self {
            queue_url: url.to_owned(),
            token,
            input: keys.input,
            wait: Duration::from_secs(u64::from(wait)),
            visibility_timeout: Duration::from_secs(u64::from(visibility)),
        })
    }
}
