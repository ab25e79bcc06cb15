//! Callback tasks: Step Functions' `.waitForTaskToken` tasks, sent as messages to an SQS
//! queue. Everything here is what differs from an activity; the task's lifecycle, its
//! engine and its delivery are the same.
//!
//! - **Taking**: a receive asks for no more messages than the worker holds free task
//!   slots (one on a FIFO queue, so that a message group's next message waits for this
//!   one's delete). A message that is not a task (not JSON, no token at the `token`
//!   pointer, a token Step Functions refuses as malformed or invalid) is never run and
//!   never deleted: the queue's redrive policy moves it to its dead-letter queue.
//! - **Before running**: one `SendTaskHeartbeat` proves the token: anyone who may send
//!   to the queue could otherwise run the handler on an input of their own with a made
//!   up token. A task Step Functions reports closed (`TaskDoesNotExist`, `TaskTimedOut`:
//!   a copy of a message, or one that reappeared after its host died and the task was
//!   answered) is deleted, not run again; `InvalidToken` is a token that is not one.
//! - **While it runs** (from its receive): the message's visibility is extended
//!   (`ChangeMessageVisibility`, every half `visibility_timeout_seconds`) so that SQS
//!   hands it to no other worker.
//! - **After**: deleted once Step Functions accepted the answer or reports the task
//!   closed (the deletes of tasks settling together go in one `DeleteMessageBatch`);
//!   otherwise left to reappear after its visibility timeout, when the next worker
//!   answers it (or finds it closed and deletes it).

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::config::CallbackConfig;
use crate::delivery::AnswerState;
use crate::sfn::{ActivityTask, SfnError, StepFunctions};
use crate::sqs::{MAX_MESSAGES_PER_RECEIVE, ReceivedMessage, Sqs};

/// The longest task token Step Functions accepts, in bytes.
const MAX_TOKEN_BYTES: usize = 2048;

/// Attempts at deleting a settled task's message before leaving it to reappear (the
/// next worker then finds the task closed and deletes it).
const DELETE_ATTEMPTS: u32 = 3;

/// One callback's queue: where its tasks come from, and what is done with each message.
pub struct CallbackQueue {
    sqs: Arc<Sqs>,
    sfn: Arc<dyn StepFunctions>,
    config: CallbackConfig,
    /// The deletes waiting for the next batch, and whether a batch is being sent.
    deletes: std::sync::Mutex<PendingDeletes>,
}

/// Deletes asked for while a batch is in flight: the next batch takes them all (up to
/// SQS's 10), as a group commit does.
#[derive(Default)]
struct PendingDeletes {
    waiting: Vec<(String, tokio::sync::oneshot::Sender<bool>)>,
    sending: bool,
}

/// What the token check before a run found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenCheck {
    /// Run the task (the token is good, or Step Functions could not say: the answer's
    /// own retries then find out).
    Run,
    /// The task is closed: its message is deleted, not run.
    Closed(String),
    /// Step Functions refused the token as malformed: the message is not a task.
    Malformed(String),
}

impl CallbackQueue {
    /// The queue of `config`, received with `sqs`, its tokens checked with `sfn`.
    pub fn new(sqs: Arc<Sqs>, sfn: Arc<dyn StepFunctions>, config: CallbackConfig) -> Self {
        Self {
            sqs,
            sfn,
            config,
            deletes: std::sync::Mutex::default(),
        }
    }

    /// The queue's settings.
    pub fn config(&self) -> &CallbackConfig {
        &self.config
    }

    /// The most messages one receive may take when `free` task slots are free: all of
    /// them up to SQS's 10, or one on a FIFO queue.
    pub fn batch(&self, free: usize) -> usize {
        if self.config.fifo() {
            1
        } else {
            free.clamp(1, MAX_MESSAGES_PER_RECEIVE as usize)
        }
    }

    /// `ReceiveMessage`: up to `max` messages, long-polled for `wait_seconds`, each
    /// hidden for `visibility_timeout_seconds`.
    ///
    /// # Errors
    /// The call's [`SfnError`], for the worker's backoff.
    pub async fn receive(&self, max: usize) -> Result<Vec<ReceivedMessage>, SfnError> {
        let max = u32::try_from(self.batch(max)).unwrap_or(MAX_MESSAGES_PER_RECEIVE);
        self.sqs
            .receive(
                &self.config.queue_url,
                max,
                self.config.wait,
                self.config.visibility_timeout,
            )
            .await
    }

    /// The task a message carries: its token at the `token` pointer, its input at the
    /// `input` pointer (else the body without the token), its id the message's.
    ///
    /// # Errors
    /// Why the message is not a task, in words for `callback:rejected` (never the body
    /// nor the token: both may hold secrets).
    pub fn task(&self, message: &ReceivedMessage) -> Result<ActivityTask, String> {
        let (token, input) = task_of(
            &message.body,
            &self.config.token,
            self.config.input.as_deref(),
        )?;
        Ok(ActivityTask {
            token,
            input,
            id: Some(message.id.clone()),
        })
    }

    /// Proves `token` with one `SendTaskHeartbeat` before its task runs: open, closed
    /// (`TaskDoesNotExist`, `TaskTimedOut`) or not a token at all (`InvalidToken`, or a
    /// refusal of its shape). (LocalStack answers `InvalidToken` for the token of an
    /// execution that ended too: there a closed task's message goes to the dead-letter
    /// queue, unrun, instead of being deleted.)
    pub async fn check(&self, token: &str) -> TokenCheck {
        match self.sfn.send_heartbeat(token).await {
            Ok(()) => TokenCheck::Run,
            Err(SfnError::TaskClosed(reason)) if reason.starts_with("InvalidToken") => {
                TokenCheck::Malformed(format!(
                    "Step Functions knows no task of this token: {reason}"
                ))
            }
            Err(SfnError::TaskClosed(reason)) => TokenCheck::Closed(reason),
            Err(SfnError::Rejected { code, message }) if malformed(&code) => TokenCheck::Malformed(
                format!("Step Functions refused the task token: {code}: {message}"),
            ),
            // Throttled, unavailable, refused for another reason (a missing permission):
            // nothing says the message is not a task; the answer will tell.
            Err(_) => TokenCheck::Run,
        }
    }

    /// Deletes the message of `receipt`; whether it is gone. Deletes asked for while
    /// another batch is in flight go together in the next (`DeleteMessageBatch`); a
    /// delete that fails for a transient reason is tried again alone, up to
    /// [`DELETE_ATTEMPTS`] in all. A message left reappears after its visibility
    /// timeout, and the next worker finds its task closed and deletes it.
    pub async fn delete(self: &Arc<Self>, receipt: &str) -> bool {
        let (done, result) = tokio::sync::oneshot::channel();
        let lead = {
            let mut pending = self.lock_deletes();
            pending.waiting.push((receipt.to_owned(), done));
            !std::mem::replace(&mut pending.sending, true)
        };
        if lead {
            // A task of its own: a caller dropped mid-batch must not leave the others
            // waiting for a batch nobody sends.
            let queue = self.clone();
            tokio::spawn(queue.send_deletes());
        }
        result.await.unwrap_or(false)
    }

    fn lock_deletes(&self) -> std::sync::MutexGuard<'_, PendingDeletes> {
        self.deletes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends the waiting deletes, ten at a time, until none waits; then lets the next
    /// delete lead.
    async fn send_deletes(self: Arc<Self>) {
        loop {
            let batch: Vec<_> = {
                let mut pending = self.lock_deletes();
                if pending.waiting.is_empty() {
                    pending.sending = false;
                    return;
                }
                let take = pending.waiting.len().min(MAX_MESSAGES_PER_RECEIVE as usize);
                pending.waiting.drain(..take).collect()
            };
            let receipts: Vec<String> = batch.iter().map(|(r, _)| r.clone()).collect();
            let outcomes = if receipts.len() == 1 {
                vec![
                    self.sqs
                        .delete(&self.config.queue_url, &receipts[0])
                        .await
                        .err(),
                ]
            } else {
                match self
                    .sqs
                    .delete_batch(&self.config.queue_url, &receipts)
                    .await
                {
                    Ok(outcomes) => outcomes,
                    Err(err) => vec![Some(err); receipts.len()],
                }
            };
            for ((receipt, done), failed) in batch.into_iter().zip(outcomes) {
                match failed {
                    None => {
                        let _ = done.send(true);
                    }
                    // Retried beside the next batches, not in their way.
                    Some(err) => {
                        let queue = self.clone();
                        tokio::spawn(async move {
                            let _ = done.send(queue.delete_alone(&receipt, err).await);
                        });
                    }
                }
            }
        }
    }

    /// Tries a delete that failed with `err` again alone while the failure is
    /// transient; whether the message is gone.
    async fn delete_alone(&self, receipt: &str, mut err: SfnError) -> bool {
        for attempt in 2..=DELETE_ATTEMPTS {
            if !err.is_transient() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200) * (attempt - 1)).await;
            match self.sqs.delete(&self.config.queue_url, receipt).await {
                Ok(()) => return true,
                Err(again) => err = again,
            }
        }
        tracing::warn!(
            activity = &*self.config.queue_url,
            error = %err,
            "a settled task's message could not be deleted; it reappears after its visibility timeout, and the next worker finds its task closed and deletes it"
        );
        false
    }

    /// Makes a message this worker will not run visible again at once, for another
    /// worker (a host shutting down takes no new task).
    pub async fn release(&self, message: &ReceivedMessage) {
        if let Err(err) = self
            .sqs
            .change_visibility(&self.config.queue_url, &message.receipt, Duration::ZERO)
            .await
        {
            tracing::info!(
                activity = &*self.config.queue_url,
                error = %err,
                "a message received during shutdown could not be released; it reappears after its visibility timeout"
            );
        }
    }

    /// Keeps `message` hidden while its task runs: its visibility is extended every half
    /// `visibility_timeout_seconds` until the lease is settled.
    pub fn lease(self: &Arc<Self>, message: &ReceivedMessage) -> Lease {
        let keeper = tokio::spawn(keep_hidden(self.clone(), message.receipt.clone()));
        Lease {
            queue: self.clone(),
            receipt: message.receipt.clone(),
            keeper,
        }
    }
}

/// A message held while its task runs.
pub struct Lease {
    queue: Arc<CallbackQueue>,
    receipt: String,
    keeper: tokio::task::JoinHandle<()>,
}

impl Lease {
    /// Deletes the message (kept hidden until it is gone); whether it is.
    pub async fn delete(self) -> bool {
        let deleted = self.queue.delete(&self.receipt).await;
        self.keeper.abort();
        deleted
    }

    /// The task's answer settled as `state`: the message is deleted when Step Functions
    /// accepted the answer or reports the task closed, and otherwise left to reappear
    /// (an answer given up through an outage, or kept in the outbox for the next start:
    /// the next worker to receive it answers, or finds the task closed).
    pub async fn settle(self, state: &AnswerState) {
        match state {
            AnswerState::Delivered { .. } | AnswerState::Closed { .. } => {
                self.delete().await;
            }
            AnswerState::Pending | AnswerState::Delivering(_) | AnswerState::Undelivered { .. } => {
                self.keeper.abort();
                tracing::info!(
                    activity = &*self.queue.config.queue_url,
                    "the task's answer was not accepted; its message is left to reappear after its visibility timeout"
                );
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Whatever happens to the task (a panic included), the keeper stops with it.
        self.keeper.abort();
    }
}

/// Extends the visibility of the message of `receipt` every half visibility timeout
/// until its lease aborts it; gives up when SQS says the receipt is no longer valid (the
/// message was received again elsewhere).
async fn keep_hidden(queue: Arc<CallbackQueue>, receipt: String) {
    let visibility = queue.config.visibility_timeout;
    let every = (visibility / 2).max(Duration::from_millis(200));
    // After a failed extension, the next try comes soon: the message must not lapse.
    let soon = (visibility / 8).max(Duration::from_millis(100));
    let mut wait = every;
    loop {
        tokio::time::sleep(wait).await;
        wait = every;
        match queue
            .sqs
            .change_visibility(&queue.config.queue_url, &receipt, visibility)
            .await
        {
            Ok(()) => {}
            Err(err) if err.is_transient() => {
                wait = soon;
                tracing::debug!(
                activity = &*queue.config.queue_url,
                    error = %err,
                    "a message's visibility could not be extended; trying again"
                );
            }
            Err(err) => {
                tracing::warn!(
                    activity = &*queue.config.queue_url,
                    error = %err,
                    "a running task's message can no longer be kept hidden; another worker may receive it (and find its task answered, or answered twice: raise visibility_timeout_seconds)"
                );
                return;
            }
        }
    }
}

/// Whether a refusal with `code` says the token itself is malformed.
fn malformed(code: &str) -> bool {
    code == "ValidationException" || code.starts_with("InvalidParameter")
}

/// The token and input of a message `body`: the string at `token` (a JSON pointer),
/// and the value at `input` or else the body without the token, as JSON text.
fn task_of(body: &str, token: &str, input: Option<&str>) -> Result<(String, String), String> {
    let mut value: Value = serde_json::from_str(body)
        .map_err(|err| format!("the message body is not JSON ({err})"))?;
    let found = match value.pointer(token) {
        Some(Value::String(found)) => found.clone(),
        Some(_) => return Err(format!("the value at `{token}` is not a string")),
        None => return Err(format!("the message has no task token at `{token}`")),
    };
    if found.is_empty() || found.len() > MAX_TOKEN_BYTES {
        return Err(format!(
            "the task token at `{token}` is {} bytes; Step Functions' are 1 to {MAX_TOKEN_BYTES}",
            found.len()
        ));
    }
    if found.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "the task token at `{token}` holds spaces or control characters: not a task token"
        ));
    }
    // The token is a credential: cut out of whatever the input is, before it is taken.
    remove(&mut value, token);
    let input = match input {
        Some(pointer) => value
            .pointer(pointer)
            .ok_or_else(|| format!("the message has no input at `{pointer}`"))?
            .to_string(),
        None => value.to_string(),
    };
    Ok((found, input))
}

/// Removes what `pointer` names (its last step, unescaped) from its parent: a member of
/// an object, an item of an array.
fn remove(value: &mut Value, pointer: &str) {
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return;
    };
    let name = last.replace("~1", "/").replace("~0", "~");
    match value.pointer_mut(parent) {
        Some(Value::Object(members)) => {
            members.remove(&name);
        }
        Some(Value::Array(items)) => {
            if let Some(index) = name.parse::<usize>().ok().filter(|i| *i < items.len()) {
                items.remove(index);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_carries_its_token_and_the_rest_is_the_input() {
        let (token, input) = task_of(
            r#"{"TaskToken":"AAAA+/=","order":{"id":7}}"#,
            "/TaskToken",
            None,
        )
        .unwrap();
        assert_eq!(token, "AAAA+/=");
        assert_eq!(input, r#"{"order":{"id":7}}"#);
        let (token, input) = task_of(
            r#"{"meta":{"a/b":"tok"},"input":{"n":1}}"#,
            "/meta/a~1b",
            Some("/input"),
        )
        .unwrap();
        assert_eq!(token, "tok");
        assert_eq!(input, r#"{"n":1}"#);
        // The token is cut out of the input wherever it is, whatever the input is.
        let (_, input) = task_of(r#"{"meta":{"t":"tok","x":1}}"#, "/meta/t", None).unwrap();
        assert_eq!(input, r#"{"meta":{"x":1}}"#);
        let (_, input) = task_of(r#"{"t":"tok","x":1}"#, "/t", Some("")).unwrap();
        assert_eq!(input, r#"{"x":1}"#);
        let (_, input) = task_of(r#"{"a":["tok",2]}"#, "/a/0", Some("/a")).unwrap();
        assert_eq!(input, "[2]");
    }

    #[test]
    fn a_message_that_is_not_a_task_says_why_without_its_body() {
        for (body, why) in [
            ("not json", "not JSON"),
            (r#"{"other":1}"#, "no task token at `/TaskToken`"),
            (r#"{"TaskToken":7}"#, "not a string"),
            (r#"{"TaskToken":""}"#, "0 bytes"),
            (r#"{"TaskToken":"a b"}"#, "spaces"),
        ] {
            let err = task_of(body, "/TaskToken", None).unwrap_err();
            assert!(err.contains(why), "{body}: {err}");
            assert!(!err.contains("other"), "{err}");
        }
        let long = format!(r#"{{"TaskToken":"{}"}}"#, "a".repeat(MAX_TOKEN_BYTES + 1));
        assert!(
            task_of(&long, "/TaskToken", None)
                .unwrap_err()
                .contains("2049 bytes")
        );
        let err = task_of(r#"{"TaskToken":"t"}"#, "/TaskToken", Some("/input")).unwrap_err();
        assert!(err.contains("no input at `/input`"), "{err}");
    }

    #[test]
    fn only_a_validation_refusal_says_the_token_is_malformed() {
        assert!(malformed("ValidationException"));
        assert!(malformed("InvalidParameterValue"));
        assert!(!malformed("AccessDeniedException"));
        assert!(!malformed("InvalidToken"));
    }
}
