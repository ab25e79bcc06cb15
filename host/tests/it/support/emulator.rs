//! The Step Functions emulator (LocalStack) that `scripts/test.sh` starts, and helpers to
//! make fresh activities and state machines in it.

use std::path::Path;
use std::time::{Duration, Instant};

use aws_sdk_sfn::Client;
use aws_sdk_sfn::types::ExecutionStatus;
use serde_json::json;

/// The emulator's endpoint. The tests that need it fail (not skip) without it.
pub fn endpoint() -> String {
    std::env::var("LOCALSTACK_ENDPOINT").expect(
        "LOCALSTACK_ENDPOINT is not set: run the suite with scripts/test.sh, which starts LocalStack",
    )
}

/// A client for the emulator, as the tests' own view of Step Functions.
pub async fn client() -> Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint())
        .region(aws_config::Region::new("us-east-1"))
        .load()
        .await;
    Client::new(&config)
}

/// A call to one of the emulator's JSON-protocol APIs (`AmazonSQS.CreateQueue` with
/// `application/x-amz-json-1.0`, `secretsmanager.PutSecretValue` and
/// `AmazonSSM.PutParameter` with `1.1`), for the tests' own setup and checks: its JSON
/// reply.
pub async fn json_call(
    target: &str,
    json_version: &str,
    service: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    use http_body_util::BodyExt;
    let endpoint = endpoint();
    let address = endpoint.trim_start_matches("http://").to_owned();
    let stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = http::Request::post(format!("{endpoint}/"))
        .header("host", address)
        .header("x-amz-target", target)
        .header("content-type", format!("application/x-amz-json-{json_version}"))
        .header(
            "authorization",
            format!("AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0"),
        )
        .body(http_body_util::Full::new(bytes::Bytes::from(body.to_string())))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)
}

/// An S3 client for the emulator (path-style, as LocalStack serves buckets).
pub async fn s3() -> aws_sdk_s3::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint())
        .region(aws_config::Region::new("us-east-1"))
        .load()
        .await;
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(true)
            .build(),
    )
}

/// A fresh, uniquely named activity (LocalStack keeps stale tasks per activity).
pub async fn activity(client: &Client, name: &str) -> String {
    let name = format!("{name}-{:08x}", fastrand::u32(..));
    client
        .create_activity()
        .name(name)
        .send()
        .await
        .expect("create activity")
        .activity_arn
}

/// A state machine with one task state on `activity_arn`.
///
/// The task state always has `HeartbeatSeconds` (60 unless given): LocalStack answers
/// `SendTaskHeartbeat` with `InvalidToken` for a state without it, where AWS accepts it.
pub async fn state_machine(
    client: &Client,
    activity_arn: &str,
    heartbeat_seconds: Option<u32>,
) -> String {
    state_machine_timed(client, activity_arn, heartbeat_seconds, 120).await
}

/// [`state_machine`] with the task state's `TimeoutSeconds`.
pub async fn state_machine_timed(
    client: &Client,
    activity_arn: &str,
    heartbeat_seconds: Option<u32>,
    timeout_seconds: u32,
) -> String {
    let task = json!({
        "Type": "Task", "Resource": activity_arn, "TimeoutSeconds": timeout_seconds,
        "HeartbeatSeconds": heartbeat_seconds.unwrap_or(60), "End": true,
    });
    state_machine_of(client, &task).await
}

/// A state machine whose one state is `task` (a Task state's JSON, with `End`).
pub async fn state_machine_of(client: &Client, task: &serde_json::Value) -> String {
    let definition = json!({"StartAt": "Work", "States": {"Work": task}});
    client
        .create_state_machine()
        .name(format!("sm-{:08x}", fastrand::u32(..)))
        .definition(definition.to_string())
        .role_arn("arn:aws:iam::000000000000:role/sfn-wasm-host-tests")
        .send()
        .await
        .expect("create state machine")
        .state_machine_arn
}

/// Starts an execution with `input`.
pub async fn start(client: &Client, state_machine: &str, input: serde_json::Value) -> String {
    client
        .start_execution()
        .state_machine_arn(state_machine)
        .input(input.to_string())
        .send()
        .await
        .expect("start execution")
        .execution_arn
}

/// How an execution ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub status: ExecutionStatus,
    pub output: Option<serde_json::Value>,
    pub error: Option<String>,
    pub cause: Option<String>,
}

/// Waits until the execution is no longer running (at most `limit`).
pub async fn wait(client: &Client, execution: &str, limit: Duration) -> Ended {
    let started = Instant::now();
    loop {
        let described = client
            .describe_execution()
            .execution_arn(execution)
            .send()
            .await
            .expect("describe");
        if described.status != ExecutionStatus::Running {
            return Ended {
                status: described.status,
                output: described
                    .output
                    .map(|o| serde_json::from_str(&o).expect("output is JSON")),
                error: described.error,
                cause: described.cause,
            };
        }
        assert!(
            started.elapsed() < limit,
            "{execution} still running after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A runtime for the test's own calls, a client, and a fresh activity with its state
/// machine in the emulator.
pub fn emulated(name: &str) -> (tokio::runtime::Runtime, aws_sdk_sfn::Client, String, String) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = runtime.block_on(client());
    let activity = runtime.block_on(activity(&client, name));
    let state_machine = runtime.block_on(state_machine(&client, &activity, None));
    (runtime, client, activity, state_machine)
}

/// [`emulated`], with a state machine whose one state is `task(activity ARN)` (a Task
/// state's JSON, with `End`).
pub fn emulated_with(
    name: &str,
    task: impl FnOnce(&str) -> serde_json::Value,
) -> (tokio::runtime::Runtime, aws_sdk_sfn::Client, String, String) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = runtime.block_on(client());
    let activity = runtime.block_on(activity(&client, name));
    let state_machine = runtime.block_on(state_machine_of(&client, &task(&activity)));
    (runtime, client, activity, state_machine)
}

/// An S3 client for the emulator, and a fresh bucket.
pub fn bucket(runtime: &tokio::runtime::Runtime) -> (aws_sdk_s3::Client, String) {
    runtime.block_on(async {
        let s3 = s3().await;
        let name = format!("handlers-{:08x}", fastrand::u32(..));
        s3.create_bucket()
            .bucket(&name)
            .send()
            .await
            .expect("create bucket");
        (s3, name)
    })
}

pub fn upload(
    runtime: &tokio::runtime::Runtime,
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    wasm: &Path,
) {
    let bytes = std::fs::read(wasm).unwrap();
    runtime.block_on(async {
        s3.put_object()
            .bucket(bucket)
            .key(key)
            .body(bytes.into())
            .send()
            .await
            .expect("put object");
    });
}
