//! The deployment files in `deploy/` name real things: the config they ship passes
//! `sfn-wasm-host check`, and the Dockerfile, Kubernetes manifest and systemd unit agree
//! with it (admin port, probe paths, config and handler paths, stop timeouts no shorter
//! than the shutdown grace, the open files limit), and the admin server listens on
//! loopback except where the probes must reach it (the pod, the container). No container engine runs here; this is what can be checked
//! without one.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sfn_wasm_host::config::Config;

use crate::support::guests::{guest, workspace};

fn read(name: &str) -> String {
    std::fs::read_to_string(workspace().join("deploy").join(name))
        .unwrap_or_else(|e| panic!("deploy/{name}: {e}"))
}

/// The value after `key` on the first line that starts with it (after indentation).
fn value<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .map(str::trim_start)
        .find_map(|line| line.strip_prefix(key))
        .unwrap_or_else(|| panic!("no line starting with {key:?}"))
        .trim()
}

/// `config`, with its handler pointed at a real component and its cache at a folder of
/// the test's, passes `check`; it is returned parsed (the handler must exist for that).
fn passes_check(config: &str) -> Config {
    let dir = tempfile::tempdir().unwrap();
    let handler = guest("greet");
    let text = config.replace("/handlers/greet.wasm", &handler.display().to_string());
    let text = text.replace(
        "/var/cache/sfn-wasm-host",
        &dir.path().join("c").display().to_string(),
    );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &text).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_sfn-wasm-host"))
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Config::parse(Path::new("deploy.toml"), &text).unwrap()
}

#[test]
fn the_deploy_files_agree_with_the_host_and_each_other() {
    let config_text = read("config.toml");
    let config = passes_check(&config_text);
    let admin = config
        .host
        .admin
        .listen
        .expect("the shipped config serves /metrics");
    assert!(
        admin.ip().is_loopback(),
        "deploy/config.toml binds {admin}: loopback, unless probes must reach it"
    );
    let port = admin.port().to_string();
    let grace = config.host.shutdown_grace;
    // The host exits within grace + its final answers (under a second): the platform's
    // stop timeout must leave room for that.
    let stop_timeout_covers = |seconds: &str, what: &str| {
        let seconds: u64 = seconds.parse().unwrap();
        assert!(
            Duration::from_secs(seconds) >= grace + Duration::from_secs(1),
            "{what} = {seconds} s is shorter than shutdown_grace_seconds + 1 s"
        );
    };

    // Kubernetes: the ConfigMap's config is a valid config too, and the Deployment
    // probes the right port and paths, mounts what the config names.
    let manifest = read("kubernetes.yaml");
    let embedded: String = manifest
        .split("config.toml: |\n")
        .nth(1)
        .unwrap()
        .split("\n---")
        .next()
        .unwrap()
        .lines()
        .map(|line| line.strip_prefix("    ").unwrap_or(line))
        .collect::<Vec<_>>()
        .join("\n");
    for path in [
        "handler = \"/handlers/",
        "cache_dir = \"/var/cache/sfn-wasm-host/",
    ] {
        assert!(
            embedded.contains(path),
            "the ConfigMap's {path}…\" is inside a mounted volume"
        );
    }
    let embedded = passes_check(&embedded);
    // The pod's address, on purpose: the kubelet and Prometheus come from outside.
    let pod = embedded.host.admin.listen.unwrap();
    assert!(
        pod.ip().is_unspecified() && pod.port() == admin.port(),
        "{pod}"
    );
    assert!(
        manifest.contains("The pod's address, on purpose"),
        "kubernetes.yaml says why it binds 0.0.0.0"
    );
    assert_eq!(embedded.host.shutdown_grace, grace);
    for probe in ["path: /healthz", "path: /readyz", "path: /metrics"] {
        assert!(manifest.contains(probe), "kubernetes.yaml: {probe}");
    }
    assert_eq!(value(&manifest, "containerPort:"), port);
    assert_eq!(
        manifest
            .matches(&format!("\n              port: {port}\n"))
            .count(),
        2,
        "both probes on the admin port"
    );
    stop_timeout_covers(
        value(&manifest, "terminationGracePeriodSeconds:"),
        "terminationGracePeriodSeconds",
    );
    assert!(manifest.contains(r#"args: ["serve", "/etc/sfn-wasm-host/config.toml"]"#));
    for mount in [
        "mountPath: /etc/sfn-wasm-host",
        "mountPath: /handlers",
        "mountPath: /var/cache/sfn-wasm-host",
    ] {
        assert!(manifest.contains(mount), "kubernetes.yaml: {mount}");
    }

    // Credentials on EKS: the pods run as the service account the IRSA role annotates.
    assert!(
        manifest.contains("kind: ServiceAccount")
            && manifest.contains("eks.amazonaws.com/role-arn:")
            && manifest.contains("serviceAccountName: sfn-wasm-host"),
        "kubernetes.yaml: a service account with an IAM role"
    );

    // ECS: the task role gives the credentials; the stop timeout covers the grace, the
    // command is the image's, with the container's address for the admin server.
    let task: serde_json::Value = serde_json::from_str(&read("ecs-task-definition.json")).unwrap();
    assert!(
        task["taskRoleArn"]
            .as_str()
            .is_some_and(|r| r.contains(":role/"))
    );
    let container = &task["containerDefinitions"][0];
    stop_timeout_covers(
        &container["stopTimeout"].to_string(),
        "the ECS container's stopTimeout",
    );
    assert_eq!(
        container["command"],
        serde_json::json!([
            "serve",
            "/etc/sfn-wasm-host/config.toml",
            "--admin-listen",
            format!("0.0.0.0:{port}")
        ])
    );
    assert_eq!(
        container["portMappings"][0]["containerPort"].to_string(),
        port
    );

    // systemd.
    let unit = read("sfn-wasm-host.service");
    assert_eq!(
        value(&unit, "ExecStart="),
        "/usr/local/bin/sfn-wasm-host serve /etc/sfn-wasm-host/config.toml"
    );
    assert_eq!(value(&unit, "ExecReload="), "/bin/kill -HUP $MAINPID");
    assert_eq!(value(&unit, "KillSignal="), "SIGTERM");
    stop_timeout_covers(value(&unit, "TimeoutStopSec="), "TimeoutStopSec");
    assert_eq!(value(&unit, "CacheDirectory="), "sfn-wasm-host");
    let open_files: u64 = value(&unit, "LimitNOFILE=").parse().unwrap();
    assert!(open_files >= 65_536, "LimitNOFILE={open_files}");

    // Dockerfile.
    let dockerfile = read("Dockerfile");
    assert!(dockerfile.contains("cargo build --release --locked -p sfn-wasm-host"));
    assert_eq!(value(&dockerfile, "EXPOSE "), port);
    let user = value(&dockerfile, "USER ");
    assert!(
        !user.starts_with('0') && !user.starts_with("root"),
        "USER {user}"
    );
    assert_eq!(
        value(&dockerfile, "ENTRYPOINT "),
        r#"["/usr/local/bin/sfn-wasm-host"]"#
    );
    // The container's address, on purpose (its loopback is out of the probes' reach),
    // over the shipped config's loopback.
    assert_eq!(
        value(&dockerfile, "CMD "),
        format!(
            r#"["serve", "/etc/sfn-wasm-host/config.toml", "--admin-listen", "0.0.0.0:{port}"]"#
        )
    );
    assert_eq!(value(&dockerfile, "STOPSIGNAL "), "SIGTERM");
}
