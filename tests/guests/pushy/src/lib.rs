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

use std::time::{Duration, Instant, SystemTime};

use sfn_wasm_guest::{Task, toolkit};

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

fn pushy(task: Task) -> Result<(), String> {
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
        "clock" => toolkit::success(&format!("{{\"started_unix_ns\":{}}}", unix_ns()))
            .map_err(|e| e.to_string()),
        other => toolkit::failure("UnknownPush", &format!("no push named {other:?}"))
            .map_err(|e| e.to_string()),
    }
}

sfn_wasm_guest::raw_handler!(pushy);
