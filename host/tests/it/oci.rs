//! Handlers from a real OCI registry on loopback (Debian's `docker-registry`, one per
//! test): pulled by tag and by digest (`check`, `invoke`, `compile`), pins, a wasm artifact's layout, basic auth from
//! Docker's `config.json` and a credential helper, cosign signatures against a
//! `verify_key`, and a moved tag hot-swapped (LocalStack runs the tasks).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::json;
use sfn_wasm_host::ids::sha256_hex;

use crate::rollout::Host;
use crate::support::guests::guest;
use crate::support::registry::{Registry, key_pair};

fn digest(path: &Path) -> String {
    sha256_hex(&std::fs::read(path).unwrap())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// `check` on an activity with `lines` (its `handler = ...` and more), in a folder of
/// its own, with `DOCKER_CONFIG` at `docker` (an empty folder unless the test fills it).
fn check_with(dir: &Path, docker: &Path, lines: &str, path: Option<&str>) -> Output {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[aws]\nregion = \"us-east-1\"\n[host]\ncache_dir = \"cache\"\n\
             [[activity]]\narn = \"arn:aws:states:us-east-1:000000000000:activity:oci\"\n{lines}\n"
        ),
    )
    .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_sfn-wasm-host"));
    command
        .arg("check")
        .arg(&config)
        .env("DOCKER_CONFIG", docker);
    if let Some(path) = path {
        command.env("PATH", path);
    }
    command.output().unwrap()
}

fn check(dir: &Path, lines: &str) -> Output {
    let docker = dir.join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    check_with(dir, &docker, lines, None)
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn passes(output: &Output, wasm: &Path) {
    let shown = text(output);
    assert!(output.status.success(), "{shown}");
    assert!(shown.contains(&digest(wasm)), "{shown}");
}

fn refused(output: &Output, key: &str, words: &[&str]) {
    let shown = text(output);
    assert_eq!(output.status.code(), Some(2), "{shown}");
    assert!(shown.contains(&format!("`activity[0].{key}`")), "{shown}");
    for word in words {
        assert!(shown.contains(word), "{word:?} missing: {shown}");
    }
}

#[test]
fn a_component_is_pulled_by_tag_and_by_digest_and_held_to_its_pins() {
    let registry = Registry::start();
    let runtime = runtime();
    let greet = guest("greet");
    let manifest = runtime.block_on(registry.push("handlers/greet", "1.0.0", &greet));
    let dir = tempfile::tempdir().unwrap();

    let by_tag = check(
        dir.path(),
        &format!(
            "handler = \"{}\"",
            registry.tagged("handlers/greet", "1.0.0")
        ),
    );
    passes(&by_tag, &greet);
    assert!(
        text(&by_tag).contains(&registry.tagged("handlers/greet", "1.0.0")),
        "{}",
        text(&by_tag)
    );
    passes(
        &check(
            dir.path(),
            &format!(
                "handler = \"{}\"",
                registry.pinned("handlers/greet", &manifest)
            ),
        ),
        &greet,
    );
    // The `sha256` pin is the component's digest, whatever the manifest's.
    let pinned_to = |sha256: &str| {
        check(
            dir.path(),
            &format!(
                "handler = \"{}\"\nsha256 = \"{sha256}\"",
                registry.tagged("handlers/greet", "1.0.0")
            ),
        )
    };
    passes(&pinned_to(&digest(&greet)), &greet);
    refused(
        &pinned_to(&digest(&guest("greet_v2"))),
        "sha256",
        &[&digest(&greet)],
    );
    // A registry that cannot be reached: the error says why, not only what failed.
    refused(
        &check(
            dir.path(),
            "handler = \"oci://127.0.0.1:1/handlers/greet:1.0.0\"",
        ),
        "handler",
        &["cannot resolve the tag", "Connection refused"],
    );
    // Pinned by the manifest's digest (what a registry shows first): the error says so.
    refused(
        &pinned_to(manifest.trim_start_matches("sha256:")),
        "sha256",
        &["that is the OCI manifest's digest"],
    );
    // `invoke` and `compile` take the same reference.
    let invoked = Command::new(env!("CARGO_BIN_EXE_sfn-wasm-host"))
        .arg("invoke")
        .arg(registry.tagged("handlers/greet", "1.0.0"))
        .args(["--input", r#"{"hello": "OCI"}"#, "--no-cache"])
        .env("DOCKER_CONFIG", dir.path())
        .output()
        .unwrap();
    assert!(invoked.status.success(), "{}", text(&invoked));
    let answer: serde_json::Value = serde_json::from_slice(&invoked.stdout).unwrap();
    assert_eq!(answer["output"], json!({"greeting": "Hello, OCI"}));
    let compiled = Command::new(env!("CARGO_BIN_EXE_sfn-wasm-host"))
        .arg("compile")
        .arg("--cache-dir")
        .arg(dir.path().join("compiled"))
        .arg(registry.pinned("handlers/greet", &manifest))
        .env("DOCKER_CONFIG", dir.path())
        .output()
        .unwrap();
    passes(&compiled, &greet);

    // A manifest digest the registry does not hold, a tag it does not have.
    let wrong = format!("sha256:{}", "0".repeat(64));
    refused(
        &check(
            dir.path(),
            &format!(
                "handler = \"{}\"",
                registry.pinned("handlers/greet", &wrong)
            ),
        ),
        "handler",
        &["oci://"],
    );
    refused(
        &check(
            dir.path(),
            &format!(
                "handler = \"{}\"",
                registry.tagged("handlers/greet", "9.9.9")
            ),
        ),
        "handler",
        &["cannot resolve the tag"],
    );
    // An image that is not a wasm artifact, and a layer larger than the cap.
    runtime.block_on(registry.push_layer(
        "handlers/image",
        "1",
        b"not a component".to_vec(),
        "application/vnd.oci.image.layer.v1.tar+gzip",
    ));
    refused(
        &check(
            dir.path(),
            &format!("handler = \"{}\"", registry.tagged("handlers/image", "1")),
        ),
        "handler",
        &["application/wasm", "tar+gzip"],
    );
    runtime.block_on(registry.push_layer(
        "handlers/large",
        "1",
        vec![0; (1 << 20) + 1],
        sfn_wasm_host::source::WASM_LAYER,
    ));
    refused(
        &check(
            dir.path(),
            &format!(
                "handler = \"{}\"\nhandler_max_mb = 1",
                registry.tagged("handlers/large", "1")
            ),
        ),
        "handler",
        &["handler_max_mb"],
    );
}

#[test]
fn a_reference_without_registry_or_tag_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    for handler in ["oci://acme/greet:1", "oci://127.0.0.1:5000/greet"] {
        refused(
            &check(dir.path(), &format!("handler = \"{handler}\"")),
            "handler",
            &["oci://REGISTRY/REPOSITORY:TAG"],
        );
    }
    let (_, public) = key_pair();
    std::fs::write(dir.path().join("cosign.pub"), public).unwrap();
    refused(
        &check(
            dir.path(),
            &format!(
                "handler = \"{}\"\nverify_key = \"cosign.pub\"",
                guest("greet").display()
            ),
        ),
        "verify_key",
        &["oci://"],
    );
    std::fs::write(dir.path().join("not.pub"), "hello").unwrap();
    refused(
        &check(
            dir.path(),
            "handler = \"oci://127.0.0.1:5000/greet:1\"\nverify_key = \"not.pub\"",
        ),
        "verify_key",
        &["not.pub", "public key"],
    );
}

#[test]
fn a_registry_login_comes_from_docker_config_or_its_credential_helper() {
    let password = "pw-7f3a9c";
    let registry = Registry::with_login("alice", password);
    let runtime = runtime();
    let greet = guest("greet");
    runtime.block_on(registry.push("private/greet", "1", &greet));
    let dir = tempfile::tempdir().unwrap();
    let lines = format!("handler = \"{}\"", registry.tagged("private/greet", "1"));

    // No credentials: the registry's refusal, named.
    let anonymous = check(dir.path(), &lines);
    refused(&anonymous, "handler", &["oci://"]);

    // `auths` in config.json.
    let docker = dir.path().join("docker-auths");
    std::fs::create_dir_all(&docker).unwrap();
    let auth = base64_of(&format!("alice:{password}"));
    std::fs::write(
        docker.join("config.json"),
        json!({"auths": {registry.address.clone(): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    let from_auths = check_with(dir.path(), &docker, &lines, None);
    passes(&from_auths, &greet);

    // `credHelpers`: a `docker-credential-NAME` on PATH answers `get`.
    let helpers = dir.path().join("bin");
    std::fs::create_dir_all(&helpers).unwrap();
    let helper = helpers.join("docker-credential-sfntest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nread server\necho '{{\"ServerURL\":\"'\"$server\"'\",\"Username\":\"alice\",\"Secret\":\"{password}\"}}'\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let docker = dir.path().join("docker-helper");
    std::fs::create_dir_all(&docker).unwrap();
    std::fs::write(
        docker.join("config.json"),
        json!({"credHelpers": {registry.address.clone(): "sfntest"}}).to_string(),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        helpers.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let from_helper = check_with(dir.path(), &docker, &lines, Some(&path));
    passes(&from_helper, &greet);

    for output in [&anonymous, &from_auths, &from_helper] {
        let shown = text(output);
        assert!(
            !shown.contains(password) && !shown.contains(&auth),
            "{shown}"
        );
    }
}

fn base64_of(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[test]
fn with_a_verify_key_only_a_component_signed_by_that_key_is_compiled() {
    let registry = Registry::start();
    let runtime = runtime();
    let greet = guest("greet");
    let (signer, public) = key_pair();
    let (stranger, _) = key_pair();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cosign.pub"), public).unwrap();
    let lines = |tag: &str| {
        format!(
            "handler = \"{}\"\nverify_key = \"cosign.pub\"",
            registry.tagged("signed/greet", tag)
        )
    };

    let signed = runtime.block_on(registry.push("signed/greet", "signed", &greet));
    runtime.block_on(registry.sign("signed/greet", &signed, &signer));
    passes(&check(dir.path(), &lines("signed")), &greet);

    let v2 = guest("greet_v2");
    let unsigned = runtime.block_on(registry.push("signed/greet", "unsigned", &v2));
    refused(
        &check(dir.path(), &lines("unsigned")),
        "handler",
        &["no cosign signature", &unsigned, "cosign.pub"],
    );

    let scenarios = guest("scenarios");
    let other = runtime.block_on(registry.push("signed/greet", "other-key", &scenarios));
    runtime.block_on(registry.sign("signed/greet", &other, &stranger));
    refused(
        &check(dir.path(), &lines("other-key")),
        "handler",
        &["verifies against `verify_key`", &other],
    );
    // Without a `verify_key` the same unsigned component is taken.
    passes(
        &check(
            dir.path(),
            &format!(
                "handler = \"{}\"",
                registry.tagged("signed/greet", "unsigned")
            ),
        ),
        &v2,
    );
}

#[test]
fn a_moved_tag_is_hot_swapped_and_an_unsigned_version_waits_for_its_signature() {
    let registry = Registry::start();
    let runtime = runtime();
    let (signer, public) = key_pair();
    let first = runtime.block_on(registry.push("live/greet", "stable", &guest("greet")));
    runtime.block_on(registry.sign("live/greet", &first, &signer));
    let handler = registry.tagged("live/greet", "stable");
    let dir = tempfile::tempdir().unwrap();
    let docker = dir.path().display().to_string();
    let mut host = Host::start_with_env(
        &format!("handler = \"{handler}\"\nverify_key = \"cosign.pub\"\nsource_poll_seconds = 1"),
        |dir| std::fs::write(dir.join("cosign.pub"), &public).unwrap(),
        &[("DOCKER_CONFIG", &docker)],
    );
    assert_eq!(
        host.loaded["handler_digest"],
        digest(&guest("greet")).as_str()
    );
    assert_eq!(host.run("World"), json!({"greeting": "Hello, World"}));

    // v2 is pushed and signed under a tag of its own, then `stable` moves to it: swapped
    // at the next poll. (The same bytes pushed again are the same manifest digest.)
    let v2 = runtime.block_on(registry.push("live/greet", "v2", &guest("greet_v2")));
    runtime.block_on(registry.sign("live/greet", &v2, &signer));
    let moved = std::time::Instant::now();
    assert_eq!(
        runtime.block_on(registry.push("live/greet", "stable", &guest("greet_v2"))),
        v2
    );
    let v2_digest = digest(&guest("greet_v2"));
    host.served.wait_until("handler:swapped", |line| {
        line["new_digest"] == v2_digest.as_str()
    });
    eprintln!(
        "tag moved -> handler:swapped in {} ms (source_poll_seconds = 1)",
        moved.elapsed().as_millis()
    );
    assert_eq!(
        host.run("World"),
        json!({"greeting": "Hi, World", "version": 2})
    );

    // Then to an unsigned component: refused, reported once though every poll checks
    // it again, and v2 keeps serving.
    let unsigned = runtime.block_on(registry.push("live/greet", "stable", &guest("scenarios")));
    let rejected = host.served.wait_for("handler:rejected");
    let reason = rejected["reason"].as_str().unwrap();
    assert!(
        reason.contains("no cosign signature") && reason.contains(&unsigned),
        "{rejected}"
    );
    assert_eq!(
        host.run("World"),
        json!({"greeting": "Hi, World", "version": 2})
    );
    std::thread::sleep(Duration::from_millis(2500));
    let rejections = || {
        host.served
            .events()
            .iter()
            .filter(|e| *e == "handler:rejected")
            .count()
    };
    assert_eq!(rejections(), 1, "{:?}", host.served.events());

    // Signed late (as `cosign sign` after `wkg oci push`): taken at the next poll.
    runtime.block_on(registry.sign("live/greet", &unsigned, &signer));
    let scenarios = digest(&guest("scenarios"));
    host.served.wait_until("handler:swapped", |line| {
        line["new_digest"] == scenarios.as_str()
    });
}

/// An `oci-client` client keeps the first credentials it was given for a registry; the
/// host must use what `config.json` says now (an ECR token refreshed, a password
/// rotated). With a wrong password written, the next version is refused (401); with
/// the right one back, it is taken.
#[test]
fn a_changed_registry_login_is_used_from_the_next_poll() {
    let registry = Registry::with_login("alice", "pw-right");
    let runtime = runtime();
    runtime.block_on(registry.push("private/greet", "live", &guest("greet")));
    let dir = tempfile::tempdir().unwrap();
    let docker = dir.path().join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    let login = |password: &str| {
        let auth = base64_of(&format!("alice:{password}"));
        std::fs::write(
            docker.join("config.json"),
            json!({"auths": {registry.address.clone(): {"auth": auth}}}).to_string(),
        )
        .unwrap();
    };
    login("pw-right");
    let docker_var = docker.display().to_string();
    let mut host = Host::start_with_env(
        &format!(
            "handler = \"{}\"\nsource_poll_seconds = 1",
            registry.tagged("private/greet", "live")
        ),
        |_| {},
        &[("DOCKER_CONFIG", &docker_var)],
    );
    assert_eq!(host.run("World"), json!({"greeting": "Hello, World"}));

    login("pw-wrong");
    runtime.block_on(registry.push("private/greet", "live", &guest("greet_v2")));
    let rejected = host.served.wait_for("handler:rejected");
    assert!(
        rejected["reason"].as_str().unwrap().contains("oci://"),
        "{rejected}"
    );
    assert!(!host.served.events().iter().any(|e| e == "handler:swapped"));
    assert!(!host.served.text().contains("pw-"), "a password was logged");

    login("pw-right");
    let v2 = digest(&guest("greet_v2"));
    host.served
        .wait_until("handler:swapped", |line| line["new_digest"] == v2.as_str());
    assert_eq!(
        host.run("World"),
        json!({"greeting": "Hi, World", "version": 2})
    );
}
