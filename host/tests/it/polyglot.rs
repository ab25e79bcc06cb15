//! Handlers written in JavaScript (ComponentizeJS) and Python (componentize-py), built by
//! `scripts/build-polyglot.sh`, through `invoke`: the same outcomes and error names as
//! the Rust scenarios. These components are 12–18 MB and take seconds to compile, so
//! they are compiled once into a shared cache and every test loads them precompiled.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{Value, json};

use crate::guests::workspace;

const LANGUAGES: [&str; 2] = ["js", "py"];

/// The cache the tests share, which `scripts/test.sh` fills with these components.
pub fn cache_dir() -> PathBuf {
    workspace().join("target/test-cache")
}

/// Builds the components (once per run) and fills the cache with them, one at a time.
pub fn component(name: &str) -> PathBuf {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        let status = Command::new(workspace().join("scripts/build-polyglot.sh"))
            .status()
            .unwrap();
        assert!(status.success(), "scripts/build-polyglot.sh failed");
        for language in LANGUAGES {
            for handler in ["greet", "scenarios"] {
                let (line, _, _) = invoke(
                    &polyglot(&format!("{handler}-{language}")),
                    r#"{"hello": "World"}"#,
                    &[],
                );
                assert_eq!(line["status"], "success", "{handler}-{language}: {line}");
            }
        }
    });
    polyglot(name)
}

fn polyglot(name: &str) -> PathBuf {
    workspace()
        .join("target/polyglot")
        .join(format!("{name}.wasm"))
}

/// Runs `invoke`: the JSON line, the exit code and stderr (the host's and guest's logs).
fn invoke(handler: &std::path::Path, input: &str, extra: &[&str]) -> (Value, i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_sfn-wasm-host"))
        .arg("invoke")
        .arg(handler)
        .args(["--input", input, "--memory-limit-mb", "256", "--cache-dir"])
        .arg(cache_dir())
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "{}: not one JSON line ({e}): {stdout} / {}",
            handler.display(),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (line, output.status.code().unwrap(), stderr)
}

fn scenario(language: &str, hello: &str, extra: &[&str]) -> Value {
    let (line, code, _) = invoke(
        &component(&format!("scenarios-{language}")),
        &json!({"hello": hello}).to_string(),
        extra,
    );
    assert_eq!(
        code,
        if line["status"] == "success" { 0 } else { 1 },
        "{line}"
    );
    line
}

#[test]
fn greet_answers_in_every_language() {
    for language in LANGUAGES {
        let (line, code, _) = invoke(
            &component(&format!("greet-{language}")),
            r#"{"hello": "X"}"#,
            &[],
        );
        assert_eq!(
            line,
            json!({"status": "success", "output": {"greeting": "Hello, X"}}),
            "{language}"
        );
        assert_eq!(code, 0);
    }
}

#[test]
fn success_heartbeat_and_failure_behave_as_in_rust() {
    for language in LANGUAGES {
        for hello in ["World", "Heartbeat"] {
            let greeting = format!("Hello, {hello}");
            assert_eq!(
                scenario(language, hello, &[]),
                json!({"status": "success", "output": {"greeting": greeting}}),
                "{language}"
            );
        }
        assert_eq!(
            scenario(language, "Failure", &[]),
            json!({"status": "failure", "error": "InvalidName", "cause": "Failure is not a valid name"}),
            "{language}"
        );
    }
}

#[test]
fn an_exception_fails_with_its_text_in_the_cause() {
    // JavaScript: the thrown text becomes `handle`'s err → HandlerError. Python: an
    // uncaught exception traps, and its traceback (on stderr) goes into the cause.
    let cases = [
        (
            "js",
            "SfnWasmHost.HandlerError",
            "Error: the Error scenario throws on purpose",
        ),
        (
            "py",
            "SfnWasmHost.Trap",
            "ValueError: the Error scenario raises on purpose",
        ),
    ];
    for (language, error, text) in cases {
        let line = scenario(language, "Error", &[]);
        assert_eq!(line["error"], error, "{language}: {line}");
        assert!(
            line["cause"].as_str().unwrap().contains(text),
            "{language}: {line}"
        );
    }
}

#[test]
fn a_second_answer_is_refused_and_an_error_result_is_a_handler_error() {
    for language in LANGUAGES {
        // The handler checks that the second answer was refused as already-responded
        // and returns an error otherwise, which the host logs after the answer.
        let (line, _, stderr) = invoke(
            &component(&format!("scenarios-{language}")),
            r#"{"hello": "Duplicate"}"#,
            &[],
        );
        assert_eq!(
            line,
            json!({"status": "success", "output": {"greeting": "Hello, Duplicate"}}),
            "{language}"
        );
        assert!(!stderr.contains("after answering"), "{language}: {stderr}");
        assert_eq!(
            scenario(language, "Refuse", &[]),
            json!({"status": "failure", "error": "SfnWasmHost.HandlerError", "cause": "refused on purpose"}),
            "{language}"
        );
    }
}

#[test]
fn an_infinite_loop_is_stopped_by_the_deadline() {
    for language in LANGUAGES {
        let line = scenario(language, "Loop", &["--timeout-seconds", "1"]);
        assert_eq!(line["error"], "SfnWasmHost.Timeout", "{language}: {line}");
    }
}
