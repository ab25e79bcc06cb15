//! A large handler for benchmarks: thousands of generated functions, all reachable.

use sfn_wasm_guest::{Task, toolkit};

include!(concat!(env!("OUT_DIR"), "/generated.rs"));

fn bulky(task: Task) -> Result<(), String> {
    let seed = task.input.len() as u64;
    let sum = FUNCTIONS.iter().fold(seed, |acc, f| acc ^ f(acc));
    toolkit::success(&format!(r#"{{"sum":{sum}}}"#)).map_err(|e| e.to_string())
}

sfn_wasm_guest::raw_handler!(bulky);
