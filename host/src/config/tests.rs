//! The config's own tests: what parses, and the defaults. What is refused, and the
//! exact message, is data: `host/tests/config-errors` (the `config_errors` test).

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::aws::PerApi;
use crate::grants::{EnvSource, EnvVar, GrantsConfig};
use crate::outbound::OutboundLimits;
use crate::source::HandlerSource;

const ARN: &str = "arn:aws:states:us-east-1:000000000000:activity:greet";

fn parse(text: &str) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("greet.wasm"), b"\0asm").unwrap();
    std::fs::create_dir(dir.path().join("handlers")).unwrap();
    std::fs::write(dir.path().join("handlers/greet.wasm"), b"\0asm").unwrap();
    std::fs::create_dir(dir.path().join("reference-data")).unwrap();
    Config::parse(&dir.path().join("config.toml"), text)
}

fn error_of(text: &str) -> ConfigError {
    parse(text).expect_err("the config should be rejected")
}

#[test]
fn a_minimal_config_gets_the_defaults() {
    let config = parse(&format!(
        "[[activity]]\narn = \"{ARN}\"\nhandler = \"greet.wasm\"\n"
    ))
    .unwrap();
    let activity = &config.activities[0];
    assert_eq!(activity.pollers, 1);
    assert_eq!(activity.max_concurrent_tasks, 1);
    assert_eq!(activity.task_timeout, Duration::from_secs(300));
    assert_eq!(activity.memory_limit_bytes, 128 << 20);
    assert_eq!(activity.polling, PollingConfig::default());
    assert!(activity.handler.file().is_some_and(Path::is_absolute));
    // Sources, pins, rollouts and records are off unless configured.
    assert_eq!(activity.sha256, None);
    assert_eq!(activity.source_poll, Duration::from_secs(30));
    assert_eq!(activity.handler_max_bytes, 256 << 20);
    assert_eq!(activity.rollout, None);
    assert_eq!(activity.record, None);
    assert_eq!(config.host.shutdown_grace, Duration::from_secs(30));
    assert!(!config.host.worker_prefix.is_empty());
    // The README's defaults, from a config with no [host] table at all.
    assert_eq!(config.host.cache_dir, default_cache_dir());
    assert!(
        config.host.cache_dir.is_some(),
        "the compile cache is on by default"
    );
    assert_eq!(config.host.cache_max_bytes, 1024 << 20);
    assert_eq!(config.host.answer_retry, Duration::from_secs(600));
    assert_eq!(activity.heartbeat_interval, None);
    assert_eq!(activity.cancel_grace, Duration::from_secs(5));
    // Operations are off unless asked for: no admin server, no traces exporter (the
    // OTEL_EXPORTER_OTLP_ENDPOINT variable is read at start, not here).
    assert_eq!(config.host.admin_listen, None);
    assert_eq!(config.host.admin_max_connections, 64);
    assert!(
        config.host.admin_token.is_none(),
        "/status is open by default"
    );
    assert_eq!(config.host.otel_endpoint, None);
    assert_eq!(config.host.otel_headers.iter().count(), 0);
    assert_eq!(config.host.otel_ca_file, None);
    // Task starts are not rate-limited unless asked for.
    assert_eq!(activity.max_tasks_per_second, None);
    // The API rates: the region's quota, without an [aws] table.
    let rates = config.aws.rates(Some("us-east-1"));
    assert_eq!(rates, PerApi::from_fn(|_| 500.0));
    // No grants: no network, environment or folders.
    assert_eq!(activity.grants, GrantsConfig::default());
    assert_eq!(
        activity.grants.outbound,
        OutboundLimits {
            max_requests: 100,
            max_response_bytes: 16_777_216,
            connect_timeout_ms: 5000,
            first_byte_timeout_ms: 30_000,
            // Below the 5 s servers and load balancers commonly keep an idle connection.
            pool_idle_seconds: 4,
            pool_max_idle_per_host: 8,
            pool_max_idle: 32,
            max_concurrent_requests: 16,
            max_request_buffer_bytes: 16_777_216,
        }
    );
    // An empty [host] table means the same.
    let empty = parse(&format!(
        "[host]\n[[activity]]\narn = \"{ARN}\"\nhandler = \"greet.wasm\"\n"
    ))
    .unwrap();
    assert_eq!(empty.host, config.host);
    let off = parse(&format!(
        "[host]\ncache = false\n[[activity]]\narn = \"{ARN}\"\nhandler = \"greet.wasm\"\n"
    ))
    .unwrap();
    assert_eq!(off.host.cache_dir, None);
}

#[test]
fn the_full_example_parses() {
    let text = format!(
        r#"
        [aws]
        region = "us-east-1"
        endpoint_url = "http://127.0.0.1:4599"
        [host]
        worker_prefix = "my-host"
        shutdown_grace_seconds = 30
        log_format = "json"
        cache_max_mb = 512
        answer_retry_seconds = 120
        [[activity]]
        arn = "{ARN}"
        handler = "greet.wasm"
        workers = 4
        task_timeout_seconds = 300
        memory_limit_mb = 128
        restart_interval_ms = 2000
        heartbeat_seconds = 20
        cancel_grace_seconds = 2.5
        [activity.polling]
        max_attempts = 5
        interval_seconds = 1.0
        backoff_rate = 1.2
        "#
    );
    let config = parse(&text).unwrap();
    assert_eq!(config.host.log_format, LogFormat::Json);
    assert_eq!(
        config.aws.endpoint_url.as_deref(),
        Some("http://127.0.0.1:4599")
    );
    assert_eq!(config.total_task_slots(), 4);
    assert_eq!(config.activities[0].max_concurrent_tasks, 4);
    // Pollers and task slots apart.
    let split = parse(&format!(
        "[[activity]]\narn = \"{ARN}\"\nhandler = \"greet.wasm\"\nworkers = 4\nmax_concurrent_tasks = 50\n"
    ))
    .unwrap();
    assert_eq!(split.activities[0].pollers, 4);
    assert_eq!(split.total_task_slots(), 50);
    let split = parse(&format!(
        "[[activity]]\narn = \"{ARN}\"\nhandler = \"greet.wasm\"\npollers = 2\nmax_concurrent_tasks = 8\n"
    ))
    .unwrap();
    assert_eq!(split.activities[0].pollers, 2);
    assert_eq!(split.total_task_slots(), 8);
    let err = error_of(&format!(
        "[[activity]]\narn = \"{ARN}\"\nhandler = \"greet.wasm\"\npollers = 1001\n"
    ));
    assert_eq!(err.key, "activity[0].pollers");
    assert_eq!(config.host.cache_max_bytes, 512 << 20);
    assert_eq!(config.host.answer_retry, Duration::from_secs(120));
    let activity = &config.activities[0];
    assert_eq!(activity.heartbeat_interval, Some(Duration::from_secs(20)));
    assert_eq!(activity.cancel_grace, Duration::from_millis(2500));
}

#[test]
fn rollout_keys_parse_with_their_defaults() {
    let pin = "ab".repeat(32);
    let config = parse(&format!(
        "[[activity]]\narn = \"{ARN}\"\nhandler = \"s3://bucket/handlers/greet.wasm\"\n\
         sha256 = \"{}\"\nsource_poll_seconds = 2\nrecord = \"records\"\n[activity.rollout]\n",
        pin.to_uppercase()
    ))
    .unwrap();
    let activity = &config.activities[0];
    assert_eq!(
        activity.handler,
        HandlerSource::S3 {
            bucket: "bucket".into(),
            key: "handlers/greet.wasm".into()
        }
    );
    assert_eq!(activity.sha256.as_deref(), Some(pin.as_str()));
    assert_eq!(activity.source_poll, Duration::from_secs(2));
    // An empty [activity.rollout] is the documented defaults.
    assert_eq!(activity.rollout, Some(RolloutConfig::default()));
    let record = activity.record.as_ref().unwrap();
    assert!(record.dir.is_absolute() && record.dir.ends_with("records"));
    assert_eq!(record.max_bytes, 100 << 20);
}

#[test]
fn operations_keys_alone_turn_the_admin_server_and_traces_on() {
    let config = parse(&format!(
        "[host]\nadmin_listen = \"0.0.0.0:9464\"\n[host.otel]\nendpoint = \"http://collector:4318\"\n\
         [[activity]]\narn = \"{ARN}\"\nhandler = \"greet.wasm\"\n"
    ))
    .unwrap();
    assert_eq!(
        config.host.admin_listen,
        Some("0.0.0.0:9464".parse().unwrap())
    );
    assert_eq!(
        config.host.otel_endpoint.as_deref(),
        Some("http://collector:4318")
    );
    // The rest of [host] keeps its defaults.
    assert_eq!(config.host.shutdown_grace, Duration::from_secs(30));
    assert!(config.host.cache_dir.is_some());
}

#[test]
fn api_rates_default_to_the_regions_quota_and_can_be_lowered() {
    let config = parse(&format!(
        "[aws.max_requests_per_second]\nGetActivityTask = 50\n[[activity]]\narn = \"{ARN}\"\nhandler = \"greet.wasm\"\n"
    ))
    .unwrap();
    let large = config.aws.rates(Some("us-east-1"));
    assert_eq!(large[Api::GetActivityTask], 50.0);
    assert_eq!(large[Api::SendTaskSuccess], 500.0);
    assert_eq!(
        config.aws.rates(Some("eu-central-1"))[Api::SendTaskHeartbeat],
        300.0
    );
    assert_eq!(config.aws.rates(None)[Api::SendTaskFailure], 300.0);
    let err = error_of(&format!(
        "[aws.max_requests_per_second]\nSendTaskSuccess = 0\n[[activity]]\narn = \"{ARN}\"\nhandler = \"greet.wasm\"\n"
    ));
    assert_eq!(err.key, "aws.max_requests_per_second.SendTaskSuccess");
    let err = error_of(&format!(
        "[aws.max_requests_per_second]\nGetTask = 1\n[[activity]]\narn = \"{ARN}\"\nhandler = \"greet.wasm\"\n"
    ));
    assert!(err.message.contains("GetTask"), "{err}");
}

#[test]
fn the_grants_example_parses() {
    let variable = "SFN_WASM_HOST_TEST_CONFIG_API_KEY";
    // SAFETY: only this test uses this variable.
    unsafe { std::env::set_var(variable, "secret") };
    let config = parse(&format!(
        r#"
        [[activity]]
        arn = "{ARN}"
        handler = "handlers/greet.wasm"
        allowed_outbound_hosts = ["https://api.example.com", "https://*.s3.amazonaws.com", "http://127.0.0.1:8080"]
        [activity.env]
        GREETING = "hello"
        API_KEY = {{ from_env = "{variable}" }}
        [[activity.dir]]
        host = "reference-data"
        guest = "/data"
        [[activity.dir]]
        host = "reference-data"
        guest = "/scratch"
        writable = true
        [activity.outbound]
        max_requests = 3
        max_response_bytes = 1000
        connect_timeout_ms = 100
        first_byte_timeout_ms = 200
        "#
    ))
    .unwrap();
    let grants = &config.activities[0].grants;
    let hosts: Vec<String> = grants
        .allowed_outbound_hosts
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        hosts,
        [
            "https://api.example.com:443",
            "https://*.s3.amazonaws.com:443",
            "http://127.0.0.1:8080"
        ]
    );
    assert!(grants.env.contains(&EnvVar {
        name: "API_KEY".into(),
        source: EnvSource::FromEnv(variable.into())
    }));
    assert!(grants.env.contains(&EnvVar {
        name: "GREETING".into(),
        source: EnvSource::Literal("hello".into())
    }));
    assert_eq!(grants.dirs.len(), 2);
    assert!(grants.dirs[0].host.is_absolute());
    assert!(grants.dirs[0].host.ends_with("reference-data"));
    assert_eq!(
        (grants.dirs[0].guest.as_str(), grants.dirs[0].writable),
        ("/data", false)
    );
    assert_eq!(
        (grants.dirs[1].guest.as_str(), grants.dirs[1].writable),
        ("/scratch", true)
    );
    assert_eq!(grants.outbound.max_requests, 3);
    assert_eq!(grants.outbound.first_byte_timeout_ms, 200);
}

#[test]
fn backoff_grows_by_the_rate() {
    let polling = PollingConfig {
        max_attempts: 5,
        interval_seconds: 1.0,
        backoff_rate: 2.0,
    };
    assert_eq!(polling.delay(1), Duration::from_secs(1));
    assert_eq!(polling.delay(3), Duration::from_secs(4));
    assert_eq!(polling.delay(500), Duration::from_secs(3600));
}

#[test]
fn every_path_is_absolute_whatever_the_config_was_called() {
    // Relative to the working folder (the crate's, under `cargo test`), as `serve
    // tests/config-errors/relative.toml` would be given it.
    let text = format!(
        "[host]\ncache_dir = \"cache\"\n[[activity]]\narn = \"{ARN}\"\nhandler = \"greet.wasm\"\n\
         record = \"records\"\n[[activity.dir]]\nhost = \"../it\"\nguest = \"/data\"\n"
    );
    let config = Config::parse(Path::new("tests/config-errors/relative.toml"), &text).unwrap();
    let folder = std::env::current_dir().unwrap().join("tests/config-errors");
    let activity = &config.activities[0];
    assert_eq!(
        activity.handler.file(),
        Some(folder.join("greet.wasm").as_path())
    );
    assert_eq!(config.host.cache_dir, Some(folder.join("cache")));
    assert_eq!(
        activity.record.as_ref().unwrap().dir,
        folder.join("records")
    );
    // (A folder beside the handler's, not inside it: see `host_folders_are_never_granted`.)
    assert_eq!(activity.grants.dirs[0].host, folder.join("../it"));

    // A bare file name: its folder is the working folder.
    let text = format!("[[activity]]\narn = \"{ARN}\"\nhandler = \"Cargo.toml\"\n");
    let config = Config::parse(Path::new("config.toml"), &text).unwrap();
    let handler = config.activities[0].handler.file().unwrap();
    assert!(handler.is_absolute(), "{}", handler.display());
    assert_eq!(handler, std::env::current_dir().unwrap().join("Cargo.toml"));
}

#[test]
fn secrets_and_aws_grants_take_their_defaults_from_their_required_keys() {
    let config = parse(&format!(
        "[aws]\nregion = \"eu-west-1\"\n[[activity]]\narn = \"{ARN}\"\nhandler = \"greet.wasm\"\n\
         [activity.env]\nDB = {{ from_ssm = \"/db\" }}\nKEY = {{ from_secretsmanager = \"prod/key\" }}\n\
         [activity.aws]\nservices = [\"s3\"]\n"
    ))
    .unwrap();
    let grants = &config.activities[0].grants;
    let secret = |name: &str| match &grants.env.iter().find(|v| v.name == name).unwrap().source {
        EnvSource::Secret(secret) => secret.clone(),
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(
        secret("DB"),
        crate::secrets::SecretRef {
            source: crate::secrets::SecretSource::Ssm { name: "/db".into() },
            refresh: std::time::Duration::from_secs(300),
        }
    );
    assert_eq!(
        secret("KEY").source,
        crate::secrets::SecretSource::SecretsManager {
            id: "prod/key".into(),
            json_key: None,
        }
    );
    let aws = grants.aws.as_ref().unwrap();
    assert_eq!(
        aws.regions,
        ["eu-west-1"],
        "regions default to [aws] region"
    );
    assert_eq!(
        (aws.role_arn.as_ref(), aws.external_id.as_ref()),
        (None, None)
    );
    assert_eq!(grants.ca_file, None);
}

#[test]
fn otel_headers_are_kept_and_never_printed() {
    let config = parse(&format!(
        "[host.otel]\nendpoint = \"https://collector:4318\"\nheaders = {{ \"api-key\" = \"s3cret\", \"x-team\" = \"ops\" }}\n\
         [[activity]]\narn = \"{ARN}\"\nhandler = \"greet.wasm\"\nmax_tasks_per_second = 2.5\n"
    ))
    .unwrap();
    let headers: Vec<(&str, &str)> = config.host.otel_headers.iter().collect();
    assert_eq!(headers, [("api-key", "s3cret"), ("x-team", "ops")]);
    let printed = format!("{:?}", config.host);
    assert!(
        printed.contains("api-key") && !printed.contains("s3cret"),
        "{printed}"
    );
    assert_eq!(config.activities[0].max_tasks_per_second, Some(2.5));
}

/// A folder the host keeps for itself, for [`host_folders_are_never_granted`]: the
/// config lines that name `folder`, and the key the error names.
struct Kept {
    name: &'static str,
    key: &'static str,
}

const KEPT: [Kept; 6] = [
    Kept {
        name: "cache",
        key: "`host.cache_dir`",
    },
    Kept {
        name: "outbox",
        key: "`host.outbox_dir`",
    },
    Kept {
        name: "handler",
        key: "the folder of `activity[0].handler`",
    },
    Kept {
        name: "progress",
        key: "`activity[0].progress.store`",
    },
    Kept {
        name: "idempotency",
        key: "`activity[0].idempotency.store`",
    },
    Kept {
        name: "record",
        key: "`activity[0].record`",
    },
];

/// A config naming every kind of host folder as `root/KIND/f`, with `grants` after the
/// activity's keys.
fn config_with_host_folders(root: &Path, activity_tail: &str) -> String {
    let f = |name: &str| root.join(name).join("f").display().to_string();
    format!(
        "[host]\ncache_dir = \"{}\"\noutbox_dir = \"{}\"\n\
         [[activity]]\narn = \"{ARN}\"\nhandler = \"{}/greet.wasm\"\nrecord = \"{}\"\n\
         [activity.progress]\nkey = \"/id\"\nstore = \"{}\"\n\
         [activity.idempotency]\nkey = \"/id\"\nstore = \"{}\"\n{activity_tail}",
        f("cache"),
        f("outbox"),
        f("handler"),
        f("record"),
        f("progress"),
        f("idempotency"),
    )
}

/// `root/KIND/f/sub` for each kind, with the handler in `root/handler/f`.
fn host_folders_in(root: &Path) {
    for kept in &KEPT {
        std::fs::create_dir_all(root.join(kept.name).join("f/sub")).unwrap();
    }
    std::fs::write(root.join("handler/f/greet.wasm"), b"\0asm").unwrap();
    std::fs::create_dir(root.join("data")).unwrap();
}

fn grant(host: &Path, writable: bool) -> String {
    format!(
        "[[activity.dir]]\nhost = \"{}\"\nguest = \"/data\"\nwritable = {writable}\n",
        host.display()
    )
}

#[test]
fn host_folders_are_never_granted() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    host_folders_in(root);
    let file = root.join("config.toml");
    // A folder of its own is granted, read-only or writable.
    for writable in [false, true] {
        let text = config_with_host_folders(root, &grant(&root.join("data"), writable));
        Config::parse(&file, &text).unwrap();
    }
    for kept in &KEPT {
        let folder = root.join(kept.name).join("f");
        for (granted, relation) in [
            (folder.clone(), "is"),
            (folder.join("sub"), "lies inside"),
            (root.join(kept.name), "contains"),
        ] {
            for writable in [true, false] {
                let text = config_with_host_folders(root, &grant(&granted, writable));
                let err = Config::parse(&file, &text).expect_err(&format!(
                    "a grant of {} was accepted ({})",
                    granted.display(),
                    kept.name
                ));
                assert_eq!(err.key, "activity[0].dir[0]", "{err}");
                let expected = format!(
                    "{} {relation} {}, {}, a folder the host keeps for itself",
                    granted.display(),
                    kept.key,
                    folder.display()
                );
                assert!(err.message.starts_with(&expected), "{expected:?} in {err}");
                assert!(
                    err.message
                        .ends_with("grant a folder that neither contains nor lies inside it"),
                    "{err}"
                );
            }
        }
    }
}

#[test]
fn host_folders_are_compared_after_symlinks_and_before_they_exist() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    host_folders_in(root);
    let file = root.join("config.toml");

    // A symlink to the cache folder.
    let link = root.join("innocent");
    std::os::unix::fs::symlink(root.join("cache/f"), &link).unwrap();
    let err =
        Config::parse(&file, &config_with_host_folders(root, &grant(&link, true))).unwrap_err();
    assert_eq!(err.key, "activity[0].dir[0]");
    assert!(
        err.message.contains("(resolved: ") && err.message.contains("is `host.cache_dir`"),
        "{err}"
    );

    // An outbox that does not exist yet, under a granted folder.
    let text = config_with_host_folders(root, &grant(&root.join("data"), true)).replace(
        &root.join("outbox/f").display().to_string(),
        &root.join("data/later/outbox").display().to_string(),
    );
    let err = Config::parse(&file, &text).unwrap_err();
    assert_eq!(err.key, "activity[0].dir[0]");
    assert!(err.message.contains("contains `host.outbox_dir`"), "{err}");
    // ... reached through `..`.
    let text = config_with_host_folders(root, &grant(&root.join("data"), true)).replace(
        &root.join("outbox/f").display().to_string(),
        &root
            .join("cache/missing/../../data/x")
            .display()
            .to_string(),
    );
    let err = Config::parse(&file, &text).unwrap_err();
    assert!(err.message.contains("contains `host.outbox_dir`"), "{err}");

    // The handler's real folder, when it is reached through a symlink.
    std::fs::create_dir(root.join("releases")).unwrap();
    std::fs::rename(
        root.join("handler/f/greet.wasm"),
        root.join("releases/greet.wasm"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        root.join("releases/greet.wasm"),
        root.join("handler/f/greet.wasm"),
    )
    .unwrap();
    let err = Config::parse(
        &file,
        &config_with_host_folders(root, &grant(&root.join("releases"), false)),
    )
    .unwrap_err();
    assert!(
        err.message
            .contains("is the folder of `activity[0].handler`"),
        "{err}"
    );
}

#[test]
fn another_activitys_folders_are_never_granted_either() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    host_folders_in(root);
    let other = ARN.replace(":greet", ":other");
    let text = format!(
        "{}\n[[activity]]\narn = \"{other}\"\nhandler = \"{}\"\n{}",
        config_with_host_folders(root, ""),
        root.join("handler/f/greet.wasm").display(),
        grant(&root.join("progress"), true),
    );
    let err = Config::parse(&root.join("config.toml"), &text).unwrap_err();
    assert_eq!(err.key, "activity[1].dir[0]");
    assert!(
        err.message
            .contains("contains `activity[0].progress.store`"),
        "{err}"
    );
}

#[test]
fn a_host_folder_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    host_folders_in(root);
    let file = root.join("config.toml");
    let text = config_with_host_folders(root, "");
    Config::parse(&file, &text).unwrap();
    for (folder, key) in [
        ("outbox/f", "host.outbox_dir"),
        ("progress/f", "activity[0].progress.store"),
        ("idempotency/f", "activity[0].idempotency.store"),
        ("record/f", "activity[0].record"),
    ] {
        let path = root.join(folder);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = Config::parse(&file, &text).unwrap_err();
        assert_eq!(err.key, key, "{err}");
        assert_eq!(
            err.message,
            format!(
                "refusing {}: others can write to it (mode 777); run `chmod go-w {}` or use another folder",
                path.display(),
                path.display()
            )
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
}

/// The folders of the CA files the host trusts are host folders too: a guest writing
/// there could plant a root its own TLS (and its signed AWS requests') then trusts, at the
/// next grants refresh.
#[test]
fn a_grant_over_a_trusted_ca_files_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("certs")).unwrap();
    std::fs::create_dir_all(root.join("handlers")).unwrap();
    std::fs::write(root.join("handlers/greet.wasm"), b"\0asm").unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls/ca.pem"),
        root.join("certs/ca.pem"),
    )
    .unwrap();
    let file = root.join("config.toml");
    for (table, key) in [
        ("[activity.outbound]", "`activity[0].outbound.ca_file`"),
        (
            "[host.otel]\nendpoint = \"https://127.0.0.1:4318\"",
            "`host.otel.ca_file`",
        ),
    ] {
        let (host, activity) = if table.starts_with("[host") {
            (
                format!("{table}\nca_file = \"certs/ca.pem\"\n"),
                String::new(),
            )
        } else {
            (
                String::new(),
                format!("{table}\nca_file = \"certs/ca.pem\"\n"),
            )
        };
        let text = format!(
            "{host}[[activity]]\narn = \"{ARN}\"\nhandler = \"handlers/greet.wasm\"\n{activity}{}",
            grant(&root.join("certs"), false)
        );
        let err = Config::parse(&file, &text).expect_err(key);
        assert_eq!(err.key, "activity[0].dir[0]", "{err}");
        assert!(
            err.message.contains(&format!("the folder of {key}")),
            "{key}: {err}"
        );
    }
}

/// `[activity.aws]` with only its services: no credential APIs, public addresses only,
/// the host's region, and no per-service destinations unless the environment names one.
#[test]
fn an_aws_grant_with_only_services_gets_the_defaults() {
    let config = parse(&format!(
        "[aws]\nregion = \"eu-west-1\"\n[[activity]]\narn = \"{ARN}\"\nhandler = \"greet.wasm\"\n\
         [activity.aws]\nservices = [\"sqs\"]\n"
    ))
    .unwrap();
    let aws = config.activities[0].grants.aws.clone().expect("a grant");
    assert_eq!(aws.regions, ["eu-west-1"]);
    assert!(!aws.allow_credential_apis);
    assert!(!aws.private_endpoints);
    assert_eq!(aws.role_arn, None);
    let expected = std::env::var("AWS_ENDPOINT_URL_SQS")
        .ok()
        .filter(|url| !url.is_empty())
        .map(|url| vec![("sqs".to_owned(), url)])
        .unwrap_or_default();
    assert_eq!(aws.service_endpoints, expected);
}

/// `[activity.idempotency]` with only its required keys: a day's TTL and nothing validated
/// (the key alone decides).
#[test]
fn an_idempotency_table_with_only_its_required_keys_gets_the_defaults() {
    let config = parse(&format!(
        "[[activity]]\narn = \"{ARN}\"\nhandler = \"greet.wasm\"\n\
         [activity.idempotency]\nkey = \"/orderId\"\nstore = \"answers\"\n"
    ))
    .unwrap();
    let idempotency = config.activities[0].idempotency.as_ref().unwrap();
    assert_eq!(idempotency.ttl, Duration::from_secs(86_400));
    assert!(idempotency.validate.is_empty());
}
