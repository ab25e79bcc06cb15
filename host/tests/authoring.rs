//! Writing a handler outside this repository, as a new user would. For each language,
//! from an empty folder outside the repository: `sfn-wasm-host new` with no flags (the
//! project gets the SDK the binary carries), the project's own build command, its own
//! test, `invoke` with its sample input, and one execution served through LocalStack with
//! the generated config and state machine. For JavaScript and Python, a team's first day
//! besides: a package of the ecosystem's (`npm install ms`, `pip install humanize`) and
//! HTTP through the SDK, with tests that stub it, then `scripts/dev.sh` from the project's
//! own folder. Then the SDKs themselves: their own tests, their packages (`cargo package`,
//! `npm pack`, a wheel), and the WIT they carry. And `new js --aws`: the AWS SDK for
//! JavaScript v3 in a handler, signed by the host, against LocalStack.
//!
//! A test binary of its own: the builds take the machine's cores for a minute, which
//! must not run beside the timing-sensitive tests of `it`. Builds run one at a time.

#[allow(dead_code)] // shared with the `it` binary, which uses all of it
#[path = "it/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_sfn::types::ExecutionStatus;
use serde_json::{Value, json};

use support::guests::workspace;
use support::{emulator, served};

/// One build at a time: the machine has two cores.
static BUILDS: Mutex<()> = Mutex::new(());

/// PATH with the pinned Node.js and npm (`scripts/build-polyglot.sh` installs them in
/// `.venv/polyglot`) first: what a user has on their own machine.
fn path() -> String {
    let tools = workspace().join(".venv/polyglot/bin");
    assert!(
        tools.join("npm").exists(),
        "{} has no npm: run scripts/test.sh, which installs the polyglot tools",
        tools.display()
    );
    format!(
        "{}:{}",
        tools.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Runs `program args` in `dir`, asserts it succeeded, and says how long it took.
fn run(dir: &Path, program: &str, args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("PATH", path())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let took = started.elapsed();
    assert!(
        output.status.success(),
        "`{program} {}` in {} failed ({}):\n{}\n{}",
        args.join(" "),
        dir.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output, took)
}

fn host() -> &'static str {
    env!("CARGO_BIN_EXE_sfn-wasm-host")
}

/// `sfn-wasm-host new LANGUAGE NAME` (no flags) in a fresh folder outside the repository:
/// the temporary folder and the project inside it, which holds the SDK the binary carries.
fn new_project(language: &str) -> (tempfile::TempDir, PathBuf, String) {
    new_project_with(language, &[])
}

/// [`new_project`] with `flags` after the name (`--aws`).
fn new_project_with(language: &str, flags: &[&str]) -> (tempfile::TempDir, PathBuf, String) {
    // Unique: LocalStack keeps an activity's stale tasks.
    let name = format!("greet-{language}-{:08x}", fastrand::u32(..));
    let outside = tempfile::tempdir().unwrap();
    assert!(!outside.path().starts_with(workspace()));
    let mut args = vec!["new", language, &name];
    args.extend_from_slice(flags);
    let (output, _) = run(outside.path(), host(), &args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("config.toml"), "{stdout}");
    // The SDKs are not published yet: it says so, and where the copy it wrote is.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("warning: sfn-wasm-guest 0.2.0 is not on")
            && stderr.contains("vendor/sfn-wasm-guest/"),
        "{stderr}"
    );
    let project = outside.path().join(&name);
    for file in [
        "input.json",
        "config.toml",
        "state-machine.json",
        "README.md",
        "vendor/sfn-wasm-guest/README.md",
    ] {
        assert!(project.join(file).is_file(), "{language}: no {file}");
    }
    (outside, project, name)
}

/// Writes the project's `file` (a module or test of the team's own).
fn write(project: &Path, file: &str, text: &str) {
    let path = project.join(file);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// `scripts/dev.sh HANDLER --input JSON` run from the project's folder with the handler's
/// path relative to it, as its README says: the line it printed for the execution.
fn dev_from(project: &Path, handler: &str, input: &str) -> String {
    let output = Command::new(workspace().join("scripts/dev.sh"))
        .current_dir(project)
        .args([handler, "--input", input])
        .env("PATH", path())
        .env("SFN_WASM_HOST", host())
        .env("LOCALSTACK_ENDPOINT", emulator::endpoint())
        .output()
        .expect("run scripts/dev.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "scripts/dev.sh {handler} from {}: {}\n{stdout}\n{}",
        project.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .find(|line| line.starts_with("SUCCEEDED") || line.starts_with("FAILED"))
        .unwrap_or_else(|| panic!("no execution's status: {stdout}"))
        .to_owned()
}

/// The component the generated config names, resolved against the project.
fn handler_of(project: &Path) -> PathBuf {
    let config: toml::Value =
        toml::from_str(&std::fs::read_to_string(project.join("config.toml")).unwrap()).unwrap();
    let handler = config["activity"][0]["handler"].as_str().unwrap();
    project.join(handler)
}

/// `invoke HANDLER --input-file input.json` in the project: its JSON line.
fn invoke(project: &Path, input: Option<&str>) -> Value {
    let run = support::invoke::invoke(handler_of(project)).current_dir(project);
    let run = match input {
        Some(input) => run.input(input),
        None => run.input_file("input.json"),
    };
    run.run().line
}

/// Serves the project with its own config (its commented `[aws]` block turned on for the
/// emulator, as its comment says) and runs its own state machine once per input: how each
/// execution ended.
fn serve_through_localstack(project: &Path, name: &str, inputs: &[Value]) -> Vec<emulator::Ended> {
    let config_path = project.join("config.toml");
    let config = std::fs::read_to_string(&config_path).unwrap();
    let commented = "# [aws]\n# region = \"us-east-1\"\n# endpoint_url = \"http://127.0.0.1:4566\"";
    assert!(config.contains(commented), "{config}");
    let config = config.replace(
        commented,
        &format!(
            "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"",
            emulator::endpoint()
        ),
    );
    std::fs::write(&config_path, config).unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = runtime.block_on(emulator::client());
    let created = runtime
        .block_on(client.create_activity().name(name).send())
        .expect("create activity");
    assert_eq!(
        created.activity_arn,
        format!("arn:aws:states:us-east-1:000000000000:activity:{name}"),
        "the generated config and state machine name LocalStack's ARN"
    );
    let definition = std::fs::read_to_string(project.join("state-machine.json")).unwrap();
    let machine = runtime
        .block_on(
            client
                .create_state_machine()
                .name(format!("{name}-sm"))
                .definition(definition)
                .role_arn("arn:aws:iam::000000000000:role/sfn-wasm-host-tests")
                .send(),
        )
        .expect("create the generated state machine")
        .state_machine_arn;

    let mut served = served::Served::start_in(Some(project), Path::new("config.toml"));
    served.wait_for("worker:running");
    let ended = inputs
        .iter()
        .map(|input| {
            let execution = runtime.block_on(emulator::start(&client, &machine, input.clone()));
            runtime.block_on(emulator::wait(&client, &execution, Duration::from_secs(60)))
        })
        .collect();
    let (_, code) = served.terminate();
    assert_eq!(code, 0, "serve exits 0 on SIGTERM");
    ended
}

/// Adds `line` before `guard` in the project's `file`: a branch a test needs (a handler
/// that throws), written as the user would.
fn insert_before(project: &Path, file: &str, guard: &str, line: &str) {
    let source = project.join(file);
    let text = std::fs::read_to_string(&source).unwrap();
    assert!(text.contains(guard), "{file} has no {guard:?}");
    std::fs::write(
        &source,
        text.replacen(guard, &format!("{line}\n{guard}"), 1),
    )
    .unwrap();
}

/// Serves the project through LocalStack for `{"hello": "World"}` (it must succeed with
/// the sample output) and `{"hello": "Error"}` (it must fail with
/// `SfnWasmHost.HandlerError`): that failure's cause.
fn served_greets_then_fails(project: &Path, name: &str) -> String {
    let ended = serve_through_localstack(
        project,
        name,
        &[json!({"hello": "World"}), json!({"hello": "Error"})],
    );
    assert_eq!(ended[0].status, ExecutionStatus::Succeeded, "{ended:?}");
    assert_eq!(ended[0].output, Some(sample_output()));
    assert_eq!(ended[1].status, ExecutionStatus::Failed, "{ended:?}");
    assert_eq!(ended[1].error.as_deref(), Some("SfnWasmHost.HandlerError"));
    ended[1].cause.clone().unwrap_or_default()
}

fn sample_output() -> Value {
    json!({"greeting": "Hello, World"})
}

#[test]
fn rust_from_new_to_step_functions() {
    let (_outside, project, name) = new_project("rust");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    {
        let _one = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
        let (_, took) = run(
            &project,
            &cargo,
            &["build", "--release", "--target", "wasm32-wasip2"],
        );
        eprintln!("rust template: cargo build --release --target wasm32-wasip2 took {took:.1?}");
        let (output, took) = run(&project, &cargo, &["test"]);
        eprintln!("rust template: cargo test took {took:.1?}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains("2 passed"), "{stdout}");
    }
    let line = invoke(&project, None);
    assert_eq!(
        line,
        json!({"status": "success", "output": sample_output()})
    );
    let line = invoke(&project, Some(r#"{"hello": 42}"#));
    assert_eq!(line["error"], "SfnWasmHost.InvalidInput", "{line}");
    assert!(
        line["cause"]
            .as_str()
            .unwrap()
            .contains("invalid type: integer `42`"),
        "{line}"
    );

    let ended = serve_through_localstack(&project, &name, &[json!({"hello": "World"})]);
    assert_eq!(ended[0].status, ExecutionStatus::Succeeded, "{ended:?}");
    assert_eq!(ended[0].output, Some(sample_output()));
}

/// A JavaScript team's own module: an npm package (`ms`) and HTTP through the SDK.
const JS_EXTRAS: &str = r#"import ms from 'ms';
import { TaskFailure } from 'sfn-wasm-guest';
import { get, HttpError } from 'sfn-wasm-guest/http';

export const waitMs = (text) => ms(text);

// The status `url` answers; a failed request fails the task by its wasi:http name.
export async function status(url) {
  try {
    return (await get(url)).status;
  } catch (err) {
    if (err instanceof HttpError) throw new TaskFailure(err.name, err.message);
    throw err;
  }
}
"#;

/// Its test: the HTTP stubbed, as a test of a handler that calls out is written.
const JS_EXTRAS_TEST: &str = r#"import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TaskFailure } from 'sfn-wasm-guest';
import { stub, HttpError } from 'sfn-wasm-guest/http';

import { status, waitMs } from '../src/extras.js';

test('ms from npm', () => assert.equal(waitMs('2 days'), 172800000));

test('the status of a stubbed request', async () => {
  const restore = stub((req) => ({ status: req.url === 'https://api.example.com/' ? 204 : 500 }));
  try {
    assert.equal(await status('https://api.example.com/'), 204);
  } finally {
    restore();
  }
});

test('a denied request fails the task by its name', async () => {
  const restore = stub(() => {
    throw new HttpError('HTTP-request-denied');
  });
  try {
    await assert.rejects(status('https://elsewhere.example.com/'), (err) => {
      assert.ok(err instanceof TaskFailure);
      assert.equal(err.error, 'HTTP-request-denied');
      return true;
    });
  } finally {
    restore();
  }
});
"#;

#[test]
fn js_from_new_to_step_functions() {
    let (_outside, project, name) = new_project("js");
    // A handler that throws an Error object: its message and stack reach Step Functions.
    insert_before(
        &project,
        "src/handler.js",
        "  if (!input.hello) {",
        "  if (input.hello === 'Error') throw new RangeError('thrown on purpose');\n  \
         if (input.wait) return { ms: waitMs(input.wait) };\n  \
         if (input.url) return { status: await status(input.url) };",
    );
    insert_before(
        &project,
        "src/handler.js",
        "import { handler, TaskFailure } from 'sfn-wasm-guest';",
        "import { status, waitMs } from './extras.js';",
    );
    write(&project, "src/extras.js", JS_EXTRAS);
    write(&project, "test/extras.test.js", JS_EXTRAS_TEST);
    {
        let _one = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
        let (_, install) = run(&project, "npm", &["install", "--no-audit", "--no-fund"]);
        // A team adds a package of its own: `npm install X` keeps the build working.
        run(
            &project,
            "npm",
            &["install", "--no-audit", "--no-fund", "ms@2.1.3"],
        );
        let (output, build) = run(&project, "npm", &["run", "build"]);
        eprintln!("js template: npm install took {install:.1?}, npm run build {build:.1?}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        // It calls out over HTTP: built for the world with wasi:http, chosen by the build.
        assert!(
            stdout.contains("wrote ") && stdout.contains("world handler-with-http"),
            "{stdout}"
        );
        let (output, _) = run(&project, "npm", &["test"]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains("# pass 5") && stdout.contains("# fail 0"),
            "{stdout}"
        );
        // ComponentizeJS imports preview2-shim without declaring it: the SDK does, so
        // that it is a dependency of the project's tree, not an optional peer's that
        // npm 11 removes at the next `npm install X` (and the build then fails).
        let lock: Value = serde_json::from_str(
            &std::fs::read_to_string(project.join("package-lock.json")).unwrap(),
        )
        .unwrap();
        let shim = &lock["packages"]["node_modules/@bytecodealliance/preview2-shim"];
        assert!(shim["version"].is_string(), "{shim}");
        assert_ne!(shim["peer"], true, "an optional peer's: {shim}");
    }
    assert_eq!(
        invoke(&project, None),
        json!({"status": "success", "output": sample_output()})
    );
    let line = invoke(&project, Some(r#"{"hello": ""}"#));
    assert_eq!(
        line,
        json!({"status": "failure", "error": "InvalidName", "cause": "hello must not be empty"})
    );

    assert_eq!(
        invoke(&project, Some(r#"{"wait": "2 days"}"#)),
        json!({"status": "success", "output": {"ms": 172800000}})
    );
    // No outbound host is granted: the host refuses, the handler names it.
    let line = invoke(&project, Some(r#"{"url": "http://api.example.com/"}"#));
    assert_eq!(line["error"], "HTTP-request-denied", "{line}");

    let cause = served_greets_then_fails(&project, &name);
    let cause = cause.as_str();
    assert!(
        cause.starts_with("RangeError: thrown on purpose\n") && cause.contains("greet@"),
        "the message and the stack: {cause}"
    );
    let line = dev_from(&project, &format!("{name}.wasm"), r#"{"hello": "World"}"#);
    assert!(
        line.starts_with("SUCCEEDED") && line.contains(r#"{"greeting":"Hello, World"}"#),
        "{line}"
    );
}

/// A Python team's own module: a package from PyPI (`humanize`) and HTTP through the SDK.
const PY_EXTRAS: &str = r#"import humanize
from sfn_wasm_guest import TaskFailure, http


def size(n):
    return humanize.naturalsize(n)


def status(url):
    """The status `url` answers; a failed request fails the task by its wasi:http name."""
    try:
        return http.get(url).status
    except http.HttpError as err:
        raise TaskFailure(err.name, str(err)) from None
"#;

/// Its test: the HTTP stubbed, as a test of a handler that calls out is written.
const PY_EXTRAS_TEST: &str = r#"import unittest

from sfn_wasm_guest import TaskFailure, http

import extras


class Extras(unittest.TestCase):
    def test_humanize_from_pypi(self):
        self.assertEqual(extras.size(1000000), "1.0 MB")

    def test_the_status_of_a_stubbed_request(self):
        with http.stub(lambda req: http.Response(204 if req.url == "https://api.example.com/" else 500)):
            self.assertEqual(extras.status("https://api.example.com/"), 204)

    def test_a_denied_request_fails_the_task_by_its_name(self):
        def denied(req):
            raise http.HttpError("HTTP-request-denied")

        with http.stub(denied):
            with self.assertRaises(TaskFailure) as failed:
                extras.status("https://elsewhere.example.com/")
        self.assertEqual(failed.exception.error, "HTTP-request-denied")


if __name__ == "__main__":
    unittest.main()
"#;

/// `new js NAME --aws`: a handler on the real AWS SDK for JavaScript v3 (`@aws-sdk/client-s3`,
/// `@aws-sdk/client-sqs` from npm), built by the SDK's build and run by the host, which
/// signs every request, against LocalStack: `GetObject`'s body streams in chunks,
/// `PutObject` with the SDK's default checksum stores the exact bytes (S3 keeps the
/// CRC32 it checked), the SQS message arrives; without the `sqs` grant the host refuses
/// and the task fails with `HTTP-request-denied`; AWS's own errors keep AWS's code.
#[test]
fn js_with_the_aws_sdk_from_new_to_s3_and_sqs_signed_by_the_host() {
    let (_outside, project, _name) = new_project_with("js", &["--aws"]);
    {
        let _one = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
        let (_, install) = run(&project, "npm", &["install", "--no-audit", "--no-fund"]);
        let (output, build) = run(&project, "npm", &["run", "build"]);
        eprintln!("js --aws template: npm install took {install:.1?}, npm run build {build:.1?}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains("world handler-with-http"), "{stdout}");
        let (output, _) = run(&project, "npm", &["test"]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains("# pass 2") && stdout.contains("# fail 0"),
            "{stdout}"
        );
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // Large enough to arrive in several chunks.
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let (bucket, queue_url) = runtime.block_on(async {
        let s3 = emulator::s3().await;
        let bucket = format!("authoring-{:08x}", fastrand::u32(..));
        s3.create_bucket().bucket(&bucket).send().await.unwrap();
        s3.put_object()
            .bucket(&bucket)
            .key("in/data.bin")
            .body(data.clone().into())
            .send()
            .await
            .unwrap();
        let (queue_url, _) = emulator::queue(&emulator::sqs().await, false, 3).await;
        (bucket, queue_url)
    });
    let input = json!({"bucket": bucket, "key": "in/data.bin", "queue_url": queue_url}).to_string();
    let invoke_with = |services: &[&str], input: &str| {
        let run = services.iter().fold(
            support::invoke::invoke(handler_of(&project))
                .current_dir(&project)
                .input(input)
                .args(["--aws-region", "us-east-1"])
                .args(["--aws-endpoint-url", &emulator::endpoint()]),
            |run, service| run.args(["--aws-service", service]),
        );
        run.run().line
    };
    let line = invoke_with(&["s3", "sqs"], &input);
    assert_eq!(line["status"], "success", "{line}");
    assert_eq!(line["output"]["bytes"], 300_000, "{line}");
    assert_eq!(line["output"]["receipt_key"], "receipts/in/data.bin.json");
    let receipt = json!({"bucket": bucket, "key": "in/data.bin", "bytes": 300_000}).to_string();
    let (stored, crc32, message) = runtime.block_on(async {
        let object = emulator::s3()
            .await
            .get_object()
            .bucket(&bucket)
            .key("receipts/in/data.bin.json")
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
            .send()
            .await
            .unwrap();
        let crc32 = object.checksum_crc32().map(str::to_owned);
        let stored = object.body.collect().await.unwrap().into_bytes().to_vec();
        let received = emulator::sqs()
            .await
            .receive_message()
            .queue_url(&queue_url)
            .wait_time_seconds(5)
            .send()
            .await
            .unwrap();
        let message = received
            .messages()
            .first()
            .and_then(|m| m.body().map(str::to_owned));
        (stored, crc32, message)
    });
    assert_eq!(String::from_utf8(stored).unwrap(), receipt);
    assert!(crc32.is_some(), "no CRC32 stored with the receipt");
    assert_eq!(message.as_deref(), Some(receipt.as_str()));

    // S3 granted, SQS not: the host refuses the SQS request before it leaves.
    let line = invoke_with(&["s3"], &input);
    assert_eq!(line["error"], "HTTP-request-denied", "{line}");
    // AWS's own error keeps AWS's code.
    let missing =
        json!({"bucket": bucket, "key": "in/missing", "queue_url": queue_url}).to_string();
    let line = invoke_with(&["s3", "sqs"], &missing);
    assert_eq!(line["error"], "NoSuchKey", "{line}");
}

#[test]
fn python_from_new_to_step_functions() {
    let (_outside, project, name) = new_project("python");
    // A handler that raises an exception: its type, message and traceback reach Step
    // Functions.
    insert_before(
        &project,
        "handler.py",
        "    if not input.get(\"hello\"):",
        "    if input.get(\"hello\") == \"Error\":\n        raise LookupError(\"raised on purpose\")\n    \
         if input.get(\"size\"):\n        return {\"size\": extras.size(input[\"size\"])}\n    \
         if input.get(\"url\"):\n        return {\"status\": extras.status(input[\"url\"])}",
    );
    insert_before(
        &project,
        "handler.py",
        "from sfn_wasm_guest import Context, TaskFailure, handler",
        "import extras",
    );
    write(&project, "extras.py", PY_EXTRAS);
    write(&project, "test_extras.py", PY_EXTRAS_TEST);
    {
        let _one = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
        let (_, venv) = run(&project, "python3", &["-m", "venv", ".venv"]);
        let (_, install) = run(
            &project,
            ".venv/bin/pip",
            &[
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
                "requirements.txt",
            ],
        );
        // A team adds a package of its own from PyPI.
        run(
            &project,
            ".venv/bin/pip",
            &[
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "humanize==4.12.3",
            ],
        );
        let (output, build) = run(
            &project,
            ".venv/bin/python3",
            &["-m", "sfn_wasm_guest", "build"],
        );
        eprintln!(
            "python template: venv took {venv:.1?}, pip install {install:.1?}, build {build:.1?}"
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        // It calls out over HTTP: built for the world with wasi:http, chosen by the build.
        assert!(
            stdout.contains("wrote ") && stdout.contains("world handler-with-http"),
            "{stdout}"
        );
        let (output, _) = run(&project, ".venv/bin/python3", &["-m", "unittest", "-v"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("Ran 5 tests") && stderr.contains("OK"),
            "{stderr}"
        );
    }
    assert_eq!(
        invoke(&project, None),
        json!({"status": "success", "output": sample_output()})
    );

    assert_eq!(
        invoke(&project, Some(r#"{"size": 1000000}"#)),
        json!({"status": "success", "output": {"size": "1.0 MB"}})
    );
    // No outbound host is granted: the host refuses, the handler names it.
    let line = invoke(&project, Some(r#"{"url": "http://api.example.com/"}"#));
    assert_eq!(line["error"], "HTTP-request-denied", "{line}");

    let cause = served_greets_then_fails(&project, &name);
    let cause = cause.as_str();
    assert!(
        cause.starts_with("Traceback (most recent call last):")
            && cause.contains("handler.py")
            && cause.ends_with("LookupError: raised on purpose"),
        "the type, message and traceback: {cause}"
    );
    let line = dev_from(&project, &format!("{name}.wasm"), r#"{"hello": "World"}"#);
    assert!(
        line.starts_with("SUCCEEDED") && line.contains(r#"{"greeting":"Hello, World"}"#),
        "{line}"
    );
}

#[test]
fn new_refuses_a_folder_that_is_not_empty() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("keep.txt"), "mine").unwrap();
    let output = Command::new(host())
        .args(["new", "python", "greet", "--dir"])
        .arg(outside.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("is not empty"));
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1);
}

#[test]
fn the_sdks_pass_their_own_tests() {
    let sdk = workspace().join("guest-sdk");
    let (output, _) = run(&sdk.join("js"), "node", &["--test"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("# fail 0"), "{stdout}");
    let (output, _) = run(
        &sdk.join("python"),
        "python3",
        &["-m", "unittest", "discover", "-s", "tests"],
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("OK"));
}

#[test]
fn the_sdks_package() {
    let _one = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    // A fresh clone (CI) is clean; a working copy may not be.
    let mut args = vec!["package", "-p", "sfn-wasm-guest"];
    if std::env::var_os("CI").is_none() {
        args.push("--allow-dirty");
    }
    let (output, took) = run(workspace(), &cargo, &args);
    eprintln!("cargo package -p sfn-wasm-guest took {took:.1?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Packaged"), "{stderr}");
    let listed = Command::new(&cargo)
        .args(["package", "-p", "sfn-wasm-guest", "--list", "--allow-dirty"])
        .current_dir(workspace())
        .output()
        .unwrap();
    let files = String::from_utf8_lossy(&listed.stdout);
    assert!(
        files.lines().any(|f| f == "wit/handler.wit"),
        "the crate carries its WIT: {files}"
    );

    let (output, _) = run(
        &workspace().join("guest-sdk/js"),
        "npm",
        &["pack", "--dry-run", "--json"],
    );
    let packed: Value = serde_json::from_slice(&output.stdout).unwrap();
    let files: Vec<&str> = packed[0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    for want in [
        "bin/sfn-wasm-guest.js",
        "src/component.js",
        "src/index.js",
        "index.d.ts",
        "types/interfaces/sfn-activity-types.d.ts",
        "wit/handler.wit",
        "src/http-component.js",
        "src/http-node.js",
        "http.d.ts",
        "src/aws-component.js",
        "src/aws-node.js",
        "src/aws-shared.js",
        "aws.d.ts",
        "wit-http/http-client.wit",
        "wit-http/deps/http.wit",
        "wit-http/deps/sfn-activity/handler.wit",
        "README.md",
    ] {
        assert!(files.contains(&want), "npm pack has no {want}: {files:?}");
    }

    let wheels = tempfile::tempdir().unwrap();
    let pip = workspace().join(".venv/polyglot/bin/pip");
    run(
        workspace(),
        pip.to_str().unwrap(),
        &[
            "wheel",
            "--quiet",
            "--no-deps",
            "--disable-pip-version-check",
            "-w",
            wheels.path().to_str().unwrap(),
            "guest-sdk/python",
        ],
    );
    let wheel = std::fs::read_dir(wheels.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .expect("a wheel");
    let (output, _) = run(
        workspace(),
        "python3",
        &["-m", "zipfile", "-l", wheel.to_str().unwrap()],
    );
    let listing = String::from_utf8_lossy(&output.stdout);
    for want in [
        "sfn_wasm_guest/__init__.py",
        "sfn_wasm_guest/__main__.py",
        "sfn_wasm_guest/_component.py",
        "sfn_wasm_guest/wit/handler.wit",
        "sfn_wasm_guest/http.py",
        "sfn_wasm_guest/_http_wasi.py",
        "sfn_wasm_guest/wit-http/http-client.wit",
        "sfn_wasm_guest/wit-http/deps/http.wit",
        "sfn_wasm_guest/wit-http/deps/sfn-activity/handler.wit",
    ] {
        assert!(listing.contains(want), "the wheel has no {want}: {listing}");
    }
}

#[test]
fn every_sdk_carries_the_world_the_host_serves() {
    let world = std::fs::read_to_string(workspace().join("wit/handler.wit")).unwrap();
    for copy in [
        "guest-sdk/rust/wit/handler.wit",
        "guest-sdk/js/wit/handler.wit",
        "guest-sdk/python/sfn_wasm_guest/wit/handler.wit",
        "examples/wit-http/deps/sfn-activity/handler.wit",
        "guest-sdk/js/wit-http/deps/sfn-activity/handler.wit",
        "guest-sdk/python/sfn_wasm_guest/wit-http/deps/sfn-activity/handler.wit",
    ] {
        let text = std::fs::read_to_string(workspace().join(copy)).unwrap();
        assert!(
            text == world,
            "{copy} differs from wit/handler.wit: run scripts/vendor-wit.sh"
        );
    }
    // The HTTP world the JavaScript and Python SDKs build with is examples/wit-http,
    // copied whole (real files: a copy of the folder must work anywhere).
    let http = workspace().join("examples/wit-http");
    for file in [
        "http-client.wit",
        "deps/cli.wit",
        "deps/clocks.wit",
        "deps/filesystem.wit",
        "deps/http.wit",
        "deps/io.wit",
        "deps/random.wit",
        "deps/sockets.wit",
    ] {
        assert!(!http.join(file).is_symlink(), "examples/wit-http/{file}");
        let want = std::fs::read_to_string(http.join(file)).unwrap();
        for copy in [
            "guest-sdk/js/wit-http",
            "guest-sdk/python/sfn_wasm_guest/wit-http",
        ] {
            let have = std::fs::read_to_string(workspace().join(copy).join(file)).unwrap();
            assert!(
                have == want,
                "{copy}/{file} differs from examples/wit-http: run scripts/vendor-wit.sh"
            );
        }
    }
    // The JavaScript SDK's types are generated from it (jco, as `npm run types` does).
    let fresh = tempfile::tempdir().unwrap();
    run(
        &workspace().join("guest-sdk/js"),
        "npx",
        &[
            "-y",
            "@bytecodealliance/jco@1.11.1",
            "guest-types",
            "wit/handler.wit",
            "-o",
            fresh.path().to_str().unwrap(),
        ],
    );
    for file in [
        "handler.d.ts",
        "interfaces/sfn-activity-toolkit.d.ts",
        "interfaces/sfn-activity-types.d.ts",
    ] {
        let want = std::fs::read_to_string(fresh.path().join(file)).unwrap();
        let have =
            std::fs::read_to_string(workspace().join("guest-sdk/js/types").join(file)).unwrap();
        assert!(
            have == want,
            "guest-sdk/js/types/{file} is stale: run scripts/vendor-wit.sh"
        );
    }
}
