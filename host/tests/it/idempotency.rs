//! Idempotent tasks (`[activity.idempotency]`) against LocalStack's Step Functions and
//! S3 and a folder store, with the real `scenarios` component: the guest runs once per
//! key; a duplicate that comes while the first runs gets `SfnWasmHost.Duplicate` and,
//! retried, the stored answer.

use std::time::Duration;

use aws_sdk_sfn::types::ExecutionStatus;
use serde_json::{Value, json};

use crate::support::emulator;
use crate::support::guests::guest;
use crate::support::served::{self, Served};

/// A task state that retries `SfnWasmHost.Duplicate` every second.
pub fn retrying_duplicates(activity: &str) -> Value {
    json!({
        "Type": "Task", "Resource": activity, "TimeoutSeconds": 120, "HeartbeatSeconds": 60,
        "Retry": [{"ErrorEquals": ["SfnWasmHost.Duplicate"], "IntervalSeconds": 1,
                   "MaxAttempts": 10, "BackoffRate": 1.0}],
        "End": true,
    })
}

fn exercise(store: &str) {
    let (runtime, client, activity, machine) = emulator::emulated_with("once", retrying_duplicates);
    let dir = tempfile::tempdir().unwrap();
    let config = served::config(
        dir.path(),
        &emulator::endpoint(),
        &activity,
        &guest("scenarios"),
        &format!("workers = 2\n[activity.idempotency]\nkey = \"/orderId\"\nstore = \"{store}\""),
        "",
    );
    let mut served = Served::start(&config);
    served.wait_for("worker:running");
    let start = |input: Value| runtime.block_on(emulator::start(&client, &machine, input));
    let output = |execution: &str| {
        let ended = runtime.block_on(emulator::wait(&client, execution, Duration::from_secs(60)));
        assert_eq!(ended.status, ExecutionStatus::Succeeded, "{ended:?}");
        ended.output.unwrap()
    };
    let slow = json!({"hello": "Sleep", "ms": 1500, "orderId": "o-1"});

    // Two at once: one runs; the other gets SfnWasmHost.Duplicate, and retried, the
    // stored answer.
    let first = start(slow.clone());
    served.wait_for("task:start");
    let second = start(slow.clone());
    assert_eq!(output(&first), json!({"slept_ms": 1500}));
    assert_eq!(output(&second), json!({"slept_ms": 1500}));
    // Later, the same key again: answered from the store, not run.
    assert_eq!(output(&start(slow.clone())), json!({"slept_ms": 1500}));
    // Another key runs.
    assert_eq!(
        output(&start(json!({"hello": "World", "orderId": "o-2"}))),
        json!({"greeting": "Hello, World"})
    );
    served.wait_quiet(Duration::from_millis(300));
    assert_eq!(
        served
            .events()
            .iter()
            .filter(|e| *e == "task:start")
            .count(),
        2,
        "the guest ran once per key: {:?}",
        served.events()
    );
    let done: Vec<&Value> = served
        .lines()
        .iter()
        .filter(|l| l["event"] == "task:done")
        .collect();
    assert!(
        done.iter().any(|d| d["error"] == "SfnWasmHost.Duplicate"),
        "{done:?}"
    );
    let deduplicated = done.iter().filter(|d| d["deduplicated"] == true).count();
    assert_eq!(
        deduplicated, 2,
        "the retried duplicate and the later one: {done:?}"
    );
    assert!(
        done.iter()
            .filter(|d| d["deduplicated"] == true)
            .all(|d| d["outcome"] == "success"),
        "{done:?}"
    );
}

#[test]
fn a_key_runs_once_with_a_folder_store() {
    let dir = tempfile::tempdir().unwrap();
    exercise(&dir.path().join("answers").display().to_string());
}

#[test]
fn a_key_runs_once_with_an_s3_store() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let s3 = runtime.block_on(emulator::s3());
    let bucket = format!("once-{:08x}", fastrand::u32(..));
    runtime
        .block_on(s3.create_bucket().bucket(&bucket).send())
        .expect("create bucket");
    exercise(&format!("s3://{bucket}/answers"));
}

/// The S3 store's conditional writes, against LocalStack: the first claim of a name
/// takes it (`If-None-Match: *`), the second finds it taken; a replace conditional on the
/// version read (`If-Match` on its ETag) is won once, and one on an older version or a
/// missing name is not.
#[test]
fn the_s3_store_claims_a_name_once() {
    use sfn_wasm_host::store::{Claimed, S3Store, Store};
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let s3 = runtime.block_on(emulator::s3());
    let bucket = format!("claims-{:08x}", fastrand::u32(..));
    runtime
        .block_on(s3.create_bucket().bucket(&bucket).send())
        .expect("create bucket");
    let aws: sfn_wasm_host::config::AwsConfig = toml::from_str(&format!(
        "region = \"us-east-1\"\nendpoint_url = \"{}\"",
        emulator::endpoint()
    ))
    .unwrap();
    let store = S3Store::new(&aws, &bucket, "p");
    runtime.block_on(async {
        assert_eq!(store.get("n").await.unwrap(), None);
        let Claimed::Yes(first) = store.put_if_absent("n", b"one").await.unwrap() else {
            panic!("the name was free");
        };
        assert_eq!(
            store.put_if_absent("n", b"two").await.unwrap(),
            Claimed::AlreadyTaken
        );
        let read = store.read("n").await.unwrap().unwrap();
        assert_eq!((read.data.as_slice(), &read.version), (&b"one"[..], &first));
        let Claimed::Yes(second) = store.put_if_match("n", b"two", &first).await.unwrap() else {
            panic!("the version read is replaced");
        };
        assert_ne!(second, first);
        assert_eq!(
            store.put_if_match("n", b"three", &first).await.unwrap(),
            Claimed::AlreadyTaken,
            "an older version is not replaced"
        );
        assert_eq!(store.get("n").await.unwrap().as_deref(), Some(&b"two"[..]));
        assert_eq!(
            store.put_if_match("missing", b"x", &second).await.unwrap(),
            Claimed::AlreadyTaken
        );
        store.delete("n").await.unwrap();
        assert!(matches!(
            store.put_if_absent("n", b"three").await.unwrap(),
            Claimed::Yes(_)
        ));
    });
    let keys = runtime
        .block_on(s3.list_objects_v2().bucket(&bucket).send())
        .unwrap();
    let keys: Vec<_> = keys.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["p/n"]);
}

/// A store that cannot be used loses no task: with both stores in a bucket that does not
/// exist, a task runs as if it had no key (`idempotency:unavailable`, warn, with the
/// code), and a checkpoint returns `unavailable` with the store's code to the guest.
#[test]
fn an_unusable_store_loses_no_task() {
    let (runtime, client, activity, machine) = emulator::emulated("nostore");
    let dir = tempfile::tempdir().unwrap();
    let bucket = format!("missing-{:08x}", fastrand::u32(..));
    let config = served::config(
        dir.path(),
        &emulator::endpoint(),
        &activity,
        &guest("scenarios"),
        &format!(
            "[activity.idempotency]\nkey = \"/orderId\"\nstore = \"s3://{bucket}/a\"\n\
             [activity.progress]\nkey = \"/orderId\"\nstore = \"s3://{bucket}/p\""
        ),
        "",
    );
    let mut served = Served::start(&config);
    served.wait_for("worker:running");
    let run = |input: Value| {
        let execution = runtime.block_on(emulator::start(&client, &machine, input));
        runtime.block_on(emulator::wait(&client, &execution, Duration::from_secs(60)))
    };
    let ended = run(json!({"hello": "World", "orderId": "o-1"}));
    assert_eq!(ended.status, ExecutionStatus::Succeeded, "{ended:?}");
    let warned = served.wait_for("idempotency:unavailable");
    assert_eq!(warned["level"], "WARN", "{warned}");
    assert_eq!(warned["code"], "NoSuchBucket", "{warned}");
    let ended = run(json!({"hello": "Count", "orderId": "o-2"}));
    assert_eq!(ended.status, ExecutionStatus::Failed, "{ended:?}");
    assert_eq!(ended.error.as_deref(), Some("SfnWasmHost.HandlerError"));
    let cause = ended.cause.unwrap_or_default();
    assert!(
        cause.contains("Unavailable") && cause.contains("NoSuchBucket"),
        "{cause}"
    );
}
