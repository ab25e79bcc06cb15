//! One handler, many behaviours: the test cases of the TypeScript library this host
//! descends from, plus the ones a sandbox needs (runaway loops, memory hogs, slow tasks).
//!
//! The input `{"hello": NAME}` picks the scenario; `Sleep` and `Deadline` also read
//! `{"ms": N}`, `Work` reads `{"n": N}`, `Allocate` reads `{"mb": N}`.
//!
//! | `hello`     | behaviour                                                     |
//! |-------------|---------------------------------------------------------------|
//! | `World`     | `success({"greeting": "Hello, World"})`                       |
//! | `Heartbeat` | `heartbeat()`, then success                                   |
//! | `Failure`   | `failure("InvalidName", ...)`                                 |
//! | `Error`     | panics (the host answers `SfnWasmHost.Trap`)                  |
//! | `Forgot`    | returns without answering (`SfnWasmHost.NoResponse`)          |
//! | `Duplicate` | success, then failure (the second gets `already-responded`)   |
//! | `Loop`      | `loop {}` (stopped by the deadline or a shutdown)              |
//! | `Hog`       | allocates 1 GiB (`SfnWasmHost.OutOfMemory` under the cap)     |
//! | `Sleep`     | sleeps `ms` milliseconds via WASI clocks, then success        |
//! | `Patient`   | waits until `cancelled()` turns true, then answers by itself  |
//! | `Deadline`  | sleeps until `ms` milliseconds before its deadline, then success |
//! | `Left`      | `success({"deadline_ms": N})`: the `deadline-ms` it was given    |
//! | `Work`      | computes `n` rounds of a xorshift loop (a fixed amount of CPU), then success |
//! | `Allocate`  | allocates and touches `mb` MiB, then success                  |
//! | `Count`     | counts to `n` (10), a `checkpoint` each step, from `last-checkpoint`; a first attempt (no checkpoint) traps at 5 |

use std::time::Duration;

use serde::Deserialize;
use sfn_wasm_guest::{Task, toolkit};

#[derive(Deserialize)]
struct Input {
    hello: String,
    #[serde(default)]
    ms: u64,
    #[serde(default)]
    mb: usize,
    #[serde(default)]
    n: u64,
}

fn scenarios(task: Task) -> Result<(), String> {
    let input: Input = serde_json::from_str(&task.input).map_err(|err| err.to_string())?;
    let greeting = format!(r#"{{"greeting":"Hello, {}"}}"#, input.hello);
    match input.hello.as_str() {
        "World" => toolkit::success(&greeting).map_err(|e| e.to_string()),
        "Heartbeat" => {
            toolkit::heartbeat().map_err(|e| e.to_string())?;
            toolkit::success(&greeting).map_err(|e| e.to_string())
        }
        "Failure" => toolkit::failure("InvalidName", "Failure is not a valid name")
            .map_err(|e| e.to_string()),
        "Error" => panic!("the Error scenario panics on purpose"),
        "Forgot" => Ok(()),
        "Duplicate" => {
            toolkit::success(&greeting).map_err(|e| e.to_string())?;
            match toolkit::failure("Duplicate", "a second answer") {
                Err(sfn_wasm_guest::ToolkitError::AlreadyResponded) => Ok(()),
                other => Err(format!("expected already-responded, got {other:?}")),
            }
        }
        "Loop" =>
        {
            #[allow(clippy::empty_loop)]
            loop {}
        }
        "Hog" => {
            let hog: Vec<u8> = vec![1; 1 << 30];
            std::hint::black_box(&hog);
            toolkit::success(r#"{"allocated":1073741824}"#).map_err(|e| e.to_string())
        }
        "Sleep" => {
            std::thread::sleep(Duration::from_millis(input.ms));
            toolkit::success(&format!(r#"{{"slept_ms":{}}}"#, input.ms)).map_err(|e| e.to_string())
        }
        "Deadline" => {
            let left = task.deadline_ms.unwrap_or(0).saturating_sub(input.ms);
            std::thread::sleep(Duration::from_millis(left));
            toolkit::success(&greeting).map_err(|e| e.to_string())
        }
        "Left" => match task.deadline_ms {
            Some(left) => toolkit::success(&format!(r#"{{"deadline_ms":{left}}}"#)),
            None => toolkit::success(r#"{"deadline_ms":null}"#),
        }
        .map_err(|e| e.to_string()),
        "Patient" => {
            while !toolkit::cancelled() {
                std::thread::sleep(Duration::from_millis(10));
            }
            toolkit::success(r#"{"stopped":"cancelled"}"#).map_err(|e| e.to_string())
        }
        "Work" => {
            // A fixed amount of work, not a wall-clock spin: its CPU time is the same
            // however busy the machine is, which is what a CPU-accounting test needs.
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
            for _ in 0..input.n {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x = std::hint::black_box(x);
            }
            toolkit::success(&format!(r#"{{"rounds":{},"x":{x}}}"#, input.n))
                .map_err(|e| e.to_string())
        }
        "Allocate" => {
            let block: Vec<u8> = vec![1; input.mb << 20];
            std::hint::black_box(&block);
            toolkit::success(&format!(r#"{{"allocated_mb":{}}}"#, input.mb))
                .map_err(|e| e.to_string())
        }
        "Count" => {
            let to = if input.n == 0 { 10 } else { input.n };
            let resumed_at: u64 = match toolkit::last_checkpoint() {
                Some(saved) => saved
                    .parse()
                    .map_err(|_| format!("a checkpoint {saved:?}"))?,
                None => 0,
            };
            for step in resumed_at..to {
                // A first attempt dies half way, as a crash would; the retry goes on.
                if resumed_at == 0 && step == 5 {
                    panic!("the Count scenario traps at 5 on its first attempt");
                }
                toolkit::checkpoint(&(step + 1).to_string()).map_err(|e| e.to_string())?;
            }
            toolkit::success(&format!(r#"{{"count":{to},"resumed_at":{resumed_at}}}"#))
                .map_err(|e| e.to_string())
        }
        other => toolkit::failure("UnknownScenario", &format!("no scenario named {other:?}"))
            .map_err(|e| e.to_string()),
    }
}

sfn_wasm_guest::raw_handler!(scenarios);
