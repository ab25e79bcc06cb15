//! `sfn-wasm-host invoke` end to end: the binary, real components, the printed JSON line
//! and the exit code.

use std::path::Path;

use serde_json::{Value, json};

use crate::support::guests::guest;
use crate::support::invoke::{Invoked, invoke};

/// `invoke HANDLER --input INPUT EXTRA...`: one JSON line on stdout.
fn run(handler: &Path, input: &str, extra: &[&str]) -> Invoked {
    invoke(handler).input(input).args(extra).run()
}

fn scenario(hello: &str, extra: &[&str]) -> Invoked {
    run(
        &guest("scenarios"),
        &json!({"hello": hello, "ms": 50}).to_string(),
        extra,
    )
}

fn assert_host_failure(result: Invoked, name: &str) -> String {
    let Invoked {
        line, code, stderr, ..
    } = result;
    assert_eq!(line["status"], "failure", "{line} / stderr: {stderr}");
    assert_eq!(line["error"], name, "{line} / stderr: {stderr}");
    assert_eq!(code, 1);
    line["cause"]
        .as_str()
        .expect("cause is a string")
        .to_owned()
}

#[test]
fn greet_answers_with_a_greeting() {
    let Invoked { line, code, .. } = run(&guest("greet"), r#"{"hello": "X"}"#, &[]);
    assert_eq!(
        line,
        json!({"status": "success", "output": {"greeting": "Hello, X"}})
    );
    assert_eq!(code, 0);
}

#[test]
fn input_can_come_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("input.json");
    std::fs::write(&file, r#"{"hello": "File"}"#).unwrap();
    let Invoked { line, code, .. } = invoke(guest("greet")).input_file(&file).run();
    assert_eq!(code, 0);
    assert_eq!(line["output"]["greeting"], "Hello, File");
}

#[test]
fn world_and_heartbeat_succeed() {
    for hello in ["World", "Heartbeat"] {
        let Invoked { line, code, .. } = scenario(hello, &[]);
        let greeting = format!("Hello, {hello}");
        assert_eq!(
            line,
            json!({"status": "success", "output": {"greeting": greeting}})
        );
        assert_eq!(code, 0);
    }
}

#[test]
fn failure_is_the_guests_own() {
    let Invoked { line, code, .. } = scenario("Failure", &[]);
    assert_eq!(
        line,
        json!({"status": "failure", "error": "InvalidName", "cause": "Failure is not a valid name"})
    );
    assert_eq!(code, 1);
}

#[test]
fn a_panic_is_a_trap_with_the_panic_message() {
    let cause = assert_host_failure(scenario("Error", &[]), "SfnWasmHost.Trap");
    assert!(
        cause.contains("the Error scenario panics on purpose"),
        "{cause}"
    );
}

/// What reaches Step Functions is composed on purpose: with the host's own backtraces
/// turned on, a trap's cause still carries the guest's message and frames only.
#[test]
fn a_traps_cause_carries_no_host_backtrace() {
    let Invoked { line, .. } = invoke(guest("scenarios"))
        .input(r#"{"hello": "Error", "ms": 50}"#)
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LIB_BACKTRACE", "1")
        .run();
    assert_eq!(line["error"], "SfnWasmHost.Trap", "{line}");
    let cause = line["cause"].as_str().expect("a cause");
    assert!(
        cause.contains("the Error scenario panics on purpose"),
        "{cause}"
    );
    for host in [
        "sfn_wasm_host::",
        "tokio::",
        "Stack backtrace",
        "stack backtrace",
        "/rustc/",
    ] {
        assert!(!cause.contains(host), "{host} in the cause: {cause}");
    }
}

#[test]
fn forgetting_to_answer_is_no_response() {
    assert_host_failure(scenario("Forgot", &[]), "SfnWasmHost.NoResponse");
}

#[test]
fn the_first_of_two_answers_stands() {
    let Invoked {
        line, code, stderr, ..
    } = scenario("Duplicate", &[]);
    assert_eq!(
        line,
        json!({"status": "success", "output": {"greeting": "Hello, Duplicate"}})
    );
    assert_eq!(code, 0);
    // The guest saw `already-responded` for its second answer (else it returns an error,
    // which the host logs after the answer).
    assert!(!stderr.contains("after answering"), "{stderr}");
}

#[test]
fn a_loop_is_stopped_by_its_deadline() {
    let cause = assert_host_failure(
        scenario("Loop", &["--timeout-seconds", "0.5"]),
        "SfnWasmHost.Timeout",
    );
    assert!(cause.contains("500 ms"), "{cause}");
}

#[test]
fn a_sleep_past_the_deadline_is_a_timeout() {
    let input = json!({"hello": "Sleep", "ms": 60_000}).to_string();
    let result = run(&guest("scenarios"), &input, &["--timeout-seconds", "0.3"]);
    assert_host_failure(result, "SfnWasmHost.Timeout");
}

#[test]
fn a_sleep_within_the_deadline_succeeds() {
    let Invoked { line, code, .. } = scenario("Sleep", &[]);
    assert_eq!(
        line,
        json!({"status": "success", "output": {"slept_ms": 50}})
    );
    assert_eq!(code, 0);
}

#[test]
fn a_gibibyte_allocation_is_out_of_memory() {
    let cause = assert_host_failure(
        scenario("Hog", &["--memory-limit-mb", "64"]),
        "SfnWasmHost.OutOfMemory",
    );
    assert!(cause.contains("cap is 64 MiB"), "{cause}");
}

#[test]
fn input_that_is_not_json_never_reaches_the_guest() {
    let cause = assert_host_failure(
        run(&guest("scenarios"), "{not json", &[]),
        "SfnWasmHost.InvalidInput",
    );
    assert!(cause.contains("not JSON"), "{cause}");
}

#[test]
fn an_input_the_handler_does_not_take_is_invalid_input_naming_why() {
    // JSON, so the host calls the guest; the SDK answers for the type mismatch (the
    // `HandlerError` path, `handle` returning `err`, is the polyglot `Refuse` scenario's).
    let cause = assert_host_failure(
        run(&guest("greet"), r#"{"bonjour": "X"}"#, &[]),
        "SfnWasmHost.InvalidInput",
    );
    assert!(
        cause.starts_with(
            "the task input does not match the handler's input: missing field `hello`"
        ),
        "{cause}"
    );
}

fn assert_usage_error(handler: &Path, expected: &[&str]) {
    // A usage error: stdout may be (and must be) empty.
    let Invoked {
        line, code, stderr, ..
    } = invoke(handler).input("{}").may_print_nothing().run();
    assert_eq!(code, 2, "stderr: {stderr}");
    assert_eq!(line, Value::Null, "nothing on stdout for a usage error");
    for needle in expected {
        assert!(stderr.contains(needle), "{needle:?} not in {stderr:?}");
    }
}

#[test]
fn a_missing_handler_is_a_usage_error_naming_the_file() {
    assert_usage_error(
        Path::new("/nonexistent/handler.wasm"),
        &["/nonexistent/handler.wasm", "cannot read"],
    );
}

#[test]
fn a_file_that_is_not_wasm_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("text.wasm");
    std::fs::write(&path, "hello").unwrap();
    assert_usage_error(
        &path,
        &["text.wasm", "not a WebAssembly component", "wasm32-wasip2"],
    );
}

#[test]
fn a_core_module_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("core.wasm");
    // The smallest core module: magic number and version 1. Malformed input is the one
    // place a hand-written module is right.
    std::fs::write(&path, b"\0asm\x01\0\0\0").unwrap();
    assert_usage_error(&path, &["core.wasm", "core WebAssembly module"]);
}

#[test]
fn a_truncated_component_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("truncated.wasm");
    let bytes = std::fs::read(guest("greet")).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    assert_usage_error(
        &path,
        &["truncated.wasm", "not a valid WebAssembly component"],
    );
}

#[test]
fn a_component_of_another_world_is_a_usage_error() {
    assert_usage_error(
        &guest("other_world"),
        &[
            "other_world.wasm",
            "does not implement the sfn:activity/handler world",
        ],
    );
}

/// Issue 34, class 2: `invoke --dir` may not grant the compile cache or the handler's
/// folder (a guest writing there could plant what the host loads): exit 2, naming it.
#[test]
fn a_dir_grant_over_the_cache_or_the_handlers_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    let handler = dir.path().join("handlers/greet.wasm");
    std::fs::create_dir(handler.parent().unwrap()).unwrap();
    std::fs::copy(guest("greet"), &handler).unwrap();
    let cache_flag = cache.display().to_string();
    for (grant, named) in [
        (format!("{}:/cache:rw", cache.display()), "--cache-dir"),
        (format!("{}:/all", dir.path().display()), "--cache-dir"),
        (
            format!("{}:/h", handler.parent().unwrap().display()),
            "the handler's folder",
        ),
    ] {
        // Refused before it runs: stdout may be empty.
        let Invoked {
            line, code, stderr, ..
        } = invoke(&handler)
            .input(r#"{"hello": "X"}"#)
            .args(["--cache-dir", &cache_flag, "--dir", &grant])
            .may_print_nothing()
            .run();
        assert_eq!(code, 2, "{grant}: {line} / {stderr}");
        assert!(stderr.contains(named), "{grant}: {stderr}");
    }
}
