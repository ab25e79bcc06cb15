//! The Step Functions emulator (LocalStack) that `scripts/test.sh` starts, and helpers to
//! make fresh activities and state machines in it.

use std::path::Path;
use std::time::{Duration, Instant};

use aws_sdk_sfn::Client;
use aws_sdk_sfn::types::ExecutionStatus;
use aws_sdk_sqs::types::QueueAttributeName;
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
    state_machine_from(
        client,
        &json!({"StartAt": "Work", "States": {"Work": task}}),
    )
    .await
}

/// A state machine of `definition` (Amazon States Language).
pub async fn state_machine_from(client: &Client, definition: &serde_json::Value) -> String {
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

// Callback tasks: SQS queues, and state machines that send their tasks to one.

/// An SQS client for the emulator.
pub async fn sqs() -> aws_sdk_sqs::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint())
        .region(aws_config::Region::new("us-east-1"))
        .load()
        .await;
    aws_sdk_sqs::Client::new(&config)
}

/// A fresh queue (FIFO when `fifo`), with a dead-letter queue after `max_receives`
/// receives: the queue's URL and its dead-letter queue's.
pub async fn queue(sqs: &aws_sdk_sqs::Client, fifo: bool, max_receives: u32) -> (String, String) {
    let suffix = if fifo { ".fifo" } else { "" };
    let name = format!("tasks-{:08x}", fastrand::u32(..));
    let mut dlq = sqs.create_queue().queue_name(format!("{name}-dlq{suffix}"));
    if fifo {
        dlq = dlq.attributes(QueueAttributeName::FifoQueue, "true");
    }
    let dlq_url = dlq.send().await.expect("create dlq").queue_url.unwrap();
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("dlq arn")
        .attributes
        .unwrap()[&QueueAttributeName::QueueArn]
        .clone();
    let redrive = json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receives});
    let mut create = sqs
        .create_queue()
        .queue_name(format!("{name}{suffix}"))
        .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string());
    if fifo {
        create = create
            .attributes(QueueAttributeName::FifoQueue, "true")
            .attributes(QueueAttributeName::ContentBasedDeduplication, "true");
    }
    let url = create
        .send()
        .await
        .expect("create queue")
        .queue_url
        .unwrap();
    (url, dlq_url)
}

/// A state machine whose task sends `{"TaskToken": ..., "hello": ..., "ms": ...}` to
/// `queue_url` and waits for its token; `InvalidName` is caught (`{"caught": ERROR}`).
/// The state has `HeartbeatSeconds` (LocalStack refuses a heartbeat without it).
pub async fn callback_machine(
    client: &aws_sdk_sfn::Client,
    queue_url: &str,
    heartbeat_seconds: u32,
    fifo: bool,
) -> String {
    let mut parameters = json!({
        "QueueUrl": queue_url,
        "MessageBody": {"TaskToken.$": "$$.Task.Token", "hello.$": "$.hello", "ms.$": "$.ms"},
    });
    if fifo {
        parameters["MessageGroupId"] = json!("group");
    }
    let definition = json!({
        "StartAt": "Work",
        "States": {
            "Work": {
                "Type": "Task",
                "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
                "Parameters": parameters,
                "HeartbeatSeconds": heartbeat_seconds,
                "TimeoutSeconds": 120,
                "Catch": [{"ErrorEquals": ["InvalidName"], "ResultPath": "$.caught", "Next": "Caught"}],
                "End": true,
            },
            "Caught": {"Type": "Pass", "OutputPath": "$.caught", "End": true},
        },
    });
    state_machine_from(client, &definition).await
}

/// Messages the queue holds, visible and in flight.
pub async fn held(sqs: &aws_sdk_sqs::Client, url: &str) -> (u64, u64) {
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .expect("queue attributes")
        .attributes
        .unwrap();
    let count = |name: QueueAttributeName| -> u64 { attributes[&name].parse().unwrap() };
    (
        count(QueueAttributeName::ApproximateNumberOfMessages),
        count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    )
}

/// Waits until the queue holds nothing (at most 30 s).
pub async fn drained(sqs: &aws_sdk_sqs::Client, url: &str) {
    let started = Instant::now();
    while held(sqs, url).await != (0, 0) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{url} still holds {:?}",
            held(sqs, url).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Receives the state machine's message of `url` as another worker would (without
/// deleting it, visible again at once): its body.
pub async fn take_a_look(sqs: &aws_sdk_sqs::Client, url: &str) -> String {
    let started = Instant::now();
    loop {
        let received = sqs
            .receive_message()
            .queue_url(url)
            .visibility_timeout(0)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        if let Some(message) = received.messages.unwrap_or_default().pop() {
            return message.body.unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no message");
    }
}

/// The message body the callback state of execution `exec` sent (from its history's
/// `TaskScheduled` event), waiting for it up to 20 s.
pub async fn scheduled_message(client: &Client, exec: &str) -> String {
    let started = Instant::now();
    loop {
        let history = client
            .get_execution_history()
            .execution_arn(exec)
            .send()
            .await
            .unwrap();
        let scheduled = history.events.iter().find_map(|e| {
            e.task_scheduled_event_details()
                .map(|d| d.parameters.clone())
        });
        if let Some(parameters) = scheduled {
            let parameters: serde_json::Value = serde_json::from_str(&parameters).unwrap();
            return parameters["MessageBody"].to_string();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{exec} sent no message"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
