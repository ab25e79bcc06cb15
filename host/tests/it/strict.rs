//! The host against a strict AWS counterpart (issue 35): the emulator `scripts/test.sh`
//! starts beside LocalStack (`scripts/strict_aws.py`, moto) checks every SigV4 signature
//! and evaluates identity policies as AWS does, and fronts LocalStack's Step Functions
//! with the same checks. Each test runs the host as an IAM user whose policy is exactly
//! the book's block for the feature (read from `docs/src/permissions.md`, the chapter
//! "Permissions (IAM)" the README points to, so the docs cannot drift),
//! then one permission short, to see AWS's refusal reach the operator naming it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use aws_sdk_sfn::types::ExecutionStatus;
use serde_json::{Value, json};

use crate::support::emulator;
use crate::support::guests::{guest, workspace};
use crate::support::served::{self, Served};

/// The region the tests sign for.
pub const REGION: &str = "us-east-1";
/// The account of the emulator's own resources (S3, IAM, Secrets Manager, SSM).
pub const ACCOUNT: &str = "123456789012";
/// The account of LocalStack's Step Functions resources (activity ARNs).
pub const SFN_ACCOUNT: &str = "000000000000";

/// The strict emulator's endpoint. The tests that need it fail (not skip) without it.
pub fn strict_endpoint() -> String {
    std::env::var("STRICT_AWS_ENDPOINT").expect(
        "STRICT_AWS_ENDPOINT is not set: run the suite with scripts/test.sh, which starts the \
         strict AWS emulator (or source scripts/lib/strict_aws.sh and run strict_aws_start)",
    )
}

/// The emulator's admin credentials (an `*` policy), for the tests' own setup.
pub fn admin() -> (String, String) {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: run the suite with scripts/test.sh (strict_aws_start)")
        })
    };
    (
        var("STRICT_AWS_ADMIN_KEY_ID"),
        var("STRICT_AWS_ADMIN_SECRET"),
    )
}

/// The Python of the strict emulator's venv (it has boto3, which moto pulls in).
fn python() -> PathBuf {
    std::env::var_os("STRICT_AWS_PYTHON").map_or_else(
        || workspace().join(".venv/strict-aws/bin/python"),
        PathBuf::from,
    )
}

/// The chapter of the book that holds the IAM policy blocks ("Permissions (IAM)", which
/// the README and the host's messages point to as "the README's ... policy").
pub const PERMISSIONS: &str = "docs/src/permissions.md";

/// The text of the book's permissions chapter ([`PERMISSIONS`]).
fn permissions_chapter() -> String {
    std::fs::read_to_string(workspace().join(PERMISSIONS))
        .unwrap_or_else(|e| panic!("{PERMISSIONS}: {e}"))
}

/// The documented IAM policy block `name` (after `<!-- iam-policy: NAME -->` in
/// [`PERMISSIONS`]), with each placeholder (`BUCKET`, `PREFIX`, `ACCOUNT`, ...) replaced
/// as `substitutions` say.
pub fn readme_policy(name: &str, substitutions: &[(&str, &str)]) -> String {
    readme_policy_in(&permissions_chapter(), name, substitutions)
}

fn readme_policy_in(readme: &str, name: &str, substitutions: &[(&str, &str)]) -> String {
    let marker = format!("<!-- iam-policy: {name} -->");
    let at = readme
        .find(&marker)
        .unwrap_or_else(|| panic!("{PERMISSIONS} has no `{marker}` policy block"));
    let rest = readme[at + marker.len()..].trim_start();
    let body = rest
        .strip_prefix("```json\n")
        .unwrap_or_else(|| panic!("`{marker}` is not followed by a ```json block"));
    let end = body
        .find("\n```")
        .unwrap_or_else(|| panic!("`{marker}`'s block has no end"));
    let mut policy = body[..end].to_owned();
    for (placeholder, value) in substitutions {
        policy = policy.replace(placeholder, value);
    }
    let parsed: Value = serde_json::from_str(&policy)
        .unwrap_or_else(|e| panic!("`{marker}`'s block is not JSON ({e}): {policy}"));
    assert!(
        !policy
            .chars()
            .collect::<Vec<_>>()
            .windows(6)
            .any(|w| w.iter().all(|c| c.is_ascii_uppercase())),
        "a placeholder of `{name}` was not substituted: {policy}"
    );
    parsed.to_string()
}

/// One policy holding the statements of all `policies`.
pub fn union(policies: &[&str]) -> String {
    let statements: Vec<Value> = policies
        .iter()
        .flat_map(|p| {
            let p: Value = serde_json::from_str(p).unwrap();
            match &p["Statement"] {
                Value::Array(all) => all.clone(),
                one => vec![one.clone()],
            }
        })
        .collect();
    json!({"Version": "2012-10-17", "Statement": statements}).to_string()
}

/// `policy` with `action` taken out of every statement (a statement left with no action
/// goes): the policy one permission short.
pub fn without_action(policy: &str, action: &str) -> String {
    let mut policy: Value = serde_json::from_str(policy).unwrap();
    let mut removed = false;
    let statements = match policy["Statement"].take() {
        Value::Array(all) => all,
        one => vec![one],
    };
    let kept: Vec<Value> = statements
        .into_iter()
        .filter_map(|mut statement| {
            let actions: Vec<Value> = match statement["Action"].take() {
                Value::Array(all) => all,
                one => vec![one],
            };
            let left: Vec<Value> = actions
                .into_iter()
                .filter(|a| {
                    let hit = a.as_str() == Some(action);
                    removed |= hit;
                    !hit
                })
                .collect();
            if left.is_empty() {
                return None;
            }
            statement["Action"] = Value::Array(left);
            Some(statement)
        })
        .collect();
    assert!(removed, "the policy does not grant {action}");
    policy["Statement"] = Value::Array(kept);
    policy.to_string()
}

/// A fresh IAM user holding exactly `policy` (inline): its access key id and secret.
pub fn user_with_policy(policy: &str) -> (String, String) {
    let (key, secret) = admin();
    let script = r#"
import json, sys, uuid, boto3
endpoint, key, secret, policy = sys.argv[1:5]
iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                   aws_access_key_id=key, aws_secret_access_key=secret)
name = "host-" + uuid.uuid4().hex[:12]
iam.create_user(UserName=name)
iam.put_user_policy(UserName=name, PolicyName="least-privilege", PolicyDocument=policy)
made = iam.create_access_key(UserName=name)["AccessKey"]
print(json.dumps([made["AccessKeyId"], made["SecretAccessKey"]]))
"#;
    let output = Command::new(python())
        .args(["-c", script, &strict_endpoint(), &key, &secret, policy])
        .output()
        .expect("run the strict emulator's Python");
    assert!(
        output.status.success(),
        "creating a user failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (key, secret): (String, String) = serde_json::from_slice(&output.stdout).unwrap();
    (key, secret)
}

/// SDK settings for the strict emulator with `key`/`secret`.
pub async fn sdk_config(key: &str, secret: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(strict_endpoint())
        .region(aws_config::Region::new(REGION))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            key, secret, None, None, "strict",
        ))
        .load()
        .await
}

/// An S3 client of the strict emulator (path-style, as the host's with `endpoint_url`).
pub async fn s3(key: &str, secret: &str) -> aws_sdk_s3::Client {
    let config = sdk_config(key, secret).await;
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(true)
            .build(),
    )
}

/// A fresh bucket holding `objects` (key, bytes), made by the admin: its name.
pub async fn bucket_with(objects: &[(&str, Vec<u8>)]) -> String {
    let (key, secret) = admin();
    let s3 = s3(&key, &secret).await;
    let bucket = format!("strict-{:08x}", fastrand::u32(..));
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    for (name, data) in objects {
        s3.put_object()
            .bucket(&bucket)
            .key(*name)
            .body(data.clone().into())
            .send()
            .await
            .unwrap();
    }
    bucket
}

/// `sfn-wasm-host ARGS` with the host's credentials `key`/`secret`: its output.
fn host(args: &[&str], config: &Path, (key, secret): (&str, &str)) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sfn-wasm-host"))
        .args(args)
        .arg(config)
        .env("AWS_ACCESS_KEY_ID", key)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_REGION", REGION)
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap()
}

/// The code of an SDK error (the service's, else the error's text).
fn code<E: aws_sdk_s3::error::ProvideErrorMetadata + std::fmt::Debug>(error: &E) -> String {
    error
        .code()
        .map_or_else(|| format!("{error:?}"), str::to_owned)
}

/// AWS rule: every request is authenticated. A wrong secret is refused with
/// `SignatureDoesNotMatch`, an unknown key with `InvalidAccessKeyId` (S3) /
/// `InvalidClientTokenId` (STS); the right ones pass. Guards the emulator itself: were it
/// to accept anything, every other test here would prove nothing.
#[test]
fn a_wrong_secret_or_an_unknown_key_is_refused() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (key, secret) = admin();
    runtime.block_on(async {
        let s3_of = |k: String, s: String| async move { s3(&k, &s).await };
        let bucket = bucket_with(&[("k", b"v".to_vec())]).await;
        let wrong = s3_of(key.clone(), format!("{secret}x")).await;
        let error = wrong
            .get_object()
            .bucket(&bucket)
            .key("k")
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&error.into_service_error()), "SignatureDoesNotMatch");
        let unknown = s3_of("AKIAUNKNOWNUNKNOWN00".into(), secret.clone()).await;
        let error = unknown
            .get_object()
            .bucket(&bucket)
            .key("k")
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&error.into_service_error()), "InvalidAccessKeyId");
        let right = s3_of(key.clone(), secret.clone()).await;
        assert!(
            right
                .get_object()
                .bucket(&bucket)
                .key("k")
                .send()
                .await
                .is_ok()
        );

        let sts = |k: String, s: String| async move {
            aws_sdk_sts::Client::new(&sdk_config(&k, &s).await)
        };
        let error = sts(key.clone(), format!("{secret}x"))
            .await
            .get_caller_identity()
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&error.into_service_error()), "SignatureDoesNotMatch");
        let error = sts("AKIAUNKNOWNUNKNOWN00".into(), secret.clone())
            .await
            .get_caller_identity()
            .send()
            .await
            .unwrap_err();
        assert_eq!(code(&error.into_service_error()), "InvalidClientTokenId");
        let me = sts(key.clone(), secret.clone())
            .await
            .get_caller_identity()
            .send()
            .await
            .unwrap();
        assert!(me.arn().is_some_and(|a| a.contains(":user/")), "{me:?}");
    });
}

/// AWS rules: a policy is evaluated per action and resource (s3:GetObject on a prefix
/// does not give s3:PutObject, nor another prefix), and a missing key reads as 403
/// `AccessDenied`, not 404, to a caller without `s3:ListBucket` on the bucket, while the
/// progress store's `s3:ListBucket` on the bucket gets the 404. Conditional writes answer
/// 412. Guards the emulator's rules the host's stores depend on.
#[test]
fn s3_answers_as_aws_to_least_privilege_callers() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let bucket = runtime.block_on(bucket_with(&[("p/x", b"one".to_vec())]));
    let subs = [("BUCKET", bucket.as_str()), ("PREFIX", "p")];
    let idempotency = user_with_policy(&readme_policy("idempotency-store", &subs));
    let progress = user_with_policy(&readme_policy("progress-store", &subs));
    runtime.block_on(async {
        let store = s3(&idempotency.0, &idempotency.1).await;
        let got = store.get_object().bucket(&bucket).key("p/x").send().await;
        assert!(got.is_ok(), "{got:?}");
        let error = store
            .get_object()
            .bucket(&bucket)
            .key("q/x")
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert_eq!(code(&error), "AccessDenied");
        let error = store
            .get_object()
            .bucket(&bucket)
            .key("p/missing")
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert_eq!(code(&error), "AccessDenied", "no s3:ListBucket: 403");
        assert!(
            format!("{error:?}").contains("s3:ListBucket"),
            "the denial names the permission: {error:?}"
        );
        // Claim by a conditional create, take over by If-Match: 412 when it lost.
        let put = |key: &'static str, data: &'static [u8]| {
            store
                .put_object()
                .bucket(&bucket)
                .key(key)
                .body(data.to_vec().into())
        };
        let first = put("p/claim", b"1")
            .if_none_match("*")
            .send()
            .await
            .unwrap();
        let again = put("p/claim", b"2").if_none_match("*").send().await;
        let status = again
            .unwrap_err()
            .raw_response()
            .map(|r| r.status().as_u16());
        assert_eq!(status, Some(412));
        let stale = put("p/claim", b"3").if_match("\"0000\"").send().await;
        let status = stale
            .unwrap_err()
            .raw_response()
            .map(|r| r.status().as_u16());
        assert_eq!(status, Some(412));
        let taken = put("p/claim", b"4")
            .if_match(first.e_tag().unwrap())
            .send()
            .await;
        assert!(taken.is_ok(), "{taken:?}");
        // Not the idempotency store's to delete.
        let error = store
            .delete_object()
            .bucket(&bucket)
            .key("p/claim")
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert_eq!(code(&error), "AccessDenied");

        let checkpoints = s3(&progress.0, &progress.1).await;
        let error = checkpoints
            .get_object()
            .bucket(&bucket)
            .key("p/missing")
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert!(
            error.is_no_such_key(),
            "s3:ListBucket on the bucket: 404: {error:?}"
        );

        // A read of an object carries no `s3:prefix`: a listing narrowed by a prefix
        // condition is not counted (the strict reading the book's block avoids).
        let narrowed = user_with_policy(
            &json!({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "s3:GetObject",
                 "Resource": format!("arn:aws:s3:::{bucket}/p/*")},
                {"Effect": "Allow", "Action": "s3:ListBucket",
                 "Resource": format!("arn:aws:s3:::{bucket}"),
                 "Condition": {"StringLike": {"s3:prefix": "p/*"}}}]})
            .to_string(),
        );
        let error = s3(&narrowed.0, &narrowed.1)
            .await
            .get_object()
            .bucket(&bucket)
            .key("p/missing")
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert_eq!(code(&error), "AccessDenied");
    });
}

/// The documented `activities` block ([`PERMISSIONS`]) for the activity named `name` (of
/// LocalStack's account, through the strict front).
fn activities_policy(name: &str) -> String {
    readme_policy(
        "activities",
        &[
            ("REGION", REGION),
            ("ACCOUNT", SFN_ACCOUNT),
            ("ACTIVITY", name),
        ],
    )
}

/// `serve CONFIG` as the IAM user `(key, secret)`.
fn serve_as(config: &Path, (key, secret): &(String, String)) -> Served {
    Served::start_with_env(
        config,
        &[
            ("AWS_ACCESS_KEY_ID", key.as_str()),
            ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
        ],
    )
}

/// A config of one activity `arn` whose handler is `handler`, against the strict
/// emulator, with `extra` after the handler line.
fn strict_config(dir: &Path, arn: &str, handler: &str, extra: &str) -> PathBuf {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[aws]\nregion = \"{REGION}\"\nendpoint_url = \"{}\"\n[host]\nshutdown_grace_seconds = 1\n\
             [[activity]]\narn = \"{arn}\"\nhandler = \"{handler}\"\n{extra}\n",
            strict_endpoint()
        ),
    )
    .unwrap();
    config
}

/// AWS rules: `check --remote` asks `DescribeActivity` (states:DescribeActivity on the
/// activity) and `HeadObject` of an S3 handler, which needs s3:GetObject, as the handler's
/// read does. Under the book's `activities` + `s3-handlers` blocks it passes; without
/// s3:GetObject the handler cannot be read and the host says so, naming the key and
/// AWS's `AccessDenied`.
#[test]
fn check_remote_passes_under_the_readme_policy_and_fails_one_short() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = runtime.block_on(emulator::client());
    let activity = runtime.block_on(emulator::activity(&client, "strict-check"));
    let wasm = std::fs::read(guest("greet")).unwrap();
    let bucket = runtime.block_on(bucket_with(&[("handlers/greet.wasm", wasm)]));
    let name = activity.rsplit(':').next().unwrap();
    let policy = union(&[
        &activities_policy(name),
        &readme_policy(
            "s3-handlers",
            &[("BUCKET", bucket.as_str()), ("PREFIX", "handlers")],
        ),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let config = strict_config(
        dir.path(),
        &activity,
        &format!("s3://{bucket}/handlers/greet.wasm"),
        "",
    );

    let user = user_with_policy(&policy);
    let output = host(&["check", "--remote"], &config, (&user.0, &user.1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");

    let short = user_with_policy(&without_action(&policy, "s3:GetObject"));
    let output = host(&["check", "--remote"], &config, (&short.0, &short.1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        // HeadObject's 403 has no body (as on AWS): the host can only say `HTTP 403`.
        stderr.contains("activity[0].handler")
            && (stderr.contains("AccessDenied") || stderr.contains("403")),
        "{stderr}"
    );

    let short = user_with_policy(&without_action(&policy, "states:DescribeActivity"));
    let output = host(&["check", "--remote"], &config, (&short.0, &short.1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("activity[0].arn") && stderr.contains("states:DescribeActivity"),
        "{stderr}"
    );
}

/// AWS rules: `GetSecretValue` needs secretsmanager:GetSecretValue on the secret's ARN
/// (random suffix included), `GetParameter` ssm:GetParameter on the parameter's ARN.
/// Under the book's `secrets` block `check` resolves both; one short, it stops naming
/// the key and AWS's code, and never shows the value.
#[test]
fn secrets_resolve_under_the_readme_policy_and_fail_one_short() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let secret = format!("strict/api-{:08x}", fastrand::u32(..));
    let parameter = format!("/strict/db-{:08x}", fastrand::u32(..));
    let (api_key, db_url) = (
        format!("key-{:016x}", fastrand::u64(..)),
        format!("db-{:016x}", fastrand::u64(..)),
    );
    runtime.block_on(async {
        let (key, secret_key) = admin();
        let config = sdk_config(&key, &secret_key).await;
        aws_sdk_secretsmanager::Client::new(&config)
            .create_secret()
            .name(&secret)
            .secret_string(json!({"key": api_key}).to_string())
            .send()
            .await
            .unwrap();
        aws_sdk_ssm::Client::new(&config)
            .put_parameter()
            .name(&parameter)
            .value(&db_url)
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .send()
            .await
            .unwrap();
    });
    let policy = readme_policy(
        "secrets",
        &[
            ("REGION", REGION),
            ("ACCOUNT", ACCOUNT),
            ("SECRET", secret.as_str()),
            ("PARAMETER", parameter.trim_start_matches('/')),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let config = strict_config(
        dir.path(),
        &format!("arn:aws:states:{REGION}:{SFN_ACCOUNT}:activity:strict-secrets"),
        &guest("probe").display().to_string(),
        &format!(
            "[activity.env]\nAPI_KEY = {{ from_secretsmanager = \"{secret}\", json_key = \"key\" }}\n\
             DB_URL = {{ from_ssm = \"{parameter}\" }}"
        ),
    );
    let user = user_with_policy(&policy);
    let output = host(&["check"], &config, (&user.0, &user.1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");

    for (action, name) in [
        ("secretsmanager:GetSecretValue", "API_KEY"),
        ("ssm:GetParameter", "DB_URL"),
    ] {
        let short = user_with_policy(&without_action(&policy, action));
        let output = host(&["check"], &config, (&short.0, &short.1));
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(output.status.code(), Some(2), "{all}");
        assert!(
            all.contains(&format!("`activity[0].env.{name}`"))
                && all.contains("AccessDeniedException"),
            "{action}: {all}"
        );
        assert!(
            !all.contains(&api_key) && !all.contains(&db_url),
            "a value leaked"
        );
    }
}

/// AWS rules: polling needs states:GetActivityTask on the activity, answering
/// states:SendTaskSuccess/Failure on `*` (no resource-level permissions). `serve` under
/// the book's `activities` block, through the strict front for LocalStack, answers
/// every task; without states:SendTaskSuccess the success is refused for good
/// (`AccessDeniedException`, not retried) and the host's own failure, which it may send,
/// names the permission.
#[test]
fn serve_answers_under_the_readme_policy_and_names_a_missing_permission() {
    // Each run gets an activity of its own: a poll the previous host left at Step
    // Functions (the front keeps it open) could take the next run's task.
    let run = |policy_of: &dyn Fn(String) -> String, inputs: &[Value]| {
        let (runtime, client, activity, machine) = emulator::emulated("strict-serve");
        let name = activity.rsplit(':').next().unwrap().to_owned();
        let policy = activities_policy(&name);
        let user = user_with_policy(&policy_of(policy));
        let dir = tempfile::tempdir().unwrap();
        let config = served::config(
            dir.path(),
            &strict_endpoint(),
            &activity,
            &guest("greet"),
            "",
            "shutdown_grace_seconds = 1",
        );
        let mut served = serve_as(&config, &user);
        served.wait_for("worker:running");
        let executions: Vec<String> = inputs
            .iter()
            .map(|input| runtime.block_on(emulator::start(&client, &machine, input.clone())))
            .collect();
        let ended: Vec<emulator::Ended> = executions
            .iter()
            .map(|e| runtime.block_on(emulator::wait(&client, e, Duration::from_secs(60))))
            .collect();
        served.terminate();
        ended
    };

    let inputs: Vec<Value> = (0..3)
        .map(|n| json!({"hello": format!("strict {n}")}))
        .collect();
    for (n, ended) in run(&|policy| policy, &inputs).iter().enumerate() {
        assert_eq!(ended.status, ExecutionStatus::Succeeded, "{ended:?}");
        assert_eq!(
            ended.output,
            Some(json!({"greeting": format!("Hello, strict {n}")}))
        );
    }

    let short = |policy: String| without_action(&policy, "states:SendTaskSuccess");
    let ended = run(&short, &[json!({"hello": "short"})]).remove(0);
    assert_eq!(ended.status, ExecutionStatus::Failed, "{ended:?}");
    assert_eq!(
        ended.error.as_deref(),
        Some("SfnWasmHost.AnswerRefused"),
        "{ended:?}"
    );
    let cause = ended.cause.unwrap_or_default();
    assert!(
        cause.contains("AccessDenied") && cause.contains("states:SendTaskSuccess"),
        "{cause}"
    );
}

#[test]
fn readme_policies_are_found_and_substituted() {
    let readme = "x\n<!-- iam-policy: a -->\n```json\n{\"Statement\": [{\"Action\": \"s3:GetObject\", \"Resource\": \"arn:aws:s3:::BUCKET/*\"}]}\n```\n";
    let policy = readme_policy_in(readme, "a", &[("BUCKET", "b")]);
    assert!(policy.contains("arn:aws:s3:::b/*"), "{policy}");
    let short = without_action(
        &union(&[
            &policy,
            r#"{"Statement": {"Action": ["s3:PutObject", "s3:GetObject"], "Resource": "*"}}"#,
        ]),
        "s3:GetObject",
    );
    let short: Value = serde_json::from_str(&short).unwrap();
    assert_eq!(
        short["Statement"],
        json!([{"Action": ["s3:PutObject"], "Resource": "*"}])
    );
    for name in [
        "activities",
        "callbacks",
        "idempotency-store",
        "progress-store",
        "s3-handlers",
        "ecr-handlers",
        "secrets",
        "assume-role",
    ] {
        let chapter = permissions_chapter();
        assert!(
            chapter.contains(&format!("<!-- iam-policy: {name} -->")),
            "{PERMISSIONS}: {name}"
        );
    }
}

/// AWS rules: an `oci://` handler in ECR is pulled with a token from
/// `ecr:GetAuthorizationToken`, signed with the host's credentials. Under the book's
/// `ecr-handlers` block the host gets the token (basic credentials `AWS:...`); without
/// that action it gets AWS's refusal naming it, and never a token.
#[test]
fn an_ecr_token_is_granted_under_the_readme_policy_and_refused_one_short() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let policy = readme_policy(
        "ecr-handlers",
        &[
            ("REGION", REGION),
            ("ACCOUNT", "123456789012"),
            ("REPOSITORY", "handlers/greet"),
        ],
    );
    let user = user_with_policy(&policy);
    let (auth, _) = runtime
        .block_on(async {
            let shared = sdk_config(&user.0, &user.1).await;
            sfn_wasm_host::source::ecr_authorization_token(&shared, REGION).await
        })
        .unwrap();
    assert!(
        matches!(&auth, oci_client::secrets::RegistryAuth::Basic(name, password) if name == "AWS" && !password.is_empty()),
        "{auth:?}"
    );

    let short = user_with_policy(&without_action(&policy, "ecr:GetAuthorizationToken"));
    let refused = runtime
        .block_on(async {
            let shared = sdk_config(&short.0, &short.1).await;
            sfn_wasm_host::source::ecr_authorization_token(&shared, REGION).await
        })
        .unwrap_err();
    assert!(
        refused.contains("ecr:GetAuthorizationToken") && refused.contains("AccessDenied"),
        "{refused}"
    );
}

/// The stored name of an idempotency key, as the host names it: `answer-` and the SHA-256
/// of the activity ARN and the key (a string).
fn answer_name(activity: &str, key: &str) -> String {
    format!(
        "answer-{}",
        sfn_wasm_host::ids::sha256_hex(format!("{activity}\n{key}").as_bytes())
    )
}

/// AWS rules: without `s3:ListBucket` a read of a missing key is 403, and the book's
/// `idempotency-store` block grants only s3:GetObject and s3:PutObject. Under it (with
/// `activities`), through the strict front: 20 concurrent tasks of one key run the guest
/// once; 20 of a key whose claim's host died (an expired claim), and 20 of a key whose
/// answer is past its TTL, each run it once more. Every execution gets the one answer.
#[test]
fn twenty_tasks_of_one_key_run_the_guest_once_under_the_readme_policy() {
    let (runtime, client, activity, machine) =
        emulator::emulated_with("strict-once", crate::idempotency::retrying_duplicates);
    let bucket = runtime.block_on(bucket_with(&[]));
    let name = activity.rsplit(':').next().unwrap().to_owned();
    let policy = union(&[
        &activities_policy(&name),
        &readme_policy(
            "idempotency-store",
            &[("BUCKET", bucket.as_str()), ("PREFIX", "answers")],
        ),
    ]);
    let user = user_with_policy(&policy);
    // Records whose time is over: a claim whose host died, an answer past its TTL.
    let (admin_key, admin_secret) = admin();
    runtime.block_on(async {
        let s3 = s3(&admin_key, &admin_secret).await;
        for (key, record) in [
            (
                "o-dead",
                json!({"state": "running", "expires_at_ms": 1, "claim": "dead"}),
            ),
            (
                "o-old",
                json!({"state": "done", "stored_at_ms": 1,
                       "answer": {"status": "success", "output": "{\"stale\":true}"}}),
            ),
        ] {
            s3.put_object()
                .bucket(&bucket)
                .key(format!("answers/{}", answer_name(&activity, key)))
                .body(record.to_string().into_bytes().into())
                .send()
                .await
                .unwrap();
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let config = served::config(
        dir.path(),
        &strict_endpoint(),
        &activity,
        &guest("scenarios"),
        &format!(
            "workers = 4\n[activity.idempotency]\nkey = \"/orderId\"\nstore = \"s3://{bucket}/answers\""
        ),
        "shutdown_grace_seconds = 1",
    );
    let mut served = serve_as(&config, &user);
    served.wait_for("worker:running");
    for key in ["o-1", "o-dead", "o-old"] {
        let input = json!({"hello": "Sleep", "ms": 1000, "orderId": key});
        let executions: Vec<String> = (0..20)
            .map(|_| runtime.block_on(emulator::start(&client, &machine, input.clone())))
            .collect();
        for execution in &executions {
            let ended =
                runtime.block_on(emulator::wait(&client, execution, Duration::from_secs(120)));
            assert_eq!(ended.status, ExecutionStatus::Succeeded, "{key}: {ended:?}");
            assert_eq!(ended.output, Some(json!({"slept_ms": 1000})), "{key}");
        }
    }
    served.wait_quiet(Duration::from_millis(300));
    let lines = served.lines();
    let starts = lines.iter().filter(|l| l["event"] == "task:start").count();
    assert_eq!(starts, 3, "the guest ran once per key");
    assert!(
        !lines
            .iter()
            .any(|l| l["event"] == "idempotency:unavailable"),
        "the store was usable under the README's policy: {lines:?}"
    );
    served.terminate();
}

/// AWS rules, as `check --remote` meets them: under the book's `idempotency-store` and
/// `progress-store` blocks both S3 stores pass the probe (a conditional create, a read and
/// a conditional replace; a read of a missing checkpoint, a write and a delete); one
/// permission short, the host names the permission and the store's key.
#[test]
fn check_remote_probes_the_stores_under_the_readme_policies() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = runtime.block_on(emulator::client());
    let activity = runtime.block_on(emulator::activity(&client, "strict-stores"));
    let bucket = runtime.block_on(bucket_with(&[]));
    let name = activity.rsplit(':').next().unwrap();
    let policy = union(&[
        &activities_policy(name),
        &readme_policy(
            "idempotency-store",
            &[("BUCKET", bucket.as_str()), ("PREFIX", "answers")],
        ),
        &readme_policy(
            "progress-store",
            &[("BUCKET", bucket.as_str()), ("PREFIX", "progress")],
        ),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let config = strict_config(
        dir.path(),
        &activity,
        &guest("greet").display().to_string(),
        &format!(
            "[activity.idempotency]\nkey = \"/orderId\"\nstore = \"s3://{bucket}/answers\"\n\
             [activity.progress]\nkey = \"/orderId\"\nstore = \"s3://{bucket}/progress\""
        ),
    );
    let check = |policy: &str| {
        let user = user_with_policy(policy);
        let output = host(&["check", "--remote"], &config, (&user.0, &user.1));
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, stderr) = check(&policy);
    assert_eq!(code, Some(0), "{stderr}");
    // Twice: the probe object the first left is found and replaced.
    let (code, stderr) = check(&policy);
    assert_eq!(code, Some(0), "{stderr}");

    let (code, stderr) = check(&without_action(&policy, "s3:ListBucket"));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("activity[0].progress.store") && stderr.contains("s3:ListBucket"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("activity[0].idempotency.store"),
        "{stderr}"
    );

    let (code, stderr) = check(&without_action(&policy, "s3:PutObject"));
    assert_eq!(code, Some(2), "{stderr}");
    for key in [
        "activity[0].idempotency.store",
        "activity[0].progress.store",
    ] {
        assert!(
            stderr.contains(key) && stderr.contains("s3:PutObject"),
            "{key}: {stderr}"
        );
    }
}

/// A role for guests' requests: trusted by the account, allowed `policy`. Its ARN.
fn role_with_policy(policy: &str) -> String {
    let (key, secret) = admin();
    let script = r#"
import json, sys, uuid, boto3
endpoint, key, secret, policy, account = sys.argv[1:6]
iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                   aws_access_key_id=key, aws_secret_access_key=secret)
name = "handler-" + uuid.uuid4().hex[:12]
trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
         "Principal": {"AWS": f"arn:aws:iam::{account}:root"}, "Action": "sts:AssumeRole"}]}
role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]
iam.put_role_policy(RoleName=name, PolicyName="handler", PolicyDocument=policy)
print(json.dumps(role["Arn"]))
"#;
    let output = Command::new(python())
        .args([
            "-c",
            script,
            &strict_endpoint(),
            &key,
            &secret,
            policy,
            ACCOUNT,
        ])
        .output()
        .expect("run the strict emulator's Python");
    assert!(
        output.status.success(),
        "creating a role failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// AWS rules for what the host signs for a guest (`[activity.aws]` with `role_arn`): the
/// host assumes the role with its own credentials (the book's `assume-role` block, with
/// `activities`), and signs the guest's S3 request with the role's; the signature and the
/// role's policy are checked. Without sts:AssumeRole the guest's request is not signed
/// with anything and does not reach S3 as the role.
#[test]
fn a_guests_request_is_signed_with_the_assumed_role_under_the_readme_policy() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let bucket = runtime.block_on(bucket_with(&[("data/k", b"value".to_vec())]));
    let role = role_with_policy(
        &json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
            "Action": "s3:GetObject", "Resource": format!("arn:aws:s3:::{bucket}/data/*")}]})
        .to_string(),
    );
    let role_name = role.rsplit('/').next().unwrap().to_owned();
    // Each run gets an activity of its own (a poll the previous host left open at the
    // front could take the next run's task).
    let run = |short_of: Option<&str>| {
        let (runtime, client, activity, machine) = emulator::emulated("strict-role");
        let name = activity.rsplit(':').next().unwrap().to_owned();
        let mut policy = union(&[
            &activities_policy(&name),
            &readme_policy("assume-role", &[("ACCOUNT", ACCOUNT), ("ROLE", &role_name)]),
        ]);
        if let Some(action) = short_of {
            policy = without_action(&policy, action);
        }
        let user = user_with_policy(&policy);
        let dir = tempfile::tempdir().unwrap();
        let config = served::config(
            dir.path(),
            &strict_endpoint(),
            &activity,
            &guest("probe"),
            &format!("[activity.aws]\nservices = [\"s3\"]\nrole_arn = \"{role}\""),
            "shutdown_grace_seconds = 1",
        );
        let mut served = serve_as(&config, &user);
        served.wait_for("worker:running");
        let input = json!({"op": "request", "method": "GET",
            "url": format!("https://s3.{REGION}.amazonaws.com/{bucket}/data/k")});
        let execution = runtime.block_on(emulator::start(&client, &machine, input));
        let ended = runtime.block_on(emulator::wait(&client, &execution, Duration::from_secs(60)));
        served.terminate();
        ended
    };
    let ended = run(None);
    assert_eq!(ended.status, ExecutionStatus::Succeeded, "{ended:?}");
    let output = ended.output.unwrap();
    assert_eq!(output["status"], 200, "{output}");
    assert_eq!(output["body"], "value", "{output}");

    let ended = run(Some("sts:AssumeRole"));
    let answered = format!("{:?} {:?} {:?}", ended.output, ended.error, ended.cause);
    assert!(
        ended.output.as_ref().is_none_or(|o| o["status"] != 200),
        "no request reaches S3 as the role without sts:AssumeRole: {answered}"
    );
}

/// AWS rules for `[activity.progress]` in S3: a task's first `last-checkpoint` reads a key
/// that is not there, which S3 answers with 404 only to credentials with s3:ListBucket on
/// the bucket. Under the book's `progress-store` block (with `activities`), a task that
/// traps halfway resumes from its checkpoint and nothing is refused; without
/// s3:ListBucket the first read is refused (the retry still resumes, from the checkpoint
/// it can read) and the warning names the permission.
#[test]
fn progress_resumes_under_the_readme_policy_and_names_list_bucket_one_short() {
    let run = |short_of: Option<&str>| {
        let (runtime, client, activity, machine) =
            emulator::emulated_with("strict-progress", crate::progress::retrying_traps);
        let bucket = runtime.block_on(bucket_with(&[]));
        let name = activity.rsplit(':').next().unwrap().to_owned();
        let mut policy = union(&[
            &activities_policy(&name),
            &readme_policy(
                "progress-store",
                &[("BUCKET", bucket.as_str()), ("PREFIX", "checkpoints")],
            ),
        ]);
        if let Some(action) = short_of {
            policy = without_action(&policy, action);
        }
        let user = user_with_policy(&policy);
        let dir = tempfile::tempdir().unwrap();
        let config = served::config(
            dir.path(),
            &strict_endpoint(),
            &activity,
            &guest("scenarios"),
            &format!(
                "[activity.progress]\nkey = \"/executionId\"\nstore = \"s3://{bucket}/checkpoints\""
            ),
            "shutdown_grace_seconds = 1",
        );
        let mut served = serve_as(&config, &user);
        served.wait_for("worker:running");
        let execution = runtime.block_on(emulator::start(
            &client,
            &machine,
            json!({"hello": "Count"}),
        ));
        let ended = runtime.block_on(emulator::wait(&client, &execution, Duration::from_secs(60)));
        served.wait_quiet(Duration::from_millis(300));
        served.terminate();
        let warned: Vec<String> = served
            .lines()
            .iter()
            .filter(|l| {
                l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("the last checkpoint could not be read"))
            })
            .map(ToString::to_string)
            .collect();
        (ended, warned)
    };
    let (ended, warned) = run(None);
    assert_eq!(ended.status, ExecutionStatus::Succeeded, "{ended:?}");
    assert_eq!(ended.output, Some(json!({"count": 10, "resumed_at": 5})));
    assert!(warned.is_empty(), "{warned:?}");

    let (ended, warned) = run(Some("s3:ListBucket"));
    assert_eq!(ended.status, ExecutionStatus::Succeeded, "{ended:?}");
    assert!(
        warned.iter().any(|w| w.contains("s3:ListBucket")),
        "the refused first read names the permission: {warned:?}"
    );
}

/// AWS rules: a callback's queue calls need `sqs:ReceiveMessage`,
/// `sqs:ChangeMessageVisibility`, `sqs:DeleteMessage` (and for `check --remote`
/// `sqs:GetQueueAttributes`) on the queue's ARN; its answers the `SendTask*` of any
/// token. Under the book's `callbacks` block a task LocalStack's state machine sent is
/// received from the strict emulator's queue, answered through the strict front, and its
/// message deleted; `check --remote` passes, and one short it names the key and the
/// permission.
#[test]
fn a_callback_is_served_under_the_readme_policy_and_check_fails_one_short() {
    use crate::support::emulator::{callback_machine, drained, queue, sqs, take_a_look};
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = runtime.block_on(emulator::client());
    // LocalStack's state machine sends the task to LocalStack's queue; the test moves
    // the message to the strict emulator's queue, where the host receives it.
    let local = runtime.block_on(sqs());
    let (local_url, _) = runtime.block_on(queue(&local, false, 5));
    let state_machine = runtime.block_on(callback_machine(&client, &local_url, 60, false));
    let execution = runtime.block_on(emulator::start(
        &client,
        &state_machine,
        json!({"hello": "World", "ms": 0}),
    ));
    let (admin_key, admin_secret) = admin();
    let strict = runtime
        .block_on(async { aws_sdk_sqs::Client::new(&sdk_config(&admin_key, &admin_secret).await) });
    let (strict_url, _) = runtime.block_on(queue(&strict, false, 5));
    runtime.block_on(async {
        let body = take_a_look(&local, &local_url).await;
        strict
            .send_message()
            .queue_url(&strict_url)
            .message_body(body)
            .send()
            .await
            .unwrap();
    });
    let name = strict_url.rsplit('/').next().unwrap();
    let policy = readme_policy(
        "callbacks",
        &[("REGION", REGION), ("ACCOUNT", ACCOUNT), ("QUEUE", name)],
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[aws]\nregion = \"{REGION}\"\nendpoint_url = \"{}\"\n[host]\nshutdown_grace_seconds = 1\n\
             [[callback]]\nqueue_url = \"{strict_url}\"\nhandler = \"{}\"\nwait_seconds = 1\n",
            strict_endpoint(),
            guest("scenarios").display()
        ),
    )
    .unwrap();
    let user = user_with_policy(&policy);
    let output = host(&["check", "--remote"], &config, (&user.0, &user.1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");

    let mut served = serve_as(&config, &user);
    let ended = runtime.block_on(emulator::wait(&client, &execution, Duration::from_secs(60)));
    assert_eq!(ended.status, ExecutionStatus::Succeeded, "{ended:?}");
    assert_eq!(ended.output, Some(json!({"greeting": "Hello, World"})));
    runtime.block_on(drained(&strict, &strict_url));
    let done = served.wait_for("task:done");
    assert_eq!(done["outcome"], "success", "{done}");
    drop(served);

    // The host deletes the messages of tasks settling together in one
    // DeleteMessageBatch, which IAM allows with sqs:DeleteMessage. (After the killed
    // host's last receive, a 1 s long poll the server still holds, has ended.)
    std::thread::sleep(Duration::from_millis(1500));
    runtime.block_on(async {
        for n in 0..2 {
            strict
                .send_message()
                .queue_url(&strict_url)
                .message_body(format!("batch {n}"))
                .send()
                .await
                .unwrap();
        }
        let host_sqs = aws_sdk_sqs::Client::new(&sdk_config(&user.0, &user.1).await);
        // SQS may return fewer than asked for: receive until both are in hand.
        let mut received = Vec::new();
        for _ in 0..20 {
            received.extend(
                host_sqs
                    .receive_message()
                    .queue_url(&strict_url)
                    .max_number_of_messages(2)
                    .wait_time_seconds(1)
                    .send()
                    .await
                    .unwrap()
                    .messages
                    .unwrap_or_default(),
            );
            if received.len() == 2 {
                break;
            }
        }
        assert_eq!(received.len(), 2);
        let entries = received.iter().enumerate().map(|(n, m)| {
            aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                .id(n.to_string())
                .receipt_handle(m.receipt_handle.clone().unwrap())
                .build()
                .unwrap()
        });
        let deleted = host_sqs
            .delete_message_batch()
            .queue_url(&strict_url)
            .set_entries(Some(entries.collect()))
            .send()
            .await
            .unwrap();
        assert!(deleted.failed.is_empty(), "{deleted:?}");
    });

    let short = user_with_policy(&without_action(&policy, "sqs:GetQueueAttributes"));
    let output = host(&["check", "--remote"], &config, (&short.0, &short.1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("callback[0].queue_url") && stderr.contains("sqs:GetQueueAttributes"),
        "{stderr}"
    );
}
