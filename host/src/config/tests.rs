//! The config's own tests: what parses, and the defaults. What is refused, and the
//! exact message, is data: `host/tests/config-errors` (the `config_errors` test).

use sfn_wasm_outbound::OutboundLimits;
use std::path::Path;
use std::time::Duration;

use super::*;
use crate::aws::PerApi;
use crate::grants::{EnvSource, EnvVar, GrantsConfig};
use crate::source::HandlerSource;

mod host_folders;

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
    // The documented defaults (docs/src/configuration.md), from a config with no [host] table at all.
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
    assert_eq!(config.host.admin.listen, None);
    assert_eq!(config.host.admin.max_connections, 64);
    assert!(
        config.host.admin.token.is_none(),
        "/status is open by default"
    );
    assert_eq!(config.host.otel, None);
    assert_eq!(config.host.outbox, None, "no outbox unless asked for");
    // One task slot by default, so one runtime thread and no guest threads.
    assert_eq!(config.host.runtime_threads, None);
    assert_eq!(config.runtime_threads(), 1);
    assert_eq!(config.host.guest_threads, None);
    assert_eq!(config.guest_threads(), 0);
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

/// A `[[callback]]` with only its required keys: the queue's defaults, and every shared
/// key as an activity's; listed after the activities, named by its queue URL.
#[test]
fn a_minimal_callback_gets_the_defaults() {
    let url = "https://sqs.us-east-1.amazonaws.com/123456789012/greet-tasks";
    let config = parse(&format!(
        "[[activity]]\narn = \"{ARN}\"\nhandler = \"greet.wasm\"\n\
         [[callback]]\nqueue_url = \"{url}\"\nhandler = \"greet.wasm\"\n"
    ))
    .unwrap();
    let callback = &config.activities[1];
    assert_eq!(&*callback.name, url);
    assert_eq!(callback.key.as_str(), "callback[0]");
    assert_eq!(callback.source.kind(), "callback");
    let queue = callback.source.callback().unwrap();
    assert_eq!(queue.token, "/TaskToken");
    assert_eq!(queue.input, None);
    assert_eq!(queue.wait, Duration::from_secs(20));
    assert_eq!(queue.visibility_timeout, Duration::from_secs(60));
    assert!(!queue.fifo());
    // The shared keys' defaults are an activity's.
    let activity = &config.activities[0];
    assert_eq!(activity.source.kind(), "activity");
    assert_eq!(
        (
            callback.pollers,
            callback.max_concurrent_tasks,
            callback.task_timeout
        ),
        (
            activity.pollers,
            activity.max_concurrent_tasks,
            activity.task_timeout
        )
    );
    assert_eq!(callback.memory_limit_bytes, activity.memory_limit_bytes);
    assert_eq!(config.total_task_slots(), 2);
    // A callback alone is a config too; a `.fifo` queue is FIFO.
    let fifo = parse(&format!(
        "[[callback]]\nqueue_url = \"{url}.fifo\"\nhandler = \"greet.wasm\"\n"
    ))
    .unwrap();
    assert!(fifo.activities[0].source.callback().unwrap().fifo());
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

/// Guests that compute get a thread per core of their own once more than one task can
/// run at once, and the runtime (I/O) then one thread; without guest threads the runtime
/// has a thread per core, but never more than the tasks that can run at once. The keys
/// decide when set.
#[test]
fn runtime_and_guest_threads_follow_the_task_slots_unless_set() {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let with = |host: &str, slots: u32| {
        let config = parse(&format!(
            "[host]\n{host}\n[[activity]]\narn = \"{ARN}\"\nhandler = \"greet.wasm\"\nmax_concurrent_tasks = {slots}\n"
        ))
        .unwrap();
        (config.runtime_threads(), config.guest_threads())
    };
    assert_eq!(with("", 1), (1, 0), "one task slot: one thread for all");
    assert_eq!(
        with("", 64),
        (1, cores),
        "guests that compute move off the I/O thread"
    );
    assert_eq!(
        with("guest_threads = 0", 64),
        (cores.min(64), 0),
        "without guest threads, a runtime thread per core"
    );
    assert_eq!(with("guest_threads = 0", 1), (1, 0));
    assert_eq!(
        with("runtime_threads = 3", 1),
        (3, 0),
        "the key decides when set"
    );
    assert_eq!(with("runtime_threads = 2\nguest_threads = 3", 8), (2, 3));
    assert!(
        parse(&format!(
            "[host]\nguest_threads = 2000\n[[activity]]\narn = \"{ARN}\"\nhandler = \"greet.wasm\"\n"
        ))
        .unwrap_err()
        .to_string()
        .contains("guest_threads"),
        "out of range names the key"
    );
}

/// `outbox_durability` and `[activity.idempotency] durability` choose between fsync'd
/// writes (the default) and writes that survive a process crash only.
#[test]
fn durability_defaults_to_power_loss_and_can_be_process_crash() {
    use crate::store::Durability;
    let config = parse(&format!(
        "[host]\noutbox_dir = \"outbox\"\n[[activity]]\narn = \"{ARN}\"\nhandler = \"greet.wasm\"\n\
         [activity.idempotency]\nkey = \"/id\"\nstore = \"answers\"\n"
    ))
    .unwrap();
    assert_eq!(
        config.host.outbox.unwrap().durability,
        Durability::PowerLoss
    );
    let idempotency = config.activities[0].idempotency.as_ref().unwrap();
    assert_eq!(idempotency.durability, Durability::PowerLoss);
    let config = parse(&format!(
        "[host]\noutbox_dir = \"outbox\"\noutbox_durability = \"process-crash\"\n\
         [[activity]]\narn = \"{ARN}\"\nhandler = \"greet.wasm\"\n\
         [activity.idempotency]\nkey = \"/id\"\nstore = \"answers\"\ndurability = \"process-crash\"\n"
    ))
    .unwrap();
    assert_eq!(
        config.host.outbox.unwrap().durability,
        Durability::ProcessCrash
    );
    let idempotency = config.activities[0].idempotency.as_ref().unwrap();
    assert_eq!(idempotency.durability, Durability::ProcessCrash);
}

#[test]
fn operations_keys_alone_turn_the_admin_server_and_traces_on() {
    let config = parse(&format!(
        "[host]\nadmin_listen = \"0.0.0.0:9464\"\n[host.otel]\nendpoint = \"http://collector:4318\"\n\
         [[activity]]\narn = \"{ARN}\"\nhandler = \"greet.wasm\"\n"
    ))
    .unwrap();
    assert_eq!(
        config.host.admin.listen,
        Some("0.0.0.0:9464".parse().unwrap())
    );
    assert_eq!(
        config.host.otel.as_ref().map(|otel| otel.endpoint.as_str()),
        Some("http://collector:4318")
    );
    let otel = config.host.otel.as_ref().unwrap();
    assert_eq!(otel.headers.iter().count(), 0);
    assert_eq!(otel.ca_file, None);
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
    let headers: Vec<(&str, &str)> = config.host.otel.as_ref().unwrap().headers.iter().collect();
    assert_eq!(headers, [("api-key", "s3cret"), ("x-team", "ops")]);
    let printed = format!("{:?}", config.host);
    assert!(
        printed.contains("api-key") && !printed.contains("s3cret"),
        "{printed}"
    );
    assert_eq!(config.activities[0].max_tasks_per_second, Some(2.5));
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
