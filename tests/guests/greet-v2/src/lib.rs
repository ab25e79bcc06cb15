//! A second version of `greet`, for hot-swap tests: another greeting, and it says which
//! version answered.

use serde::{Deserialize, Serialize};
use sfn_wasm_guest::{Context, TaskFailure};

#[derive(Deserialize)]
struct Input {
    hello: String,
}

#[derive(Serialize)]
struct Output {
    greeting: String,
    version: u32,
}

fn greet(input: Input, _ctx: &Context) -> Result<Output, TaskFailure> {
    Ok(Output {
        greeting: format!("Hi, {}", input.hello),
        version: 2,
    })
}

sfn_wasm_guest::handler!(greet);
