//! {{name}}: an AWS Step Functions activity handler for sfn-wasm-host.
//!
//! `greet` takes the task input as `Input` (the SDK parses it; an input that does not
//! match fails the task with `SfnWasmHost.InvalidInput`) and answers `Output` as JSON, or
//! fails the task with a `TaskFailure` whose name a state machine can `Catch`.

use serde::{Deserialize, Serialize};
use sfn_wasm_guest::{Context, TaskFailure};

/// The task input: `{"hello": "World"}`.
#[derive(Debug, Deserialize)]
pub struct Input {
    pub hello: String,
}

/// The task output: `{"greeting": "Hello, World"}`.
#[derive(Debug, PartialEq, Serialize)]
pub struct Output {
    pub greeting: String,
}

/// Greets `input.hello`; an empty name fails the task with `InvalidName`.
pub fn greet(input: Input, ctx: &Context) -> Result<Output, TaskFailure> {
    if input.hello.is_empty() {
        return Err(TaskFailure::new("InvalidName", "hello must not be empty"));
    }
    // A long handler heartbeats between steps, so that HeartbeatSeconds does not fire.
    let _ = ctx.heartbeat();
    Ok(Output {
        greeting: format!("Hello, {}", input.hello),
    })
}

sfn_wasm_guest::handler!(greet);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greets_by_name() {
        let ctx = Context::for_tests(r#"{"hello": "World"}"#);
        let output = greet(Input { hello: "World".into() }, &ctx).unwrap();
        assert_eq!(output, Output { greeting: "Hello, World".into() });
        assert_eq!(ctx.heartbeats(), 1);
    }

    #[test]
    fn an_empty_name_fails_the_task() {
        let ctx = Context::for_tests(r#"{"hello": ""}"#);
        let failure = greet(Input { hello: String::new() }, &ctx).unwrap_err();
        assert_eq!(failure.error, "InvalidName");
    }
}
