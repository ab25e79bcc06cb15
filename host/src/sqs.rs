//! SQS, as callbacks need it: receive a queue's messages, keep one hidden while its task
//! runs, delete it once the task is answered, and read a queue's attributes (`check
//! --remote`, `/readyz`). The real `aws-sdk-sqs` client, with the config's `[aws]`
//! settings, made at its first call; its errors are classed by the same table as Step
//! Functions' ([`crate::sfn::map_error`]), so a poll and a receive share one backoff.

use std::collections::HashMap;
use std::time::Duration;

use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::retry::RetryConfig;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
};

use crate::aws::{AwsConfig, sdk_config};
use crate::sfn::{SfnError, map_error};

/// The most messages one `ReceiveMessage` returns (SQS's limit).
pub const MAX_MESSAGES_PER_RECEIVE: u32 = 10;

/// One attempt of a call that is not a long poll.
const CALL_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// A message received from a queue.
#[derive(Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The message id SQS gave it: the task's id.
    pub id: String,
    /// The handle that changes its visibility or deletes it (this receipt's only).
    pub receipt: String,
    /// The body, as sent.
    pub body: String,
    /// How many times SQS has handed it out, this time included.
    pub receive_count: u32,
}

impl std::fmt::Debug for ReceivedMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The body holds a task token, a credential: never printed.
        f.debug_struct("ReceivedMessage")
            .field("id", &self.id)
            .field("body_bytes", &self.body.len())
            .field("receive_count", &self.receive_count)
            .finish_non_exhaustive()
    }
}

/// The SQS client of every callback of the process.
#[derive(Debug)]
pub struct Sqs {
    aws: AwsConfig,
    clients: tokio::sync::OnceCell<Clients>,
}

/// Two clients of one configuration: the receiver waits out a long poll; the other
/// makes quick calls. Neither retries by itself: the worker's backoff and the lease's
/// next extension do, and see each attempt.
#[derive(Debug)]
struct Clients {
    receiver: Client,
    caller: Client,
}

impl Sqs {
    /// A client for `aws`'s region and endpoint; made at its first call.
    pub fn new(aws: &AwsConfig) -> Self {
        Self {
            aws: aws.clone(),
            clients: tokio::sync::OnceCell::new(),
        }
    }

    async fn clients(&self) -> &Clients {
        self.clients
            .get_or_init(|| async {
                let shared = sdk_config(&self.aws).await;
                let client = |timeouts: TimeoutConfig| {
                    let config = aws_sdk_sqs::config::Builder::from(&shared)
                        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
                        .retry_config(RetryConfig::disabled())
                        .timeout_config(timeouts)
                        .build();
                    Client::from_conf(config)
                };
                Clients {
                    // A receive holds the request for up to 20 s.
                    receiver: client(
                        TimeoutConfig::builder()
                            .connect_timeout(Duration::from_secs(10))
                            .read_timeout(Duration::from_secs(30))
                            .operation_attempt_timeout(Duration::from_secs(35))
                            .build(),
                    ),
                    caller: client(
                        TimeoutConfig::builder()
                            .connect_timeout(Duration::from_secs(5))
                            .operation_attempt_timeout(CALL_ATTEMPT_TIMEOUT)
                            .build(),
                    ),
                }
            })
            .await
    }

    /// `ReceiveMessage`: up to `max` messages (1–10) of `queue_url`, waiting up to `wait`
    /// for the first, each hidden from other receivers for `visibility`.
    ///
    /// # Errors
    /// The call's [`SfnError`] (a missing queue is a refusal that
    /// [`blocks_polling`](SfnError::blocks_polling)).
    pub async fn receive(
        &self,
        queue_url: &str,
        max: u32,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, SfnError> {
        let output = self
            .clients()
            .await
            .receiver
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(clamp_i32(max.clamp(1, MAX_MESSAGES_PER_RECEIVE)))
            .wait_time_seconds(clamp_i32(wait.as_secs()))
            .visibility_timeout(clamp_i32(visibility.as_secs()))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|err| map_error(err, ""))?;
        Ok(output
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|message| {
                let receive_count = message
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|count| count.parse().ok())
                    .unwrap_or(1);
                Some(ReceivedMessage {
                    id: message.message_id?,
                    receipt: message.receipt_handle?,
                    body: message.body.unwrap_or_default(),
                    receive_count,
                })
            })
            .collect())
    }

    /// `ChangeMessageVisibility`: hides the message of `receipt` for `visibility` from
    /// now (0: at once visible to other receivers).
    ///
    /// # Errors
    /// The call's [`SfnError`]; a receipt that is no longer valid (the message was
    /// received again elsewhere, or deleted) is a refusal.
    pub async fn change_visibility(
        &self,
        queue_url: &str,
        receipt: &str,
        visibility: Duration,
    ) -> Result<(), SfnError> {
        self.clients()
            .await
            .caller
            .change_message_visibility()
            .queue_url(queue_url)
            .receipt_handle(receipt)
            .visibility_timeout(clamp_i32(visibility.as_secs()))
            .send()
            .await
            .map_err(|err| map_error(err, ""))?;
        Ok(())
    }

    /// `DeleteMessage`: the message of `receipt` is done.
    ///
    /// # Errors
    /// The call's [`SfnError`].
    pub async fn delete(&self, queue_url: &str, receipt: &str) -> Result<(), SfnError> {
        self.clients()
            .await
            .caller
            .delete_message()
            .queue_url(queue_url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|err| map_error(err, ""))?;
        Ok(())
    }

    /// `DeleteMessageBatch`: the messages of `receipts` (1–10) are done. For each, in
    /// order, `None` when it was deleted, else why not.
    ///
    /// # Errors
    /// The call's [`SfnError`] (then none was deleted).
    pub async fn delete_batch(
        &self,
        queue_url: &str,
        receipts: &[String],
    ) -> Result<Vec<Option<SfnError>>, SfnError> {
        let entries = receipts
            .iter()
            .enumerate()
            .map(|(index, receipt)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .receipt_handle(receipt)
                    .build()
                    .map_err(|err| SfnError::rejected("InvalidParameterValue", err.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let output = self
            .clients()
            .await
            .caller
            .delete_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|err| map_error(err, ""))?;
        // Not deleted unless SQS says so: an entry it names in neither list stays.
        let unknown = SfnError::Unavailable("DeleteMessageBatch did not report it".into());
        let mut outcome: Vec<Option<SfnError>> = vec![Some(unknown); receipts.len()];
        for done in output.successful {
            if let Some(slot) = done
                .id
                .parse::<usize>()
                .ok()
                .and_then(|i| outcome.get_mut(i))
            {
                *slot = None;
            }
        }
        for failed in output.failed {
            if let Some(slot) = failed
                .id
                .parse::<usize>()
                .ok()
                .and_then(|i| outcome.get_mut(i))
            {
                let message = failed.message.unwrap_or_default();
                *slot = Some(if failed.sender_fault {
                    SfnError::rejected(failed.code, message)
                } else {
                    SfnError::Unavailable(format!("{}: {message}", failed.code))
                });
            }
        }
        Ok(outcome)
    }

    /// `GetQueueAttributes` (all): whether the queue exists and these credentials may
    /// read it, and its settings (`RedrivePolicy`, `VisibilityTimeout`, ...), by name.
    ///
    /// # Errors
    /// The call's [`SfnError`].
    pub async fn attributes(&self, queue_url: &str) -> Result<HashMap<String, String>, SfnError> {
        let output = self
            .clients()
            .await
            .caller
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .map_err(|err| map_error(err, ""))?;
        Ok(output
            .attributes
            .unwrap_or_default()
            .into_iter()
            .map(|(name, value)| (name.as_str().to_owned(), value))
            .collect())
    }
}

fn clamp_i32(value: impl TryInto<i32>) -> i32 {
    value.try_into().unwrap_or(i32::MAX)
}
