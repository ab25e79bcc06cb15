//! Write AWS Step Functions activity handlers for `sfn-wasm-host` in plain Rust.
//!
//! A handler is a function from a deserializable input to a serializable output:
//!
//! ```ignore
//! use serde::{Deserialize, Serialize};
//! use sfn_wasm_guest::{Context, Failure};
//!
//! #[derive(Deserialize)]
//! struct Input { hello: String }
//!
//! #[derive(Serialize)]
//! struct Output { greeting: String }
//!
//! fn greet(input: Input, _ctx: &Context) -> Result<Output, Failure> {
//!     Ok(Output { greeting: format!("Hello, {}", input.hello) })
//! }
//!
//! sfn_wasm_guest::handler!(greet);
//! ```
//!
//! [`handler!`] exports the function as the component's `handle`: the SDK parses the task
//! input, calls the function, and answers the task with `success(output)` or
//! `failure(error, cause)`. Handlers that need full control over the answer (or none)
//! use [`raw_handler!`] and the [`toolkit`] functions directly.
//!
//! Build with `cargo build --release --target wasm32-wasip2`; the component is
//! `target/wasm32-wasip2/release/<crate>.wasm`.
#![deny(missing_docs)]

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

// Lets the generated bindings name this crate the same way from inside and outside it.
extern crate self as sfn_wasm_guest;

/// Generated bindings for the `sfn:activity/handler` world. Not a stable API: use the
/// items re-exported at the crate root.
#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "sfn:activity/handler",
        pub_export_macro: true,
        export_macro_name: "__export_handler",
        default_bindings_module: "::sfn_wasm_guest::bindings",
        runtime_path: "::sfn_wasm_guest::__private::wit_bindgen::rt",
    });
}

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "http")]
pub mod http;

#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;
}

pub use bindings::sfn::activity::types::{Task, ToolkitError};

/// The raw toolkit imported from the host, for handlers that answer by themselves
/// (see [`raw_handler!`]). At most one `success` or `failure` takes effect; a second one
/// returns [`ToolkitError::AlreadyResponded`].
pub mod toolkit {
    pub use crate::bindings::sfn::activity::toolkit::{
        cancelled, checkpoint, failure, heartbeat, last_checkpoint, success,
    };
}

/// A task failure: Step Functions sees `error` as the error name (what `Catch` and `Retry`
/// match on) and `cause` as the details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The error name, cut by the host to 256 characters.
    pub error: String,
    /// A human-readable explanation, cut by the host to 32,768 characters.
    pub cause: String,
}

impl Failure {
    /// Makes a failure with an error name and a cause.
    pub fn new(error: impl Into<String>, cause: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            cause: cause.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.error, self.cause)
    }
}

impl std::error::Error for Failure {}

/// What a typed handler can see of its task and do besides answering it.
pub struct Context {
    task: Task,
}

impl Context {
    /// The task being handled; `task().input` is the raw JSON input.
    pub fn task(&self) -> &Task {
        &self.task
    }

    /// Time left before the host aborts the handler, measured when the task started.
    pub fn deadline(&self) -> Option<Duration> {
        self.task.deadline_ms.map(Duration::from_millis)
    }

    /// Tells Step Functions the handler is still working (resets `HeartbeatSeconds`).
    ///
    /// # Errors
    /// [`ToolkitError::TaskClosed`] when Step Functions no longer accepts answers for the
    /// task: stop working on it. [`ToolkitError::Unavailable`] when the call failed
    /// otherwise: carry on and try again later.
    pub fn heartbeat(&self) -> Result<(), ToolkitError> {
        toolkit::heartbeat()
    }

    /// True once the host wants the handler to stop early (it is shutting down). Long
    /// handlers should check it between steps and answer promptly when it turns true.
    pub fn cancelled(&self) -> bool {
        toolkit::cancelled()
    }

    /// Saves `data` (at most 262,144 bytes) as the task's progress: a later attempt of the
    /// same work (a `Retry`, or a task a stopped host left) reads it with
    /// [`last_checkpoint`](Self::last_checkpoint) and goes on from there. The activity
    /// must keep progress (`[activity.progress]` in the host's config).
    ///
    /// # Errors
    /// [`ToolkitError::Unavailable`] when the activity keeps no progress, the input lacks
    /// the progress key, or the store could not be written (the previous checkpoint
    /// stands); [`ToolkitError::InvalidOutput`] when `data` is too long.
    pub fn checkpoint(&self, data: &str) -> Result<(), ToolkitError> {
        toolkit::checkpoint(data)
    }

    /// The last checkpoint saved for this task's work, by this attempt or an earlier one.
    pub fn last_checkpoint(&self) -> Option<String> {
        toolkit::last_checkpoint()
    }
}

/// Runs a typed handler for one task and answers the task with its result. This is what
/// [`handler!`] expands to; call it yourself only from a [`raw_handler!`] function.
///
/// An input that does not deserialize into `I` is not passed to `f`: `handle` returns an
/// error, which the host reports as `SfnWasmHost.HandlerError` with the serde message.
///
/// # Errors
/// The text `handle` returns when no answer could be sent.
pub fn run<I, O, F>(task: Task, f: F) -> Result<(), String>
where
    I: DeserializeOwned,
    O: Serialize,
    F: FnOnce(I, &Context) -> Result<O, Failure>,
{
    let input: I = serde_json::from_str(&task.input)
        .map_err(|err| format!("task input does not match the handler's input type: {err}"))?;
    let ctx = Context { task };
    let answer = match f(input, &ctx) {
        Ok(output) => {
            let json = serde_json::to_string(&output)
                .map_err(|err| format!("handler output does not serialize to JSON: {err}"))?;
            toolkit::success(&json)
        }
        Err(failure) => toolkit::failure(&failure.error, &failure.cause),
    };
    answer.map_err(|err| format!("the answer was not accepted: {err}"))
}

/// Exports a typed handler function as the component's `handle`.
///
/// The function has the shape `fn(I, &Context) -> Result<O, Failure>` where `I:
/// DeserializeOwned` and `O: Serialize`. Use it once per crate (`crate-type = ["cdylib"]`).
#[macro_export]
macro_rules! handler {
    ($handler:path) => {
        $crate::raw_handler!(|task: $crate::Task| $crate::run(task, $handler));
    };
}

/// Exports a function `fn(Task) -> Result<(), String>` as the component's `handle`. The
/// function answers through [`toolkit`]; returning without an answer makes the host fail
/// the task (`SfnWasmHost.NoResponse`, or `SfnWasmHost.HandlerError` for `Err`).
#[macro_export]
macro_rules! raw_handler {
    ($handler:expr) => {
        struct __SfnWasmHandler;

        impl $crate::bindings::Guest for __SfnWasmHandler {
            fn handle(task: $crate::Task) -> ::core::result::Result<(), ::std::string::String> {
                let handler: fn($crate::Task) -> ::core::result::Result<(), ::std::string::String> =
                    $handler;
                handler(task)
            }
        }

        $crate::bindings::__export_handler!(__SfnWasmHandler with_types_in $crate::bindings);
    };
}
