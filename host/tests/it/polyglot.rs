//! Handlers written in JavaScript (ComponentizeJS) and Python (componentize-py), built by
//! `scripts/build-polyglot.sh`, through `invoke`: the same outcomes and error names as
//! the Rust scenarios. These components are 12–18 MB and take seconds to compile, so
//! they are compiled once into a shared cache and every test loads them precompiled
//! (`support::polyglot`).

use serde_json::{Value, json};

use crate::support::invoke::Invoked;
use crate::support::polyglot::{LANGUAGES, component, invoke};

fn scenario(language: &str, hello: &str, extra: &[&str]) -> Value {
    let Invoked { line, code, .. } = invoke(
        &component(&format!("scenarios-{language}")),
        &json!({"hello": hello}).to_string(),
    )
    .args(extra)
    .run();
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
        let Invoked { line, code, .. } = invoke(
            &component(&format!("greet-{language}")),
            r#"{"hello": "X"}"#,
        )
        .run();
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
        let Invoked { line, stderr, .. } = invoke(
            &component(&format!("scenarios-{language}")),
            r#"{"hello": "Duplicate"}"#,
        )
        .run();
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
