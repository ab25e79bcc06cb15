//! `greet` as built against world `sfn:activity@0.1.0`, before 0.2.0 existed (bindings
//! from `wit/v0.1`, no SDK): a handler every newer host must keep running. Its output
//! says which world answered.

// The generated export glue takes the task's fields one by one.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({ path: "wit", world: "sfn:activity/handler" });

use sfn::activity::toolkit;

struct Greet;

impl Guest for Greet {
    fn handle(task: Task) -> Result<(), String> {
        let input: serde_json::Value =
            serde_json::from_str(&task.input).map_err(|err| err.to_string())?;
        let hello = input["hello"].as_str().unwrap_or("stranger");
        let output = serde_json::json!({"greeting": format!("Hello, {hello}"), "world": "0.1.0"});
        toolkit::success(&output.to_string()).map_err(|err| format!("{err:?}"))
    }
}

export!(Greet);
