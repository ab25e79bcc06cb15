//! Step Functions' error codes and what the host does with each: one table, decided by
//! the code first and the HTTP status only for a code it does not list (a KMS
//! throttling error is a 400, and must still be waited out).

use aws_sdk_sfn::config::http::HttpResponse;
use aws_sdk_sfn::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::error_chain::chain;

/// Why a Step Functions call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SfnError {
    /// The task no longer accepts answers (`InvalidToken`, `TaskDoesNotExist`,
    /// `TaskTimedOut`).
    #[error("the task is closed: {0}")]
    TaskClosed(String),
    /// Worth retrying: the network, a 5xx, credentials being refreshed.
    #[error("{0}")]
    Unavailable(String),
    /// Step Functions throttled the call (the account's API quota): worth retrying
    /// after a pause, and no sign that anything is broken.
    #[error("throttled: {0}")]
    Throttled(String),
    /// The attempt ran out of time: Step Functions may or may not have acted on it.
    #[error("{0}")]
    TimedOut(String),
    /// Step Functions refused the request itself (a final code, or a 4xx it does not
    /// list); the same request will be refused again.
    #[error("{code}: {message}")]
    Rejected {
        /// The service's error code (`InvalidOutput`), or `HTTP STATUS` without one.
        code: String,
        /// What it said.
        message: String,
    },
}

impl SfnError {
    /// A refusal with the service's `code` and `message`.
    pub fn rejected(code: impl Into<String>, message: impl Into<String>) -> Self {
        SfnError::Rejected {
            code: code.into(),
            message: message.into(),
        }
    }

    /// The same error with every occurrence of `secret` (a task token) cut out of its
    /// text. A service message may quote the request it refused (a
    /// `ValidationException` names the value it did not accept), and these texts reach
    /// events, traces, the guest's `unavailable` and the causes sent to Step Functions:
    /// the client redacts them where the token and the service's text meet.
    pub fn redact(self, secret: &str) -> Self {
        if secret.is_empty() {
            return self;
        }
        let cut = |text: String| {
            if text.contains(secret) {
                text.replace(secret, "<task token>")
            } else {
                text
            }
        };
        match self {
            SfnError::TaskClosed(text) => SfnError::TaskClosed(cut(text)),
            SfnError::Unavailable(text) => SfnError::Unavailable(cut(text)),
            SfnError::Throttled(text) => SfnError::Throttled(cut(text)),
            SfnError::TimedOut(text) => SfnError::TimedOut(cut(text)),
            SfnError::Rejected { code, message } => SfnError::Rejected {
                code,
                message: cut(message),
            },
        }
    }

    /// Whether this refusal of a poll says the activity (or a callback's queue) cannot be
    /// polled until its setup changes (it does not exist, its KMS key cannot be used, SQS
    /// denies the host the queue): the worker then waits
    /// in a visible error state (`/readyz` says why) and recovers by itself when the
    /// setup is mended, rather than giving up and being restarted over and over.
    pub fn blocks_polling(&self) -> bool {
        matches!(
            self,
            SfnError::Rejected { code, .. } if matches!(
                code.as_str(),
                "ActivityDoesNotExist"
                    | "KmsAccessDeniedException"
                    | "KmsInvalidStateException"
                    | "QueueDoesNotExist"
                    | "AWS.SimpleQueueService.NonExistentQueue"
                    | "KmsAccessDenied"
                    | "KmsDisabled"
                    | "KmsNotFound"
                    | "AccessDenied"
            )
        )
    }

    /// Whether the same call may succeed if tried again.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SfnError::Unavailable(_) | SfnError::TimedOut(_) | SfnError::Throttled(_)
        )
    }
}

/// What the host does with a Step Functions error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The task can no longer be answered: stop trying, nothing more can be sent.
    Closed,
    /// A quota (the account's API rate, KMS's, the pollers per ARN): wait and try again,
    /// as long as it takes; not a fault.
    Throttled,
    /// Worth retrying soon: the service or the credentials are momentarily unavailable.
    Transient,
    /// The same request will be refused again: it must change (or the setup must).
    Final,
}

use ErrorClass::{Closed, Final, Throttled, Transient};

/// Every error code the Step Functions API reference documents for `GetActivityTask`,
/// `SendTaskSuccess`, `SendTaskFailure` and `SendTaskHeartbeat`, and the errors common to
/// every AWS API, with the class the host gives each. A code not listed is classed by
/// its HTTP status ([`class_of`]).
pub const ERROR_CODES: &[(&str, ErrorClass)] = &[
    // The task's own codes: it timed out, was stopped, or its token is not (or no
    // longer) valid.
    ("InvalidToken", Closed),
    ("TaskDoesNotExist", Closed),
    ("TaskTimedOut", Closed),
    // Quotas. KMS throttles the encryption of an activity's data with a 400.
    ("ThrottlingException", Throttled),
    ("Throttling", Throttled),
    ("TooManyRequestsException", Throttled),
    ("RequestLimitExceeded", Throttled),
    ("KmsThrottlingException", Throttled),
    // More than 1,000 pollers on one activity across the fleet: wait for a poller to go.
    ("ActivityWorkerLimitExceeded", Throttled),
    // Momentary: the service, or credentials that are being refreshed.
    ("ServiceUnavailable", Transient),
    ("ServiceUnavailableException", Transient),
    ("InternalFailure", Transient),
    ("InternalServerError", Transient),
    ("ExpiredTokenException", Transient),
    ("RequestExpired", Transient),
    ("RequestTimeout", Transient),
    ("RequestTimeoutException", Transient),
    // The request itself, or the setup: refused again until something changes.
    ("InvalidOutput", Final),
    ("ValidationException", Final),
    ("InvalidArn", Final),
    ("ActivityDoesNotExist", Final),
    ("KmsAccessDeniedException", Final),
    ("KmsInvalidStateException", Final),
    ("AccessDeniedException", Final),
    ("UnrecognizedClientException", Final),
    ("InvalidClientTokenId", Final),
    ("InvalidSignatureException", Final),
    ("IncompleteSignature", Final),
    ("MissingAuthenticationToken", Final),
    ("NotAuthorized", Final),
    ("OptInRequired", Final),
    ("InvalidAction", Final),
    ("InvalidParameterCombination", Final),
    ("InvalidParameterValue", Final),
    ("InvalidQueryParameter", Final),
    ("MalformedQueryString", Final),
    ("MissingAction", Final),
    ("MissingParameter", Final),
    // SQS, for callbacks' queues: `ReceiveMessage`, `ChangeMessageVisibility`,
    // `DeleteMessage`, `GetQueueAttributes`.
    ("RequestThrottled", Throttled),
    ("AWS.SimpleQueueService.RequestThrottled", Throttled),
    ("KmsThrottled", Throttled),
    ("OverLimit", Throttled),
    ("QueueDoesNotExist", Final),
    ("AWS.SimpleQueueService.NonExistentQueue", Final),
    ("ReceiptHandleIsInvalid", Final),
    ("MessageNotInflight", Final),
    ("AWS.SimpleQueueService.MessageNotInflight", Final),
    ("KmsAccessDenied", Final),
    ("KmsDisabled", Final),
    ("KmsNotFound", Final),
    ("AccessDenied", Final),
];

/// The class of an error with `code` and HTTP `status`: the table's for a listed code;
/// else 429 throttled, another 4xx final, anything else (5xx, no response) transient.
pub fn class_of(code: Option<&str>, status: Option<u16>) -> ErrorClass {
    if let Some(class) = code.and_then(|code| {
        ERROR_CODES
            .iter()
            .find(|(listed, _)| *listed == code)
            .map(|(_, class)| *class)
    }) {
        return class;
    }
    match status {
        Some(429) => Throttled,
        Some(400..=499) => Final,
        _ => Transient,
    }
}

/// Maps an SDK error by its class ([`class_of`]); timeouts are [`SfnError::TimedOut`].
/// A service error reads `CODE: message`, as AWS's own tools print it; anything else
/// carries the SDK's error chain.
/// `token` is the task token of the call, if it has one: cut out of every text, the
/// debug line included ([`SfnError::redact`]). The SQS client of callbacks maps its
/// errors here too: one table of codes, one backoff.
pub fn map_error<E>(err: SdkError<E, HttpResponse>, token: &str) -> SfnError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    // The SDK's whole story (its Debug dumps included) is for a developer, at debug; what
    // events and users read is the chain of messages.
    if tracing::enabled!(tracing::Level::DEBUG) {
        let story = DisplayErrorContext(&err).to_string();
        let story = if token.is_empty() {
            story
        } else {
            story.replace(token, "<task token>")
        };
        tracing::debug!(error = %story, "a Step Functions call failed");
    }
    classify(err).redact(token)
}

/// The error's class and text ([`class_of`]).
fn classify<E>(err: SdkError<E, HttpResponse>) -> SfnError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = match &err {
        SdkError::TimeoutError(_) => return SfnError::TimedOut(chain(&err)),
        SdkError::DispatchFailure(failure) if failure.is_timeout() => {
            return SfnError::TimedOut(chain(&err));
        }
        SdkError::ServiceError(service) => Some(service.raw().status().as_u16()),
        _ => None,
    };
    let class = class_of(err.code(), status);
    let hint = hint(err.code()).map_or_else(String::new, |hint| format!(" ({hint})"));
    if class == Final {
        return SfnError::Rejected {
            code: err
                .code()
                .map(str::to_owned)
                .or_else(|| status.map(|status| format!("HTTP {status}")))
                .unwrap_or_else(|| "Unknown".to_owned()),
            message: format!("{}{hint}", err.message().unwrap_or_default()),
        };
    }
    let text = match (err.code(), err.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        _ => chain(&err),
    };
    let text = if err.code().is_none() && text.contains("no credentials found") {
        // The chain's own account lists every provider it tried, over many lines.
        format!(
            "no AWS credentials: the default chain found none ({NO_CREDENTIALS}; `sfn-wasm-host check --remote` checks)"
        )
    } else {
        // One line: what a multi-line message says after its first line is detail.
        let first = text.lines().next().unwrap_or_default();
        format!("{first}{hint}")
    };
    match class {
        Closed => SfnError::TaskClosed(text),
        Throttled => SfnError::Throttled(text),
        Transient | Final => SfnError::Unavailable(text),
    }
}

/// What to do about the codes a user can act on, appended to their message: errors a
/// user reads once, in one line, should say it.
fn hint(code: Option<&str>) -> Option<&'static str> {
    Some(match code? {
        "ActivityWorkerLimitExceeded" => {
            "Step Functions allows 1,000 pollers per activity across every host: lower `pollers` or the number of hosts"
        }
        "ActivityDoesNotExist" => {
            "create the activity in this account and region, or fix `arn`; `sfn-wasm-host check --remote` checks every activity"
        }
        "KmsAccessDeniedException" | "KmsInvalidStateException" => {
            "the activity's KMS key must be enabled, and usable by the host's credentials (kms:Decrypt, kms:GenerateDataKey)"
        }
        "AccessDeniedException" => {
            "the host's credentials lack a Step Functions permission: allow states:GetActivityTask, states:SendTaskSuccess, states:SendTaskFailure and states:SendTaskHeartbeat"
        }
        "UnrecognizedClientException" | "InvalidClientTokenId" | "InvalidSignatureException" => {
            "the host's credentials are not valid for this account and region: check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE and `[aws] region`"
        }
        "ExpiredTokenException" => "the host's credentials expired: renew them, or use a role",
        "QueueDoesNotExist" | "AWS.SimpleQueueService.NonExistentQueue" => {
            "create the queue in this account and region, or fix `queue_url`; `sfn-wasm-host check --remote` checks every queue"
        }
        "AccessDenied" => {
            "the host's credentials lack an SQS permission on the callback's queue: allow sqs:ReceiveMessage, sqs:ChangeMessageVisibility, sqs:DeleteMessage and sqs:GetQueueAttributes"
        }
        _ => return None,
    })
}

/// What to do when the SDK finds no credentials at all (`serve` and `check --remote`
/// say the same).
pub const NO_CREDENTIALS: &str = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or run where a role provides them";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_code_has_its_class_whatever_the_status() {
        for (code, class) in ERROR_CODES {
            for status in [400, 403, 500] {
                assert_eq!(
                    class_of(Some(code), Some(status)),
                    *class,
                    "{code} {status}"
                );
            }
        }
        // The four APIs' own codes, each listed.
        for code in [
            "ActivityDoesNotExist",
            "ActivityWorkerLimitExceeded",
            "InvalidArn",
            "InvalidOutput",
            "InvalidToken",
            "KmsAccessDeniedException",
            "KmsInvalidStateException",
            "KmsThrottlingException",
            "TaskDoesNotExist",
            "TaskTimedOut",
        ] {
            assert!(
                ERROR_CODES.iter().any(|(listed, _)| *listed == code),
                "{code}"
            );
        }
    }

    #[test]
    fn a_kms_throttle_is_a_throttle_though_it_is_a_400() {
        assert_eq!(
            class_of(Some("KmsThrottlingException"), Some(400)),
            Throttled
        );
        assert_eq!(
            class_of(Some("ActivityWorkerLimitExceeded"), Some(400)),
            Throttled
        );
    }

    #[test]
    fn the_codes_a_user_can_act_on_say_what_to_do() {
        for code in [
            "ActivityWorkerLimitExceeded",
            "ActivityDoesNotExist",
            "KmsAccessDeniedException",
            "AccessDeniedException",
            "UnrecognizedClientException",
            "ExpiredTokenException",
        ] {
            assert!(hint(Some(code)).is_some(), "{code}");
        }
        assert_eq!(hint(Some("InvalidOutput")), None);
        assert_eq!(hint(None), None);
    }

    #[test]
    fn a_chain_says_each_message_once_and_no_debug() {
        #[derive(Debug, thiserror::Error)]
        #[error("dispatch failure")]
        struct Outer(#[source] std::io::Error);
        let err = Outer(std::io::Error::other("connection refused"));
        assert_eq!(chain(&err), "dispatch failure: connection refused");
    }

    #[test]
    fn a_task_token_is_cut_out_of_every_error_text() {
        let token = "AAAAKgAAAAIAAAAAAAAAAbc";
        let quoted = format!("Value '{token}' at 'taskToken' failed to satisfy constraint");
        for error in [
            SfnError::rejected("ValidationException", quoted.clone()),
            SfnError::TaskClosed(format!("InvalidToken: {quoted}")),
            SfnError::Unavailable(quoted.clone()),
            SfnError::Throttled(quoted.clone()),
            SfnError::TimedOut(quoted.clone()),
        ] {
            let text = error.redact(token).to_string();
            assert!(!text.contains(token), "{text}");
            assert!(text.contains("<task token>"), "{text}");
        }
    }

    #[test]
    fn an_unlisted_code_falls_back_to_the_status() {
        assert_eq!(class_of(Some("SomethingNew"), Some(429)), Throttled);
        assert_eq!(class_of(Some("SomethingNew"), Some(400)), Final);
        assert_eq!(class_of(Some("SomethingNew"), Some(503)), Transient);
        assert_eq!(class_of(None, None), Transient);
    }
}
