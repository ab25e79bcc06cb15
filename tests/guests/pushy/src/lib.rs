//! A guest that pushes on the host's bounds, one way per input (`{"push": NAME}`):
//!
//! | `push`      | what it does                                                      |
//! |-------------|-------------------------------------------------------------------|
//! | `error`     | returns `err` with a 16 MiB message                               |
//! | `resources` | opens pollables without ever closing them, 100,000 of them        |
//! | `random`    | asks `get-random-bytes` for 1 GiB in one call                     |
//! | `chatty`    | prints 20,000 lines of 1 KiB to stdout and stderr, then succeeds  |
//! | `spin`      | burns CPU for `ms` milliseconds (reading only the clock), then succeeds; |
//! |             | with `"tell": ID`, first prints `started ID UNIX_NS` to stdout     |
//! | `clock`     | succeeds at once with `{"started_unix_ns": N}`, the wall clock     |
//! | `bodies`    | opens `count` POSTs to `url`, writes `mib` MiB into each body and  |
//! |             | never finishes one; holds them `hold_ms`, then succeeds with the   |
//! |             | errors it saw by name                                              |
//! | `requests`  | sends `count` GETs to `url` one after the other (a denied host, a  |
//! |             | long name); succeeds with the results by name                      |
//! | `inflight`  | sends `count` GETs to `url` and keeps every response unread (for   |
//! |             | `hold_ms` more); succeeds with the results by name                 |
//! | `answers`   | succeeds, then calls `success` `count` times more                  |
//! | `paced`     | sends `count` requests (`method`: GET, PUT or POST; an empty body;   |
//! |             | an `Idempotency-Key` of `key`, if given) to `url`, `gap_ms` apart,   |
//! |             | reading each response to its end; succeeds with the results by name |

use std::time::{Duration, Instant, SystemTime};

use std::collections::BTreeMap;

use sfn_wasm_guest::{Task, toolkit};
use wasip2::http::outgoing_handler::{self, FutureIncomingResponse};
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, IncomingResponse, Method, OutgoingBody, OutgoingRequest,
    Scheme,
};
use wasip2::io::streams::StreamError;

fn field<'a>(input: &'a str, name: &str) -> Option<&'a str> {
    let start = input.find(&format!("\"{name}\""))? + name.len() + 2;
    let rest = input[start..].trim_start().strip_prefix(':')?.trim_start();
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim().trim_matches('"'))
}

/// The wall clock, in nanoseconds since the Unix epoch (wasi:clocks, the host's clock).
fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos())
}

/// A request to `url` (`scheme://authority/path`) with `method`, a `content-type` and
/// the `extra` headers, handed to the host; its body, not finished.
fn start(
    method: Method,
    url: &str,
    extra: &[(&str, &str)],
) -> Result<(FutureIncomingResponse, OutgoingBody), ErrorCode> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("https", url));
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let mut list = vec![(
        "content-type".to_owned(),
        b"application/x-amz-json-1.0".to_vec(),
    )];
    for (name, value) in extra {
        list.push(((*name).to_owned(), value.as_bytes().to_vec()));
    }
    let headers = Fields::from_list(&list).map_err(|_| ErrorCode::HttpRequestHeaderSize(None))?;
    let request = OutgoingRequest::new(headers);
    let _ = request.set_method(&method);
    let _ = request.set_scheme(Some(&match scheme {
        "http" => Scheme::Http,
        _ => Scheme::Https,
    }));
    let _ = request.set_authority(Some(authority));
    let _ = request.set_path_with_query(Some(path));
    let body = request
        .body()
        .map_err(|()| ErrorCode::InternalError(None))?;
    let future = outgoing_handler::handle(request, None)?;
    Ok((future, body))
}

/// The name of what became of a request (`status 200`, or its error code's), and its
/// response, unread.
fn outcome(future: &FutureIncomingResponse) -> (String, Option<IncomingResponse>) {
    future.subscribe().block();
    match future.get() {
        Some(Ok(Ok(response))) => (format!("status {}", response.status()), Some(response)),
        Some(Ok(Err(code))) => (name(&code), None),
        _ => ("no response".into(), None),
    }
}

/// Reads `response`'s body to its end (so that the host may keep its connection); the
/// name of the error code when the read fails.
fn read_to_end(response: IncomingResponse) -> Result<(), String> {
    let body = response.consume().map_err(|()| "no body".to_owned())?;
    {
        let stream = body.stream().map_err(|()| "no body stream".to_owned())?;
        loop {
            match stream.blocking_read(64 << 10) {
                Ok(_) => {}
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(err)) => {
                    return Err(wasip2::http::types::http_error_code(&err)
                        .map_or_else(|| "body error".to_owned(), |code| name(&code)));
                }
            }
        }
    }
    drop(IncomingBody::finish(body));
    Ok(())
}

fn name(code: &ErrorCode) -> String {
    let debug = format!("{code:?}");
    let debug = debug.strip_prefix("ErrorCode::").unwrap_or(&debug);
    debug
        .split(['(', ' ', '{'])
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn tally(counts: &BTreeMap<String, u32>) -> String {
    let fields: Vec<String> = counts
        .iter()
        .map(|(name, n)| format!("\"{name}\":{n}"))
        .collect();
    format!("{{{}}}", fields.join(","))
}

fn pushy(task: Task) -> Result<(), String> {
    let number = |name: &str, default: u64| {
        field(&task.input, name)
            .and_then(|n| n.parse().ok())
            .unwrap_or(default)
    };
    let url = field(&task.input, "url")
        .unwrap_or("https://sqs.us-east-1.amazonaws.com/")
        .to_owned();
    let ok = |what: &str| {
        toolkit::success(&format!("{{\"survived\":\"{what}\"}}")).map_err(|e| e.to_string())
    };
    match field(&task.input, "push").unwrap_or_default() {
        "error" => Err("e".repeat(16 << 20)),
        "resources" => {
            for _ in 0..100_000 {
                std::mem::forget(wasip2::clocks::monotonic_clock::subscribe_duration(1));
            }
            ok("resources")
        }
        "random" => {
            let bytes = wasip2::random::random::get_random_bytes(1 << 30);
            std::hint::black_box(&bytes);
            ok("random")
        }
        "chatty" => {
            let line = "x".repeat(1024);
            for i in 0..20_000 {
                println!("{i} {line}");
                eprintln!("{i} {line}");
            }
            ok("chatty")
        }
        "spin" => {
            let ms = field(&task.input, "ms")
                .and_then(|ms| ms.parse().ok())
                .unwrap_or(1000);
            if let Some(id) = field(&task.input, "tell") {
                println!("started {id} {}", unix_ns());
            }
            let until = Instant::now() + Duration::from_millis(ms);
            let mut n = 0u64;
            while Instant::now() < until {
                n = std::hint::black_box(n.wrapping_mul(31).wrapping_add(7));
            }
            ok("spin")
        }
        "bodies" => {
            let chunk = vec![b'x'; 4096];
            let mut counts = BTreeMap::new();
            let mut kept = Vec::new();
            for _ in 0..number("count", 100) {
                match start(Method::Post, &url, &[]) {
                    Ok((future, body)) => {
                        let stream = body.write().map_err(|()| "the body stream".to_owned())?;
                        let mut written = 0u64;
                        for _ in 0..number("mib", 16) * 256 {
                            if stream.blocking_write_and_flush(&chunk).is_err() {
                                break;
                            }
                            written += chunk.len() as u64;
                        }
                        *counts
                            .entry(if written == number("mib", 16) << 20 {
                                "written".to_owned()
                            } else {
                                "cut".to_owned()
                            })
                            .or_insert(0) += 1;
                        // Never finished: the host holds (or drains) what it got.
                        kept.push((future, stream, body));
                    }
                    Err(code) => *counts.entry(name(&code)).or_insert(0) += 1,
                }
            }
            std::thread::sleep(Duration::from_millis(number("hold_ms", 0)));
            let answer = format!("{{\"bodies\":{}}}", tally(&counts));
            toolkit::success(&answer).map_err(|e| e.to_string())
        }
        "requests" | "inflight" => {
            let keep = field(&task.input, "push") == Some("inflight");
            let mut counts = BTreeMap::new();
            let mut kept = Vec::new();
            for _ in 0..number("count", 100) {
                let result = match start(Method::Get, &url, &[]) {
                    Ok((future, body)) => {
                        let _ = OutgoingBody::finish(body, None);
                        let (result, response) = outcome(&future);
                        if keep {
                            kept.push((future, response));
                        }
                        result
                    }
                    Err(code) => name(&code),
                };
                *counts.entry(result).or_insert(0) += 1;
            }
            std::thread::sleep(Duration::from_millis(number("hold_ms", 0)));
            let answer = format!("{{\"results\":{}}}", tally(&counts));
            toolkit::success(&answer).map_err(|e| e.to_string())
        }
        "paced" => {
            let method = match field(&task.input, "method").unwrap_or("GET") {
                "POST" => Method::Post,
                "PUT" => Method::Put,
                _ => Method::Get,
            };
            let extra: Vec<(&str, &str)> = field(&task.input, "key")
                .map(|key| ("idempotency-key", key))
                .into_iter()
                .collect();
            let gap = Duration::from_millis(number("gap_ms", 1000));
            let mut counts = BTreeMap::new();
            for i in 0..number("count", 12) {
                if i > 0 {
                    std::thread::sleep(gap);
                }
                let result = match start(method.clone(), &url, &extra) {
                    Ok((future, body)) => {
                        let _ = OutgoingBody::finish(body, None);
                        match outcome(&future) {
                            (result, Some(response)) => {
                                read_to_end(response).map_or_else(|code| code, |()| result)
                            }
                            (result, None) => result,
                        }
                    }
                    Err(code) => name(&code),
                };
                *counts.entry(result).or_insert(0) += 1;
            }
            let answer = format!("{{\"results\":{}}}", tally(&counts));
            toolkit::success(&answer).map_err(|e| e.to_string())
        }
        "answers" => {
            ok("answers")?;
            for _ in 0..number("count", 100_000) {
                let _ = toolkit::success("{}");
            }
            Ok(())
        }
        "clock" => toolkit::success(&format!("{{\"started_unix_ns\":{}}}", unix_ns()))
            .map_err(|e| e.to_string()),
        other => toolkit::failure("UnknownPush", &format!("no push named {other:?}"))
            .map_err(|e| e.to_string()),
    }
}

sfn_wasm_guest::raw_handler!(pushy);
