//! Tries what the grants allow, one operation per task, and answers with what it saw:
//! - `{"op": "env"}` → the whole environment, as an object;
//! - `{"op": "read", "path": P}` → `{"text": ...}`;
//! - `{"op": "write", "path": P, "text": T}` → `{"written": n}`;
//! - `{"op": "list", "path": P}` → `{"names": [...]}`;
//! - `{"op": "fetch", "url": U, "times": N}` → `{"statuses": [...], "bytes": n}`, GET N times;
//! - `{"op": "request", "method": M, "url": U, "headers": {..}, "body": B}` →
//!   `{"status": n, "body": "..."}`: one request with the headers the guest chooses.
//!
//! Every error is the failure `Probe.Io` (files) or the `wasi:http` error name, with the
//! message as the cause.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};
use sfn_wasm_guest::{Context, TaskFailure, http};

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Probe {
    Env,
    Read {
        path: String,
    },
    Write {
        path: String,
        text: String,
    },
    List {
        path: String,
    },
    Fetch {
        url: String,
        times: Option<u32>,
    },
    Request {
        method: String,
        url: String,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        #[serde(default)]
        body: String,
    },
}

fn io(err: std::io::Error) -> TaskFailure {
    TaskFailure::new("Probe.Io", format!("{:?}: {err}", err.kind()))
}

fn probe(input: Probe, _ctx: &Context) -> Result<Value, TaskFailure> {
    Ok(match input {
        Probe::Env => json!(std::env::vars().collect::<BTreeMap<_, _>>()),
        Probe::Read { path } => json!({"text": std::fs::read_to_string(path).map_err(io)?}),
        Probe::Write { path, text } => {
            std::fs::write(path, &text).map_err(io)?;
            json!({"written": text.len()})
        }
        Probe::List { path } => {
            let mut names = Vec::new();
            for entry in std::fs::read_dir(path).map_err(io)? {
                names.push(
                    entry
                        .map_err(io)?
                        .file_name()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
            names.sort();
            json!({"names": names})
        }
        Probe::Fetch { url, times } => {
            let mut statuses = Vec::new();
            let mut bytes = 0;
            for _ in 0..times.unwrap_or(1) {
                let response = http::get(&url)?;
                statuses.push(response.status().as_u16());
                bytes += response.body().len();
            }
            json!({"statuses": statuses, "bytes": bytes})
        }
        Probe::Request {
            method,
            url,
            headers,
            body,
        } => {
            let mut request = http::Request::builder().method(method.as_str()).uri(&url);
            for (name, value) in &headers {
                request = request.header(name, value);
            }
            let request = request
                .body(body.into_bytes())
                .map_err(|err| TaskFailure::new("Probe.Request", err.to_string()))?;
            let response = http::send(request)?;
            json!({
                "status": response.status().as_u16(),
                "body": String::from_utf8_lossy(response.body()),
            })
        }
    })
}

sfn_wasm_guest::handler!(probe);
