//! Write AWS Step Functions activity handlers for `sfn-wasm-host` in plain Rust.
//!
//! A handler is a function from a deserializable input to a serializable output:
//!
//! ```ignore
//! use serde::{Deserialize, Serialize};
//! use sfn_wasm_guest::{Context, TaskFailure};
//!
//! #[derive(Deserialize)]
//! struct Input { hello: String }
//!
//! #[derive(Serialize)]
//! struct Output { greeting: String }
//!
//! fn greet(input: Input, _ctx: &Context) -> Result<Output, TaskFailure> {
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

use std::cell::{Cell, RefCell};
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
        path: "wit",
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
/// match on) and `cause` as the details. The same concept as `TaskFailure` in the
/// JavaScript and Python SDKs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFailure {
    /// The error name, cut by the host to 256 characters.
    pub error: String,
    /// A human-readable explanation, cut by the host to 32,768 characters.
    pub cause: String,
}

/// The name this SDK had before 0.2; kept so that 0.1 handlers build unchanged.
pub type Failure = TaskFailure;

impl TaskFailure {
    /// Makes a failure with an error name and a cause.
    pub fn new(error: impl Into<String>, cause: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            cause: cause.into(),
        }
    }
}

impl fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.error, self.cause)
    }
}

impl std::error::Error for TaskFailure {}

/// The error name every SDK answers when the task input does not match what the handler
/// takes (the host answers the same name for an input that is not JSON at all).
pub const INVALID_INPUT: &str = "SfnWasmHost.InvalidInput";

/// What a typed handler can see of its task and do besides answering it.
///
/// In a component its calls go to the host. [`Context::for_tests`] makes one for unit
/// tests on the build machine's own target, with no host: heartbeats are counted,
/// checkpoints kept in memory.
pub struct Context {
    task: Task,
    host: Host,
}

/// Where a [`Context`]'s calls go.
enum Host {
    /// The host's toolkit imports (in a component).
    Toolkit,
    /// Nowhere: a unit test's stand-in.
    Test(TestHost),
}

/// What a test context records.
#[derive(Default)]
struct TestHost {
    heartbeats: Cell<u32>,
    cancelled: Cell<bool>,
    checkpoint: RefCell<Option<String>>,
}

impl Context {
    /// A context for unit tests of a handler's logic, without a host: the task has `input`
    /// (any text; the handler function is called with its parsed form by the test itself),
    /// no deadline, and made-up ARN, worker and task id. See [`Context::heartbeats`],
    /// [`Context::cancel`].
    pub fn for_tests(input: &str) -> Self {
        Self {
            task: Task {
                input: input.to_owned(),
                activity_arn: "arn:aws:states:us-east-1:000000000000:activity:test".to_owned(),
                worker_name: "test:0".to_owned(),
                task_id: "test".to_owned(),
                deadline_ms: None,
            },
            host: Host::Test(TestHost::default()),
        }
    }

    /// How many heartbeats the handler sent through a [`Context::for_tests`] context
    /// (always 0 in a component, where they go to the host).
    pub fn heartbeats(&self) -> u32 {
        match &self.host {
            Host::Toolkit => 0,
            Host::Test(test) => test.heartbeats.get(),
        }
    }

    /// Makes [`Context::cancelled`] true on a [`Context::for_tests`] context, as a host
    /// shutting down would (does nothing in a component).
    pub fn cancel(&self) {
        if let Host::Test(test) = &self.host {
            test.cancelled.set(true);
        }
    }

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
        match &self.host {
            Host::Toolkit => toolkit::heartbeat(),
            Host::Test(test) => {
                test.heartbeats.set(test.heartbeats.get() + 1);
                Ok(())
            }
        }
    }

    /// True once the host wants the handler to stop early (it is shutting down). Long
    /// handlers should check it between steps and answer promptly when it turns true.
    pub fn cancelled(&self) -> bool {
        match &self.host {
            Host::Toolkit => toolkit::cancelled(),
            Host::Test(test) => test.cancelled.get(),
        }
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
        match &self.host {
            Host::Toolkit => toolkit::checkpoint(data),
            Host::Test(test) => {
                *test.checkpoint.borrow_mut() = Some(data.to_owned());
                Ok(())
            }
        }
    }

    /// The last checkpoint saved for this task's work, by this attempt or an earlier one.
    pub fn last_checkpoint(&self) -> Option<String> {
        match &self.host {
            Host::Toolkit => toolkit::last_checkpoint(),
            Host::Test(test) => test.checkpoint.borrow().clone(),
        }
    }
}

/// Runs a typed handler for one task and answers the task with its result. This is what
/// [`handler!`] expands to; call it yourself only from a [`raw_handler!`] function.
///
/// An input that does not deserialize into `I` is not passed to `f`: the task fails with
/// [`INVALID_INPUT`] (`SfnWasmHost.InvalidInput`) and serde's message as the cause.
///
/// # Errors
/// The text `handle` returns when no answer could be sent.
pub fn run<I, O, F>(task: Task, f: F) -> Result<(), String>
where
    I: DeserializeOwned,
    O: Serialize,
    F: FnOnce(I, &Context) -> Result<O, TaskFailure>,
{
    let input: I = match serde_json::from_str(&task.input) {
        Ok(input) => input,
        Err(err) => {
            let cause = format!("the task input does not match the handler's input: {err}");
            return toolkit::failure(INVALID_INPUT, &cause)
                .map_err(|err| format!("the answer was not accepted: {err}"));
        }
    };
    let ctx = Context {
        task,
        host: Host::Toolkit,
    };
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
/// The function has the shape `fn(I, &Context) -> Result<O, TaskFailure>` where `I:
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
