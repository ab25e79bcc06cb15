//! Calls an HTTP API and answers with what it got: `{"url": "https://..."}` →
//! `{"status": 200, "body": "..."}`. A refused or failed request fails the task with the
//! `wasi:http` error the handler saw (`HTTP-request-denied`, `connection-timeout`, ...).
//! The host sends it only where the activity's `allowed_outbound_hosts` allows.

use serde::{Deserialize, Serialize};
use sfn_wasm_guest::{Context, TaskFailure, http};

#[derive(Deserialize)]
struct Input {
    url: String,
}

#[derive(Serialize)]
struct Output {
    status: u16,
    body: String,
}

fn fetch(input: Input, _ctx: &Context) -> Result<Output, TaskFailure> {
    let response = http::get(&input.url)?;
    Ok(Output {
        status: response.status().as_u16(),
        body: String::from_utf8_lossy(response.body()).into_owned(),
    })
}

sfn_wasm_guest::handler!(fetch);
