//! The smallest useful handler: `{"hello": "X"}` → `{"greeting": "Hello, X"}`.

use serde::{Deserialize, Serialize};
use sfn_wasm_guest::{Context, TaskFailure};

#[derive(Deserialize)]
struct Input {
    hello: String,
}

#[derive(Serialize)]
struct Output {
    greeting: String,
}

fn greet(input: Input, _ctx: &Context) -> Result<Output, TaskFailure> {
    Ok(Output {
        greeting: format!("Hello, {}", input.hello),
    })
}

sfn_wasm_guest::handler!(greet);
