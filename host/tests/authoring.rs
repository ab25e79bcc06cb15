//! Writing a handler outside this repository, as a new user would. For each language,
//! from an empty folder outside the repository: `sfn-wasm-host new` (with `--sdk`, the
//! way a user of the unpublished SDKs depends on them), the project's own build command,
//! its own test, `invoke` with its sample input, and one execution served through
//! LocalStack with the generated config and state machine. Then the SDKs themselves:
//! their own tests, their packages (`cargo package`, `npm pack`, a wheel), and the WIT
//! they carry.
//!
//! A test binary of its own: the builds take the machine's cores for a minute, which
//! must not run beside the timing-sensitive tests of `it`. Builds run one at a time.

#[allow(dead_code)]
#[path = "it/emulator.rs"]
mod emulator;
#[allow(dead_code)]
#[path = "it/served.rs"]
mod served;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_sfn::types::ExecutionStatus;
use serde_json::{Value, json};

/// One build at a time: the machine has two cores.
static BUILDS: Mutex<()> = Mutex::new(());

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
}

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

/// `sfn-wasm-host new LANGUAGE NAME --sdk guest-sdk` in a fresh folder outside the
/// repository: the temporary folder and the project inside it.
fn new_project(language: &str) -> (tempfile::TempDir, PathBuf, String) {
    // Unique: LocalStack keeps an activity's stale tasks.
    let name = format!("greet-{language}-{:08x}", fastrand::u32(..));
    let outside = tempfile::tempdir().unwrap();
    assert!(!outside.path().starts_with(workspace()));
    let sdk = workspace().join("guest-sdk");
    let (output, _) = run(
        outside.path(),
        host(),
        &["new", language, &name, "--sdk", sdk.to_str().unwrap()],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("config.toml"), "{stdout}");
    let project = outside.path().join(&name);
    for file in [
        "input.json",
        "config.toml",
        "state-machine.json",
        "README.md",
    ] {
        assert!(project.join(file).is_file(), "{language}: no {file}");
    }
    (outside, project, name)
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
    let handler = handler_of(project);
    let mut command = Command::new(host());
    command.current_dir(project).arg("invoke").arg(&handler);
    match input {
        Some(input) => command.args(["--input", input]),
        None => command.args(["--input-file", "input.json"]),
    };
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "not one JSON line ({e}): {stdout} / {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
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

#[test]
fn js_from_new_to_step_functions() {
    let (_outside, project, name) = new_project("js");
    // A handler that throws an Error object: its message and stack reach Step Functions.
    insert_before(
        &project,
        "src/handler.js",
        "  if (!input.hello) {",
        "  if (input.hello === 'Error') throw new RangeError('thrown on purpose');",
    );
    {
        let _one = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
        let (_, install) = run(&project, "npm", &["install", "--no-audit", "--no-fund"]);
        let (output, build) = run(&project, "npm", &["run", "build"]);
        eprintln!("js template: npm install took {install:.1?}, npm run build {build:.1?}");
        assert!(String::from_utf8_lossy(&output.stdout).contains("wrote "));
        let (output, _) = run(&project, "npm", &["test"]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains("# pass 2") && stdout.contains("# fail 0"),
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
        // A team adds a package of its own: the build still works.
        let (output, _) = run(
            &project,
            "npm",
            &["install", "--no-audit", "--no-fund", "ms"],
        );
        assert!(output.status.success(), "{output:?}");
        let (output, _) = run(&project, "npm", &["run", "build"]);
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("wrote "),
            "{output:?}"
        );
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

    let cause = served_greets_then_fails(&project, &name);
    let cause = cause.as_str();
    assert!(
        cause.starts_with("RangeError: thrown on purpose\n") && cause.contains("greet@"),
        "the message and the stack: {cause}"
    );
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
        "    if input.get(\"hello\") == \"Error\":\n        raise LookupError(\"raised on purpose\")",
    );
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
        let (output, build) = run(
            &project,
            ".venv/bin/python3",
            &["-m", "sfn_wasm_guest", "build"],
        );
        eprintln!(
            "python template: venv took {venv:.1?}, pip install {install:.1?}, build {build:.1?}"
        );
        assert!(String::from_utf8_lossy(&output.stdout).contains("wrote "));
        let (output, _) = run(&project, ".venv/bin/python3", &["-m", "unittest", "-v"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("Ran 2 tests") && stderr.contains("OK"),
            "{stderr}"
        );
    }
    assert_eq!(
        invoke(&project, None),
        json!({"status": "success", "output": sample_output()})
    );

    let cause = served_greets_then_fails(&project, &name);
    let cause = cause.as_str();
    assert!(
        cause.starts_with("Traceback (most recent call last):")
            && cause.contains("handler.py")
            && cause.ends_with("LookupError: raised on purpose"),
        "the type, message and traceback: {cause}"
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
    ] {
        let text = std::fs::read_to_string(workspace().join(copy)).unwrap();
        assert!(
            text == world,
            "{copy} differs from wit/handler.wit: run scripts/vendor-wit.sh"
        );
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
