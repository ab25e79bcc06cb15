//! What a task ends with: the answer Step Functions gets, the failures the host makes
//! when the handler does not answer by itself, and why an answer was not taken.
//!
//! A leaf: the engine (which hands answers over) and the delivery (which sends them)
//! share these types without knowing each other.

use std::fmt;

/// Step Functions' limit on a task output, in bytes.
pub const MAX_OUTPUT_BYTES: usize = 262_144;
/// Step Functions' limit on a failure's error name: 256, counted in UTF-16 code units
/// here (a service that counts UTF-16 units, as Java's strings do, may otherwise refuse
/// text it counts longer than Rust counts characters); so also at most 256 characters.
pub const MAX_ERROR_LEN: usize = 256;
/// Step Functions' limit on a failure's cause: 32,768, counted as for [`MAX_ERROR_LEN`].
pub const MAX_CAUSE_LEN: usize = 32_768;

/// The one answer a task gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `SendTaskSuccess` with this output (a JSON document).
    Success {
        /// The task output.
        output: String,
    },
    /// `SendTaskFailure` with this error name and cause.
    Failure {
        /// The error name, at most [`MAX_ERROR_LEN`] UTF-16 code units.
        error: String,
        /// The cause, at most [`MAX_CAUSE_LEN`] UTF-16 code units.
        cause: String,
    },
}

impl Answer {
    /// A failure, with `error` and `cause` cut to Step Functions' limits (in UTF-16
    /// code units, on a character boundary) so that the call cannot be refused for its
    /// length, however the service counts.
    pub fn failure(error: impl Into<String>, cause: impl Into<String>) -> Self {
        let mut error = error.into();
        let mut cause = cause.into();
        truncate_utf16(&mut error, MAX_ERROR_LEN);
        truncate_utf16(&mut cause, MAX_CAUSE_LEN);
        Answer::Failure { error, cause }
    }

    /// True for [`Answer::Success`].
    pub fn is_success(&self) -> bool {
        matches!(self, Answer::Success { .. })
    }

    /// The last resort when Step Functions refuses the host's own failure (a KMS key it
    /// cannot use, say): a failure with neither error nor cause, which the API documents
    /// as needing no KMS permission. Sent without those fields.
    pub fn bare_failure() -> Self {
        Answer::Failure {
            error: String::new(),
            cause: String::new(),
        }
    }

    /// Whether this is [`Answer::bare_failure`].
    pub fn is_bare_failure(&self) -> bool {
        matches!(self, Answer::Failure { error, cause } if error.is_empty() && cause.is_empty())
    }
}

/// Why the host answered a task itself. Each has a fixed error name (`SfnWasmHost.*`)
/// that state machines can `Catch` or `Retry` on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostFailure {
    /// `handle` returned `err(message)` and nothing was sent.
    HandlerError(String),
    /// `handle` returned `ok` and nothing was sent.
    NoResponse,
    /// The guest trapped (panic, `unreachable`, stack overflow, ...).
    Trap(String),
    /// The guest asked for more memory than its cap allows.
    OutOfMemory(String),
    /// The task ran past its deadline.
    Timeout(String),
    /// The host is stopping and the task did not finish within the grace period.
    Shutdown,
    /// The task input is not JSON; the guest was not called.
    InvalidInput(String),
    /// No instance slot was free to run the task (the engine's pool is full); retriable.
    Capacity(String),
    /// The host itself went wrong while running the task (a bug); retriable.
    Internal(String),
    /// Step Functions refused the handler's answer (its code and message), and the
    /// handler gave no other it accepted.
    AnswerRefused(String),
    /// Another attempt with the task's idempotency key is running now; retriable (a
    /// `Retry` picks up its stored answer once it is done).
    Duplicate,
    /// The task's idempotency key holds an answer (or a running attempt) for an input
    /// that differs from this one at a `validate` pointer (named here); not retriable.
    IdempotencyMismatch(String),
}

/// What kind of failure the host answered with, without its details: what an error name,
/// a retry policy, an event's `error` field and a metric label are about. Fieldless, so
/// that each of those is a `match` the compiler keeps complete, not a list kept in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// [`HostFailure::HandlerError`].
    HandlerError,
    /// [`HostFailure::NoResponse`].
    NoResponse,
    /// [`HostFailure::Trap`].
    Trap,
    /// [`HostFailure::OutOfMemory`].
    OutOfMemory,
    /// [`HostFailure::Timeout`].
    Timeout,
    /// [`HostFailure::Shutdown`].
    Shutdown,
    /// [`HostFailure::InvalidInput`].
    InvalidInput,
    /// [`HostFailure::Capacity`].
    Capacity,
    /// [`HostFailure::Internal`].
    Internal,
    /// [`HostFailure::AnswerRefused`].
    AnswerRefused,
    /// [`HostFailure::Duplicate`].
    Duplicate,
    /// [`HostFailure::IdempotencyMismatch`].
    IdempotencyMismatch,
}

impl FailureKind {
    /// Every kind, in declaration order.
    pub const ALL: [FailureKind; 12] = [
        FailureKind::HandlerError,
        FailureKind::NoResponse,
        FailureKind::Trap,
        FailureKind::OutOfMemory,
        FailureKind::Timeout,
        FailureKind::Shutdown,
        FailureKind::InvalidInput,
        FailureKind::Capacity,
        FailureKind::Internal,
        FailureKind::AnswerRefused,
        FailureKind::Duplicate,
        FailureKind::IdempotencyMismatch,
    ];

    /// The error name sent to Step Functions (`SfnWasmHost.*`).
    pub fn name(self) -> &'static str {
        match self {
            FailureKind::HandlerError => "SfnWasmHost.HandlerError",
            FailureKind::NoResponse => "SfnWasmHost.NoResponse",
            FailureKind::Trap => "SfnWasmHost.Trap",
            FailureKind::OutOfMemory => "SfnWasmHost.OutOfMemory",
            FailureKind::Timeout => "SfnWasmHost.Timeout",
            FailureKind::Shutdown => "SfnWasmHost.Shutdown",
            FailureKind::InvalidInput => "SfnWasmHost.InvalidInput",
            FailureKind::Capacity => "SfnWasmHost.Capacity",
            FailureKind::Internal => "SfnWasmHost.Internal",
            FailureKind::AnswerRefused => "SfnWasmHost.AnswerRefused",
            FailureKind::Duplicate => "SfnWasmHost.Duplicate",
            FailureKind::IdempotencyMismatch => "SfnWasmHost.IdempotencyMismatch",
        }
    }

    /// The kind named `name`, if it is one of [`FailureKind::name`]: for an answer read
    /// back (from the outbox) rather than made here.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// Whether a state machine should `Retry` on it: another attempt (on this host later,
    /// or on another) can get past it. The state machines `new` writes retry exactly these.
    pub fn is_retriable(self) -> bool {
        matches!(
            self,
            FailureKind::Shutdown
                | FailureKind::Capacity
                | FailureKind::Internal
                | FailureKind::Duplicate
        )
    }

    /// Whether the handler caused it (its error, no answer, a trap, its memory, its
    /// deadline), as opposed to the host, the input, Step Functions or another attempt:
    /// only these count against a handler version.
    pub fn is_handler_caused(self) -> bool {
        matches!(
            self,
            FailureKind::HandlerError
                | FailureKind::NoResponse
                | FailureKind::Trap
                | FailureKind::OutOfMemory
                | FailureKind::Timeout
        )
    }

    /// The names of the retriable kinds, in declaration order.
    pub fn retriable_names() -> Vec<&'static str> {
        Self::ALL
            .into_iter()
            .filter(|kind| kind.is_retriable())
            .map(Self::name)
            .collect()
    }
}

impl HostFailure {
    /// Its kind.
    pub fn kind(&self) -> FailureKind {
        match self {
            HostFailure::HandlerError(_) => FailureKind::HandlerError,
            HostFailure::NoResponse => FailureKind::NoResponse,
            HostFailure::Trap(_) => FailureKind::Trap,
            HostFailure::OutOfMemory(_) => FailureKind::OutOfMemory,
            HostFailure::Timeout(_) => FailureKind::Timeout,
            HostFailure::Shutdown => FailureKind::Shutdown,
            HostFailure::InvalidInput(_) => FailureKind::InvalidInput,
            HostFailure::Capacity(_) => FailureKind::Capacity,
            HostFailure::Internal(_) => FailureKind::Internal,
            HostFailure::AnswerRefused(_) => FailureKind::AnswerRefused,
            HostFailure::Duplicate => FailureKind::Duplicate,
            HostFailure::IdempotencyMismatch(_) => FailureKind::IdempotencyMismatch,
        }
    }

    /// The error name sent to Step Functions.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// The cause sent to Step Functions.
    pub fn cause(&self) -> String {
        match self {
            HostFailure::HandlerError(message) => message.clone(),
            HostFailure::NoResponse => {
                "the handler returned without sending success or failure".to_owned()
            }
            HostFailure::Trap(text)
            | HostFailure::OutOfMemory(text)
            | HostFailure::Timeout(text)
            | HostFailure::InvalidInput(text)
            | HostFailure::Capacity(text)
            | HostFailure::Internal(text) => text.clone(),
            HostFailure::AnswerRefused(refusal) => {
                format!("Step Functions refused the handler's answer: {refusal}")
            }
            HostFailure::Shutdown => "the host shut down before the handler finished".to_owned(),
            HostFailure::Duplicate => "another attempt with this task's idempotency key is running; retry to get its answer".to_owned(),
            HostFailure::IdempotencyMismatch(pointers) => format!(
                "this task's idempotency key was used for an input that differs at {pointers}; use another key for other work"
            ),
        }
    }

    /// The failure answer the host sends for this.
    pub fn answer(&self) -> Answer {
        Answer::failure(self.name(), self.cause())
    }
}

impl fmt::Display for HostFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name(), self.cause())
    }
}

/// Why an answer or heartbeat was not taken: what a handler's toolkit call returns
/// (the engine turns it into the WIT world's `toolkit-error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// The task already has an answer; the first one stands.
    #[error("the task was already answered; the first answer stands")]
    AlreadyResponded,
    /// Step Functions no longer accepts answers for the task; what it said.
    #[error("the task is closed: {0}")]
    TaskClosed(String),
    /// The call failed for another reason (refused outright, or the host is stopping).
    #[error("{0}")]
    Unavailable(String),
}

/// Cuts `s` to at most `max_units` UTF-16 code units, never inside a character (so
/// never between the two halves of a surrogate pair): the result is also at most
/// `max_units` characters, whichever way a service counts.
pub fn truncate_utf16(s: &mut String, max_units: usize) {
    // Every character is at least one unit: a string of that many bytes or fewer fits.
    if s.len() <= max_units {
        return;
    }
    let mut units = 0;
    for (byte_index, c) in s.char_indices() {
        units += c.len_utf16();
        if units > max_units {
            s.truncate(byte_index);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_counts_utf16_units_not_bytes() {
        // Two bytes in UTF-8, one unit in UTF-16.
        let mut s = "é".repeat(300);
        truncate_utf16(&mut s, MAX_ERROR_LEN);
        assert_eq!(s.chars().count(), 256);
        assert_eq!(s.len(), 512);

        let mut short = "abc".to_owned();
        truncate_utf16(&mut short, 3);
        assert_eq!(short, "abc");

        // A pair is kept whole or dropped whole: 3 units hold one crab, not one and a half.
        let mut crabs = "🦀🦀".to_owned();
        truncate_utf16(&mut crabs, 3);
        assert_eq!(crabs, "🦀");
    }

    #[test]
    fn failure_answers_respect_step_functions_limits_however_counted() {
        let Answer::Failure { error, cause } =
            Answer::failure("x".repeat(1000), "🦀".repeat(40_000))
        else {
            panic!("expected a failure");
        };
        assert_eq!(error.chars().count(), MAX_ERROR_LEN);
        // 32,768 emoji would be 65,536 UTF-16 units: cut to the limit in units.
        assert_eq!(cause.encode_utf16().count(), MAX_CAUSE_LEN);
        assert_eq!(cause.chars().count(), MAX_CAUSE_LEN / 2);
        let Answer::Failure { cause, .. } =
            Answer::failure("E", format!("a{}", "🦀".repeat(40_000)))
        else {
            panic!("expected a failure");
        };
        assert_eq!(
            cause.encode_utf16().count(),
            MAX_CAUSE_LEN - 1,
            "no half pair"
        );
    }

    /// One failure of each kind, in declaration order.
    fn every_failure() -> [HostFailure; 12] {
        [
            HostFailure::HandlerError(String::new()),
            HostFailure::NoResponse,
            HostFailure::Trap(String::new()),
            HostFailure::OutOfMemory(String::new()),
            HostFailure::Timeout(String::new()),
            HostFailure::Shutdown,
            HostFailure::InvalidInput(String::new()),
            HostFailure::Capacity(String::new()),
            HostFailure::Internal(String::new()),
            HostFailure::AnswerRefused(String::new()),
            HostFailure::Duplicate,
            HostFailure::IdempotencyMismatch(String::new()),
        ]
    }

    #[test]
    fn only_what_the_handler_did_is_its_fault() {
        let caused: Vec<bool> = every_failure()
            .iter()
            .map(|failure| failure.kind().is_handler_caused())
            .collect();
        assert_eq!(
            caused,
            [
                true, true, true, true, true, false, false, false, false, false, false, false
            ]
        );
    }

    #[test]
    fn host_failures_have_the_fixed_names() {
        let names: Vec<_> = every_failure().iter().map(HostFailure::name).collect();
        let kinds: Vec<_> = every_failure().iter().map(HostFailure::kind).collect();
        assert_eq!(kinds, FailureKind::ALL);
        for kind in FailureKind::ALL {
            assert_eq!(FailureKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(FailureKind::from_name("SfnWasmHost.Other"), None);
        assert_eq!(
            names,
            [
                "SfnWasmHost.HandlerError",
                "SfnWasmHost.NoResponse",
                "SfnWasmHost.Trap",
                "SfnWasmHost.OutOfMemory",
                "SfnWasmHost.Timeout",
                "SfnWasmHost.Shutdown",
                "SfnWasmHost.InvalidInput",
                "SfnWasmHost.Capacity",
                "SfnWasmHost.Internal",
                "SfnWasmHost.AnswerRefused",
                "SfnWasmHost.Duplicate",
                "SfnWasmHost.IdempotencyMismatch",
            ]
        );
        assert_eq!(
            FailureKind::retriable_names(),
            [
                "SfnWasmHost.Shutdown",
                "SfnWasmHost.Capacity",
                "SfnWasmHost.Internal",
                "SfnWasmHost.Duplicate",
            ]
        );
    }
}
