//! `[activity.env]` values from Secrets Manager and Parameter Store (LocalStack's),
//! served: read at start, rotated values reaching new tasks within `refresh_seconds`
//! and a second, a deleted secret's last value kept with `grants:refresh_failed`, a
//! missing one stopping `check` with the key and the AWS error code, and no value in
//! the host's output at `RUST_LOG=trace`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::emulator;
use crate::support::guests::guest;
use crate::support::served::Served;

async fn secretsmanager(action: &str, body: Value) -> Value {
    emulator::json_call(
        &format!("secretsmanager.{action}"),
        "1.1",
        "secretsmanager",
        body,
    )
    .await
}

async fn ssm(action: &str, body: Value) -> Value {
    emulator::json_call(&format!("AmazonSSM.{action}"), "1.1", "ssm", body).await
}

/// A value no log line would hold by chance.
fn distinct(label: &str) -> String {
    format!("{label}-{:016x}", fastrand::u64(..))
}

/// A config serving `activity` with the probe guest and `env` as its `[activity.env]`.
fn config_with_env(dir: &std::path::Path, activity: &str, env: &str) -> std::path::PathBuf {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n[host]\nshutdown_grace_seconds = 1\n\
             [[activity]]\narn = \"{activity}\"\nhandler = \"{}\"\n[activity.env]\n{env}",
            emulator::endpoint(),
            guest("probe").display()
        ),
    )
    .unwrap();
    config
}

/// Runs the probe's `env` op through `machine`: the guest's environment.
fn guest_env(
    runtime: &tokio::runtime::Runtime,
    client: &aws_sdk_sfn::Client,
    machine: &str,
) -> Value {
    let execution = runtime.block_on(emulator::start(client, machine, json!({"op": "env"})));
    let ended = runtime.block_on(emulator::wait(client, &execution, Duration::from_secs(60)));
    ended.output.clone().unwrap_or_else(|| panic!("{ended:?}"))
}

#[test]
fn secrets_reach_new_tasks_and_never_the_log() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = runtime.block_on(emulator::client());
    let secret = format!("sfn-test/api-{:08x}", fastrand::u32(..));
    let parameter = format!("/sfn-test/db-{:08x}", fastrand::u32(..));
    let (key1, key2, db1, db2) = (
        distinct("key"),
        distinct("key"),
        distinct("db"),
        distinct("db"),
    );
    runtime.block_on(async {
        let created = secretsmanager(
            "CreateSecret",
            json!({"Name": secret, "ClientRequestToken": format!("{:032x}", fastrand::u128(..)),
                "SecretString": json!({"key": key1, "other": 1}).to_string()}),
        )
        .await;
        assert!(created["ARN"].is_string(), "{created}");
        ssm(
            "PutParameter",
            json!({"Name": parameter, "Value": db1, "Type": "SecureString"}),
        )
        .await;
    });
    let activity = runtime.block_on(emulator::activity(&client, "secrets"));
    let machine = runtime.block_on(emulator::state_machine(&client, &activity, None));
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_env(
        dir.path(),
        &activity,
        &format!(
            "API_KEY = {{ from_secretsmanager = \"{secret}\", json_key = \"key\", refresh_seconds = 1 }}\n\
             DB_URL = {{ from_ssm = \"{parameter}\", refresh_seconds = 1 }}\n"
        ),
    );
    let env = |runtime: &tokio::runtime::Runtime| guest_env(runtime, &client, &machine);

    // Everything at trace (the AWS SDK's HTTP included), but the compiler's own traces:
    // millions of lines about the handler's machine code.
    let filter =
        "trace,cranelift_codegen=info,cranelift_frontend=info,wasmtime_internal_cranelift=info";
    let mut served = Served::start_with_env(&config, &[("RUST_LOG", filter)]);
    served.wait_for("worker:running");
    let seen = env(&runtime);
    assert_eq!(seen["API_KEY"], key1.as_str(), "{seen}");
    assert_eq!(seen["DB_URL"], db1.as_str(), "{seen}");

    // Rotated: a task started refresh_seconds + 1 s later sees the new values.
    runtime.block_on(async {
        secretsmanager(
            "PutSecretValue",
            json!({"SecretId": secret, "ClientRequestToken": format!("{:032x}", fastrand::u128(..)),
                "SecretString": json!({"key": key2}).to_string()}),
        )
        .await;
        ssm(
            "PutParameter",
            json!({"Name": parameter, "Value": db2, "Type": "SecureString", "Overwrite": true}),
        )
        .await;
    });
    std::thread::sleep(Duration::from_millis(2000));
    let seen = env(&runtime);
    assert_eq!(seen["API_KEY"], key2.as_str(), "{seen}");
    assert_eq!(seen["DB_URL"], db2.as_str(), "{seen}");

    // Deleted: the last good value keeps serving, and the failure is logged.
    runtime.block_on(secretsmanager(
        "DeleteSecret",
        json!({"SecretId": secret, "ForceDeleteWithoutRecovery": true}),
    ));
    let failed = served.wait_until("grants:refresh_failed", |line| line["name"] == "API_KEY");
    assert_eq!(failed["level"], "WARN", "{failed}");
    assert!(
        failed["code"]
            .as_str()
            .is_some_and(|c| c.contains("NotFound")),
        "{failed}"
    );
    let seen = env(&runtime);
    assert_eq!(seen["API_KEY"], key2.as_str(), "{seen}");

    served.terminate();
    served.wait_quiet(Duration::from_millis(200));
    let log = served.text();
    assert!(log.contains("TRACE"), "the log was at trace level");
    for value in [&key1, &key2, &db1, &db2] {
        assert!(
            !log.contains(value.as_str()),
            "a secret's value is in the host's log"
        );
    }
}

#[test]
fn a_missing_secret_stops_check_naming_the_key_and_the_code() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n\
             [[activity]]\narn = \"arn:aws:states:us-east-1:000000000000:activity:secrets\"\nhandler = \"{}\"\n\
             [activity.env]\nAPI_KEY = {{ from_secretsmanager = \"sfn-test/missing-{:08x}\" }}\n",
            emulator::endpoint(),
            guest("probe").display(),
            fastrand::u32(..)
        ),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sfn-wasm-host"))
        .arg("check")
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`activity[0].env.API_KEY`")
            && stderr.contains("ResourceNotFoundException"),
        "{stderr}"
    );
}

/// SIGHUP reads every secret again at once, long before its `refresh_seconds`.
#[test]
fn sighup_reads_every_secret_again() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = runtime.block_on(emulator::client());
    let parameter = format!("/sfn-test/hup-{:08x}", fastrand::u32(..));
    let (first, second) = (distinct("hup"), distinct("hup"));
    runtime.block_on(ssm(
        "PutParameter",
        json!({"Name": parameter, "Value": first, "Type": "SecureString"}),
    ));
    let activity = runtime.block_on(emulator::activity(&client, "secrets-hup"));
    let machine = runtime.block_on(emulator::state_machine(&client, &activity, None));
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_env(
        dir.path(),
        &activity,
        &format!("DB_URL = {{ from_ssm = \"{parameter}\", refresh_seconds = 3600 }}\n"),
    );
    let env = |runtime: &tokio::runtime::Runtime| guest_env(runtime, &client, &machine);
    let mut served = Served::start(&config);
    served.wait_for("worker:running");
    assert_eq!(env(&runtime)["DB_URL"], first.as_str());
    runtime.block_on(ssm(
        "PutParameter",
        json!({"Name": parameter, "Value": second, "Type": "SecureString", "Overwrite": true}),
    ));
    served.signal(rustix::process::Signal::HUP);
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(env(&runtime)["DB_URL"], second.as_str());
    served.terminate();
}
