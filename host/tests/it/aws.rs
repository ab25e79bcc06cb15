//! AWS requests signed by the host (`[activity.aws]`), against LocalStack's S3, SQS and
//! STS through a recording proxy (the host's `[aws] endpoint_url`): the example handler
//! in each language served end to end; what reaches AWS signed by the host, a guest's
//! own signature replaced; services, regions and look-alike hosts not granted refused
//! before anything leaves; an assumed role's credentials.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use sfn_wasm_host::delivery::{AnswerState, Delivery, DeliveryOptions, LocalTransport, Unobserved};
use sfn_wasm_host::engine::{
    Capabilities, EngineConfig, Handler, TaskControl, TaskLimits, TaskRequest, WasmEngine,
};
use sfn_wasm_host::grants::{Grants, GrantsConfig};
use sfn_wasm_host::outbound::{AwsGrant, service_endpoints_from_env};
use sfn_wasm_host::outcome::Answer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::emulator;
use crate::support::guests::guest;
use crate::support::invoke::{Invoked, invoke};
use crate::support::polyglot;
use crate::support::served::Served;

/// The access key `scripts/test.sh` gives the host (LocalStack's `test`).
const HOST_KEY: &str = "test";

/// A TCP proxy in front of LocalStack that keeps every byte clients send, so that a
/// test can read the requests as they reached AWS.
struct Recorder {
    port: u16,
    sent: Arc<Mutex<Vec<u8>>>,
}

impl Recorder {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = emulator::endpoint()
            .trim_start_matches("http://")
            .to_owned();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let log = sent.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(&target).await else {
                    continue;
                };
                let log = log.clone();
                tokio::spawn(async move {
                    let (mut in_read, mut in_write) = inbound.into_split();
                    let (mut out_read, mut out_write) = outbound.into_split();
                    let upstream = async {
                        let mut buf = [0u8; 16384];
                        loop {
                            match in_read.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    log.lock().unwrap().extend_from_slice(&buf[..n]);
                                    if out_write.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = out_write.shutdown().await;
                    };
                    let downstream = async {
                        let _ = tokio::io::copy(&mut out_read, &mut in_write).await;
                        let _ = in_write.shutdown().await;
                    };
                    tokio::join!(upstream, downstream);
                });
            }
        });
        Self { port, sent }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Everything sent so far, lower-cased.
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.sent.lock().unwrap()).to_ascii_lowercase()
    }

    /// The `authorization` header of every request signed for `service`.
    fn authorizations(&self, service: &str) -> Vec<String> {
        let scope = format!("/{service}/aws4_request");
        self.text()
            .lines()
            .filter(|line| line.starts_with("authorization:") && line.contains(&scope))
            .map(str::to_owned)
            .collect()
    }
}

/// An SQS JSON-protocol call to LocalStack, for the test's own setup and checks.
async fn sqs(action: &str, body: Value) -> Value {
    emulator::json_call(&format!("AmazonSQS.{action}"), "1.0", "sqs", body).await
}

/// A fresh bucket holding `key` = `text`, and a fresh queue's URL.
async fn bucket_and_queue(key: &str, text: &str) -> (String, String) {
    let s3 = emulator::s3().await;
    let bucket = format!("aws-grant-{:08x}", fastrand::u32(..));
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    s3.put_object()
        .bucket(&bucket)
        .key(key)
        .body(text.as_bytes().to_vec().into())
        .send()
        .await
        .unwrap();
    let queue = sqs(
        "CreateQueue",
        json!({"QueueName": format!("aws-grant-{:08x}", fastrand::u32(..))}),
    )
    .await;
    let url = queue["QueueUrl"].as_str().expect("a queue URL").to_owned();
    (bucket, url)
}

fn grant(services: &[&str], endpoint: &str) -> AwsGrant {
    AwsGrant {
        services: services.iter().map(|s| (*s).to_owned()).collect(),
        regions: vec!["us-east-1".into()],
        role_arn: None,
        external_id: None,
        host_region: Some("us-east-1".into()),
        endpoint_url: Some(endpoint.to_owned()),
        allow_credential_apis: false,
        private_endpoints: false,
        service_endpoints: Vec::new(),
    }
}

/// Runs the `probe` guest once with `aws`: its answer.
async fn probe(aws: AwsGrant, input: Value) -> AnswerState {
    let engine = WasmEngine::new(EngineConfig {
        max_concurrent_tasks: 2,
        max_memory_bytes: 64 << 20,
        pooling: true,
        ..EngineConfig::default()
    })
    .unwrap();
    let handler = Handler::load_file(&engine, &guest("probe")).unwrap();
    let grants = GrantsConfig {
        aws: Some(aws),
        ..GrantsConfig::default()
    };
    let control = TaskControl::default();
    let request = TaskRequest {
        input: input.to_string(),
        activity_arn: "arn:aws:states:us-east-1:000000000000:activity:aws".into(),
        worker_name: "test:1".into(),
        task_id: "aws".into(),
        limits: TaskLimits {
            memory_bytes: 64 << 20,
            timeout: Duration::from_secs(30),
            heartbeat_every: None,
        },
        control: control.clone(),
        capabilities: Capabilities::none().with(Arc::new(Grants::resolve(&grants).unwrap())),
    };
    let delivery = Delivery::new(
        Arc::new(LocalTransport),
        Arc::new(Unobserved),
        control,
        DeliveryOptions::default(),
    );
    handler.run(&engine, request, delivery.clone()).await;
    delivery.settled().await;
    delivery.state()
}

fn output(state: &AnswerState) -> Value {
    match state.answer() {
        Some(Answer::Success { output }) => serde_json::from_str(output).unwrap(),
        other => panic!("expected a success, got {other:?}"),
    }
}

fn failure(state: &AnswerState) -> (String, String) {
    match state.answer() {
        Some(Answer::Failure { error, cause }) => (error.clone(), cause.clone()),
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// The example handler in Rust (the AWS SDK for Rust, placeholder credentials),
/// JavaScript and Python, served: each reads the object and sends it to the queue with no
/// credentials of its own; every request reached AWS signed with the host's key for its
/// service and region.
#[test]
fn the_three_languages_read_s3_and_write_sqs_signed_by_the_host() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let recorder = runtime.block_on(Recorder::start());
    let (bucket, queue_url) = runtime.block_on(bucket_and_queue("in/object.txt", "from s3"));
    let client = runtime.block_on(emulator::client());
    let handlers = [
        ("rust", guest("aws")),
        ("js", polyglot::component("aws-js")),
        ("py", polyglot::component("aws-py")),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut body = format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n[host]\ncache_dir = \"{}\"\n",
        recorder.endpoint(),
        polyglot::cache_dir().display()
    );
    let mut machines = Vec::new();
    for (language, handler) in &handlers {
        let activity = runtime.block_on(emulator::activity(&client, &format!("aws-{language}")));
        let machine = runtime.block_on(emulator::state_machine(&client, &activity, None));
        body.push_str(&format!(
            "[[activity]]\narn = \"{activity}\"\nhandler = \"{}\"\nmemory_limit_mb = 256\n[activity.aws]\nservices = [\"s3\", \"sqs\"]\n",
            handler.display(),
        ));
        machines.push((*language, machine));
    }
    let config = dir.path().join("config.toml");
    std::fs::write(&config, body).unwrap();
    let mut served = Served::start(&config);
    for _ in &machines {
        served.wait_for("worker:running");
    }
    for (language, machine) in &machines {
        let execution = runtime.block_on(emulator::start(
            &client,
            machine,
            json!({"bucket": bucket, "key": "in/object.txt", "queue_url": queue_url}),
        ));
        let ended = runtime.block_on(emulator::wait(&client, &execution, Duration::from_secs(60)));
        let output = ended.output.clone().unwrap_or_default();
        assert_eq!(output["bytes"], 7, "{language}: {ended:?}");
        assert!(
            output["message_id"]
                .as_str()
                .is_some_and(|id| !id.is_empty()),
            "{language}: {ended:?}"
        );
    }
    served.terminate();

    let received = runtime.block_on(sqs(
        "ReceiveMessage",
        json!({"QueueUrl": queue_url, "MaxNumberOfMessages": 10}),
    ));
    let bodies: Vec<&str> = received["Messages"]
        .as_array()
        .map(|m| m.iter().filter_map(|m| m["Body"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(bodies, ["from s3"; 3], "{received}");

    for service in ["s3", "sqs"] {
        let signed = recorder.authorizations(service);
        assert_eq!(
            signed.len(),
            3,
            "one {service} request per language: {signed:?}"
        );
        for line in &signed {
            assert!(
                line.contains(&format!("credential={HOST_KEY}/"))
                    && line.contains(&format!("/us-east-1/{service}/aws4_request")),
                "{line}"
            );
        }
    }
    // The Rust SDK's own signature, with its placeholder key, never reached AWS.
    assert!(
        !recorder.text().contains("signed-by-the-host"),
        "the guest's placeholder signature was replaced"
    );
    // S3 at an endpoint_url goes path-style, to the bucket's path.
    assert!(
        recorder
            .text()
            .contains(&format!("get /{bucket}/in/object.txt http/1.1")),
        "the object was read path-style"
    );
}

/// What the guest may not do: sign for itself (its headers are replaced), reach a
/// service, region or look-alike host not granted (nothing leaves the host), use plain
/// http to AWS, or read any AWS variable.
#[tokio::test]
async fn the_host_replaces_the_guests_signature_and_refuses_what_is_not_granted() {
    let recorder = Recorder::start().await;
    let (bucket, _) = bucket_and_queue("k", "value").await;
    let aws = grant(&["s3"], &recorder.endpoint());

    let signed = probe(
        aws.clone(),
        json!({
            "op": "request",
            "method": "GET",
            "url": format!("https://s3.us-east-1.amazonaws.com/{bucket}/k"),
            "headers": {
                "authorization": "AWS4-HMAC-SHA256 Credential=GUESTKEY/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=guest",
                "x-amz-security-token": "guest-token",
                "x-amz-date": "20200101T000000Z",
            },
        }),
    )
    .await;
    assert_eq!(output(&signed), json!({"status": 200, "body": "value"}));
    let sent = recorder.text();
    assert!(
        !sent.contains("guestkey")
            && !sent.contains("guest-token")
            && !sent.contains("20200101t000000z"),
        "{sent}"
    );
    let lines = recorder.authorizations("s3");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains(&format!("credential={HOST_KEY}/")),
        "{}",
        lines[0]
    );

    // Virtual-hosted S3 works too, sent path-style to the endpoint.
    let hosted = probe(
        aws.clone(),
        json!({"op": "request", "method": "GET", "url": format!("https://{bucket}.s3.us-east-1.amazonaws.com/k")}),
    )
    .await;
    assert_eq!(output(&hosted), json!({"status": 200, "body": "value"}));

    let before = recorder.text().len();
    for url in [
        "https://sqs.us-east-1.amazonaws.com/".to_owned(),
        format!("https://s3.eu-west-1.amazonaws.com/{bucket}/k"),
        format!("https://s3.us-east-1.amazonaws.com.attacker.test/{bucket}/k"),
        format!(
            "https://amazonaws.com@127.0.0.1:{}/{bucket}/k",
            recorder.port
        ),
        format!("http://s3.us-east-1.amazonaws.com/{bucket}/k"),
        format!("https://s3.us-east-1.amazonaws.com:8443/{bucket}/k"),
    ] {
        let denied = probe(
            aws.clone(),
            json!({"op": "request", "method": "GET", "url": url}),
        )
        .await;
        assert_eq!(failure(&denied).0, "HTTP-request-denied", "{url}");
    }
    assert_eq!(recorder.text().len(), before, "nothing left the host");

    let env = probe(aws, json!({"op": "env"})).await;
    let env = output(&env);
    assert!(
        env.as_object()
            .unwrap()
            .keys()
            .all(|name| !name.starts_with("AWS")),
        "{env}"
    );
    let answer = format!("{:?}{:?}", signed.answer(), hosted.answer());
    assert!(!answer.contains("AKIA") && !answer.to_ascii_lowercase().contains("credential="));
}

/// With `role_arn`, requests are signed with the role's credentials from STS
/// (LocalStack's), not the host's own key.
#[tokio::test]
async fn a_role_signs_with_the_assumed_credentials() {
    let recorder = Recorder::start().await;
    let (bucket, _) = bucket_and_queue("k", "value").await;
    let aws = AwsGrant {
        role_arn: Some("arn:aws:iam::000000000000:role/handler".into()),
        external_id: Some("sfn-wasm-host-test".into()),
        ..grant(&["s3"], &recorder.endpoint())
    };
    let state = probe(
        aws,
        json!({"op": "request", "method": "GET", "url": format!("https://s3.us-east-1.amazonaws.com/{bucket}/k")}),
    )
    .await;
    assert_eq!(output(&state)["status"], 200);
    let sent = recorder.text();
    assert!(
        sent.contains("action=assumerole"),
        "the host called AssumeRole"
    );
    assert!(
        sent.contains("externalid=sfn-wasm-host-test"),
        "with the external id"
    );
    let lines = recorder.authorizations("s3");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        !lines[0].contains(&format!("credential={HOST_KEY}/")),
        "{}",
        lines[0]
    );
    assert!(
        sent.contains("x-amz-security-token:"),
        "the session token is sent"
    );
}

/// The JavaScript example writes a copy from a `Blob`, a body the AWS SDK for JavaScript
/// checksums as a stream (aws-chunked, the CRC32 in a trailer): it reaches S3 whole, with
/// its length and its CRC32 as a header S3 checks, and S3 holds the exact bytes.
#[test]
fn a_blob_body_from_the_js_sdk_reaches_s3_whole_with_its_checksum() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let recorder = runtime.block_on(Recorder::start());
    let text = "not only ASCII: \u{2713}\u{e9}";
    let (bucket, queue_url) = runtime.block_on(bucket_and_queue("in/blob.txt", text));
    let input = json!({
        "bucket": bucket,
        "key": "in/blob.txt",
        "queue_url": queue_url,
        "copy_key": "copies/blob.txt",
    });
    let Invoked { line, code, .. } = invoke(polyglot::component("aws-js"))
        .input(&input.to_string())
        .args(["--memory-limit-mb", "256", "--cache-dir"])
        .arg(polyglot::cache_dir())
        .args(["--aws-service", "s3", "--aws-service", "sqs"])
        .args(["--aws-region", "us-east-1", "--aws-endpoint-url"])
        .arg(recorder.endpoint())
        .run();
    assert_eq!(code, 0, "{line}");
    assert_eq!(line["output"]["bytes"], text.len(), "{line}");
    let copy = runtime.block_on(async {
        let s3 = emulator::s3().await;
        let object = s3
            .get_object()
            .bucket(&bucket)
            .key("copies/blob.txt")
            .send()
            .await
            .unwrap();
        object.body.collect().await.unwrap().into_bytes()
    });
    assert_eq!(&copy[..], text.as_bytes());
    let sent = recorder.text();
    let put = sent
        .split("\r\n\r\n")
        .find(|head| head.contains(&format!("put /{bucket}/copies/blob.txt")))
        .unwrap_or_else(|| panic!("no PutObject of the copy in {sent}"));
    assert!(put.contains("x-amz-checksum-crc32: "), "{put}");
    assert!(
        put.contains(&format!("content-length: {}", text.len())),
        "{put}"
    );
    assert!(
        !put.contains("aws-chunked") && !put.contains("x-amz-trailer"),
        "{put}"
    );
}

/// `invoke --aws-service` grants as `[activity.aws] services` does: the Rust example
/// (the AWS SDK for Rust) runs with both services and is refused SQS without it.
#[test]
fn invoke_takes_the_aws_grant_as_flags() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (bucket, queue_url) = runtime.block_on(bucket_and_queue("in.txt", "flags"));
    let input = json!({"bucket": bucket, "key": "in.txt", "queue_url": queue_url}).to_string();
    let with_services = |services: &[&str]| {
        let run = services.iter().fold(
            invoke(guest("aws"))
                .input(&input)
                .args(["--aws-region", "us-east-1"])
                .args(["--aws-endpoint-url", &emulator::endpoint()]),
            |run, service| run.args(["--aws-service", service]),
        );
        // Nothing on stdout fails the assertions below (as before: `Null`).
        let Invoked { line, code, .. } = run.may_print_nothing().run();
        (line, Some(code))
    };
    let (line, code) = with_services(&["s3", "sqs"]);
    assert_eq!(line["output"]["bytes"], 5, "{line}");
    assert_eq!(code, Some(0));
    let (line, code) = with_services(&["s3"]);
    assert_eq!(line["error"], "HTTP-request-denied", "{line}");
    assert_eq!(code, Some(1));
}

/// Issue 34, class 5: an `sts` grant does not hand the guest credentials. `AssumeRole`
/// (by its form `Action`) and `GetSessionToken` (by its query) are refused before anything
/// leaves the host, while `GetCallerIdentity` is signed and sent; with
/// `allow_credential_apis` the activity may call them.
#[tokio::test]
async fn apis_that_return_credentials_are_not_signed_unless_allowed() {
    let recorder = Recorder::start().await;
    let aws = grant(&["sts"], &recorder.endpoint());
    let form = json!({"content-type": "application/x-www-form-urlencoded"});
    let assume = |aws: AwsGrant| {
        probe(
            aws,
            json!({
                "op": "request", "method": "POST", "url": "https://sts.us-east-1.amazonaws.com/",
                "headers": form,
                "body": "Action=AssumeRole&Version=2011-06-15&RoleArn=arn:aws:iam::000000000000:role/x&RoleSessionName=guest",
            }),
        )
    };
    let refused = assume(aws.clone()).await;
    assert_eq!(failure(&refused).0, "HTTP-request-denied", "{refused:?}");
    let query = probe(
        aws.clone(),
        json!({"op": "request", "method": "GET", "url": "https://sts.us-east-1.amazonaws.com/?Action=GetSessionToken&Version=2011-06-15"}),
    )
    .await;
    assert_eq!(failure(&query).0, "HTTP-request-denied", "{query:?}");
    assert!(
        recorder.authorizations("sts").is_empty(),
        "nothing was sent: {}",
        recorder.text()
    );

    let who = probe(
        aws.clone(),
        json!({
            "op": "request", "method": "POST", "url": "https://sts.us-east-1.amazonaws.com/",
            "headers": form, "body": "Action=GetCallerIdentity&Version=2011-06-15",
        }),
    )
    .await;
    assert_eq!(output(&who)["status"], 200, "{who:?}");

    let allowed = assume(AwsGrant {
        allow_credential_apis: true,
        ..aws
    })
    .await;
    assert_eq!(output(&allowed)["status"], 200, "{allowed:?}");
}

/// Issue 34, class 5: `regions` holds for global endpoints too. An S3 grant for
/// `eu-west-1` does not reach `BUCKET.s3.amazonaws.com` or `s3.amazonaws.com`, which are
/// signed for `us-east-1`.
#[tokio::test]
async fn a_grant_for_other_regions_does_not_reach_global_endpoints() {
    let recorder = Recorder::start().await;
    let aws = AwsGrant {
        regions: vec!["eu-west-1".into()],
        ..grant(&["s3"], &recorder.endpoint())
    };
    for url in [
        "https://anybucket.s3.amazonaws.com/k",
        "https://s3.amazonaws.com/anybucket/k",
    ] {
        let state = probe(
            aws.clone(),
            json!({"op": "request", "method": "GET", "url": url}),
        )
        .await;
        assert_eq!(failure(&state).0, "HTTP-request-denied", "{url}: {state:?}");
    }
    assert!(
        recorder.authorizations("s3").is_empty(),
        "{}",
        recorder.text()
    );
}

/// Issue 34, class 5: one service to its own endpoint (a VPC endpoint, an emulator), the
/// others to AWS: a guest's S3 request goes where `AWS_ENDPOINT_URL_S3` says, signed for
/// S3, with no `[aws] endpoint_url` rerouting everything.
#[tokio::test]
async fn a_service_endpoint_variable_routes_that_service_alone() {
    let recorder = Recorder::start().await;
    let (bucket, _) = bucket_and_queue("k", "value").await;
    let aws = AwsGrant {
        endpoint_url: None,
        service_endpoints: service_endpoints_from_env(&["s3".into(), "sqs".into()], |name| {
            (name == "AWS_ENDPOINT_URL_S3").then(|| recorder.endpoint())
        }),
        ..grant(&["s3", "sqs"], "unused")
    };
    let state = probe(
        aws,
        json!({"op": "request", "method": "GET", "url": format!("https://{bucket}.s3.us-east-1.amazonaws.com/k")}),
    )
    .await;
    assert_eq!(output(&state), json!({"status": 200, "body": "value"}));
    assert_eq!(
        recorder.authorizations("s3").len(),
        1,
        "{}",
        recorder.text()
    );
}

/// The host's own clients follow the same variables (the AWS SDK reads them): with no
/// `[aws] endpoint_url`, `AWS_ENDPOINT_URL_SFN` alone sends polls and answers to the
/// emulator.
#[test]
fn the_hosts_clients_follow_a_service_endpoint_variable() {
    let (runtime, client, activity, state_machine) = emulator::emulated("per-service");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[aws]\nregion = \"us-east-1\"\n[host]\ncache = false\n[[activity]]\narn = \"{activity}\"\nhandler = \"{}\"\n",
            guest("greet").display()
        ),
    )
    .unwrap();
    let endpoint = emulator::endpoint();
    let mut served = Served::start_with_env(&config, &[("AWS_ENDPOINT_URL_SFN", &endpoint)]);
    served.wait_for("worker:running");
    let execution = runtime.block_on(emulator::start(
        &client,
        &state_machine,
        json!({"hello": "SFN"}),
    ));
    let ended = runtime.block_on(emulator::wait(&client, &execution, Duration::from_secs(60)));
    assert_eq!(
        ended.output,
        Some(json!({"greeting": "Hello, SFN"})),
        "{ended:?}"
    );
    served.terminate();
}
