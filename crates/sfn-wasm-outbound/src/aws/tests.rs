//! The AWS module's tests: endpoint names, grants, credential APIs, the cache.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};

use super::credential_apis::credential_api;
use super::credentials::{CredentialsCache, CredentialsSource, fresh};
use super::*;

fn endpoint(service: &str, region: &str, bucket: Option<&str>, global: bool) -> Endpoint {
    Endpoint {
        service: service.into(),
        region: region.into(),
        bucket: bucket.map(Into::into),
        global,
    }
}

#[test]
fn aws_endpoints_are_read_from_the_host_name_and_look_alikes_are_not() {
    for (host, expected) in [
        (
            "sqs.us-east-1.amazonaws.com",
            Some(endpoint("sqs", "us-east-1", None, false)),
        ),
        (
            "s3.eu-central-1.amazonaws.com",
            Some(endpoint("s3", "eu-central-1", None, false)),
        ),
        (
            "my.bucket.s3.us-west-2.amazonaws.com",
            Some(endpoint("s3", "us-west-2", Some("my.bucket"), false)),
        ),
        (
            "bucket.s3.amazonaws.com",
            Some(endpoint("s3", "us-east-1", Some("bucket"), true)),
        ),
        (
            "iam.amazonaws.com",
            Some(endpoint("iam", "us-east-1", None, true)),
        ),
        (
            "email.us-east-1.amazonaws.com",
            Some(endpoint("ses", "us-east-1", None, false)),
        ),
        (
            "dynamodb.us-gov-west-1.amazonaws.com",
            Some(endpoint("dynamodb", "us-gov-west-1", None, false)),
        ),
        ("s3.us-east-1.amazonaws.com.attacker.test", None),
        ("amazonaws.com", None),
        ("evil.amazonaws.com.example", None),
        ("sqs.us-east-1.evilamazonaws.com", None),
        ("a.b.sqs.us-east-1.amazonaws.com", None),
        ("sqs..amazonaws.com", None),
        ("SQS.us-east-1.amazonaws.com", None),
    ] {
        assert_eq!(Endpoint::parse(host), expected, "{host}");
    }
}

#[test]
fn a_grant_allows_its_services_in_its_regions() {
    let grant = AwsGrant {
        services: vec!["s3".into(), "sqs".into()],
        regions: vec!["us-east-1".into()],
        role_arn: None,
        external_id: None,
        host_region: None,
        endpoint_url: None,
        allow_credential_apis: false,
        private_endpoints: false,
        service_endpoints: Vec::new(),
    };
    assert!(grant.allows(&endpoint("sqs", "us-east-1", None, false)));
    assert!(!grant.allows(&endpoint("sqs", "eu-west-1", None, false)));
    assert!(!grant.allows(&endpoint("sns", "us-east-1", None, false)));
    assert!(grant.allows(&endpoint("s3", "us-east-1", Some("b"), true)));
    // A global endpoint is in the region it is signed for.
    let europe = AwsGrant {
        regions: vec!["eu-west-1".into()],
        services: vec!["s3".into(), "sts".into()],
        ..grant
    };
    for host in [
        "anybucket.s3.amazonaws.com",
        "s3.amazonaws.com",
        "sts.amazonaws.com",
    ] {
        let global = Endpoint::parse(host).unwrap();
        assert!(!europe.allows(&global), "{host}");
    }
    assert!(europe.allows(&Endpoint::parse("b.s3.eu-west-1.amazonaws.com").unwrap()));
}

#[test]
fn service_endpoints_follow_the_sdks_variable_names() {
    assert_eq!(endpoint_variable("sqs"), "AWS_ENDPOINT_URL_SQS");
    assert_eq!(endpoint_variable("states"), "AWS_ENDPOINT_URL_SFN");
    assert_eq!(
        endpoint_variable("secretsmanager"),
        "AWS_ENDPOINT_URL_SECRETS_MANAGER"
    );
    assert_eq!(
        endpoint_variable("cognito-identity"),
        "AWS_ENDPOINT_URL_COGNITO_IDENTITY"
    );
    assert_eq!(
        endpoint_variable("cognito-idp"),
        "AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER"
    );
    let env = |name: &str| (name == "AWS_ENDPOINT_URL_SQS").then(|| "http://10.0.0.5".to_owned());
    assert_eq!(
        service_endpoints_from_env(&["s3".into(), "sqs".into()], env),
        [("sqs".to_owned(), "http://10.0.0.5".to_owned())]
    );
}

fn parts(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut request = http::Request::post(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(()).unwrap().into_parts().0
}

/// The `Content-Type` of a form-encoded request (STS, IAM).
const FORM: [(&str, &str); 1] = [(
    "content-type",
    "application/x-www-form-urlencoded; charset=utf-8",
)];

fn sts() -> Endpoint {
    Endpoint::parse("sts.us-east-1.amazonaws.com").unwrap()
}

#[test]
fn credential_vending_apis_are_recognised_by_query_target_path_and_form() {
    let sts = sts();
    let form = FORM;
    for (endpoint, parts, body) in [
        (
            &sts,
            parts(
                "https://sts.us-east-1.amazonaws.com/?Action=AssumeRole&Version=2011-06-15",
                &[],
            ),
            None,
        ),
        (
            &sts,
            parts("https://sts.us-east-1.amazonaws.com/", &form),
            Some(&b"Version=2011-06-15&Action=GetSessionToken"[..]),
        ),
        (
            &sts,
            parts("https://sts.us-east-1.amazonaws.com/", &form),
            Some(&b"Action=GetFederationToken&Name=x"[..]),
        ),
        (
            &Endpoint::parse("iam.amazonaws.com").unwrap(),
            parts("https://iam.amazonaws.com/", &form),
            Some(&b"Action=CreateAccessKey&UserName=x"[..]),
        ),
        (
            &Endpoint::parse("cognito-identity.us-east-1.amazonaws.com").unwrap(),
            parts(
                "https://cognito-identity.us-east-1.amazonaws.com/",
                &[(
                    "x-amz-target",
                    "AWSCognitoIdentityService.GetCredentialsForIdentity",
                )],
            ),
            Some(&b"{}"[..]),
        ),
        (
            &Endpoint::parse("ecr.us-east-1.amazonaws.com").unwrap(),
            parts(
                "https://ecr.us-east-1.amazonaws.com/",
                &[(
                    "x-amz-target",
                    "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken",
                )],
            ),
            Some(&b"{}"[..]),
        ),
        (
            &Endpoint::parse("codeartifact.us-east-1.amazonaws.com").unwrap(),
            parts(
                "https://codeartifact.us-east-1.amazonaws.com/v1/authorization-token?domain=d",
                &[],
            ),
            None,
        ),
        (
            &Endpoint::parse("b.s3.us-east-1.amazonaws.com").unwrap(),
            parts("https://b.s3.us-east-1.amazonaws.com/?session", &[]),
            None,
        ),
    ] {
        assert!(
            credential_api(endpoint, &parts, body).is_some(),
            "{}",
            parts.uri
        );
    }
}

#[test]
fn credential_vending_apis_are_recognised_however_they_are_written() {
    // However it is written: a padded or second target, a body whose
    // Content-Type does not say form, an encoded path, a Smithy RPC path.
    let sts = sts();
    for (endpoint, parts, body) in [
        (
            &Endpoint::parse("ecr.us-east-1.amazonaws.com").unwrap(),
            parts(
                "https://ecr.us-east-1.amazonaws.com/",
                &[
                    (
                        "x-amz-target",
                        "AmazonEC2ContainerRegistry_V20150921.DescribeImages",
                    ),
                    (
                        "x-amz-target",
                        "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken\t",
                    ),
                ],
            ),
            Some(&b"{}"[..]),
        ),
        (
            &sts,
            parts(
                "https://sts.us-east-1.amazonaws.com/",
                &[("content-type", "text/plain")],
            ),
            Some(&b"Action=AssumeRole+&Version=2011-06-15"[..]),
        ),
        (
            &Endpoint::parse("codeartifact.us-east-1.amazonaws.com").unwrap(),
            parts(
                "https://codeartifact.us-east-1.amazonaws.com/v1/authorization%2Dtoken",
                &[],
            ),
            None,
        ),
        (
            &Endpoint::parse("redshift-serverless.us-east-1.amazonaws.com").unwrap(),
            parts(
                "https://redshift-serverless.us-east-1.amazonaws.com/service/RedshiftServerless/operation/GetCredentials",
                &[],
            ),
            Some(&b""[..]),
        ),
    ] {
        assert!(
            credential_api(endpoint, &parts, body).is_some(),
            "{}",
            parts.uri
        );
    }
}

#[test]
fn other_apis_are_not_taken_for_credential_vending_ones() {
    let sts = sts();
    let form = FORM;
    // Not credential APIs: who am I, a message that merely mentions one, a JSON
    // body that looks like a form.
    for (endpoint, parts, body) in [
        (
            &sts,
            parts("https://sts.us-east-1.amazonaws.com/", &form),
            Some(&b"Action=GetCallerIdentity"[..]),
        ),
        (
            &Endpoint::parse("sqs.us-east-1.amazonaws.com").unwrap(),
            parts(
                "https://sqs.us-east-1.amazonaws.com/",
                &[
                    ("x-amz-target", "AmazonSQS.SendMessage"),
                    ("content-type", "application/x-amz-json-1.0"),
                ],
            ),
            Some(&br#"{"MessageBody":"x&Action=AssumeRole"}"#[..]),
        ),
    ] {
        assert_eq!(
            credential_api(endpoint, &parts, body),
            None,
            "{}",
            parts.uri
        );
    }
}

/// Credentials that expire `lifetime` after each fetch; counts the fetches.
#[derive(Debug)]
struct Expiring {
    lifetime: Duration,
    fetched: std::sync::atomic::AtomicU32,
}

impl ProvideCredentials for Expiring {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        let n = self
            .fetched
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        aws_credential_types::provider::future::ProvideCredentials::ready(Ok(Credentials::new(
            format!("AKID{n}"),
            "secret",
            None,
            Some(SystemTime::now() + self.lifetime),
            "test",
        )))
    }
}

#[tokio::test]
async fn the_cache_fetches_once_and_again_before_expiry() {
    let provider = Arc::new(Expiring {
        lifetime: Duration::from_millis(600),
        fetched: Default::default(),
    });
    let cache = CredentialsCache::new(CredentialsSource::Provider(SharedCredentialsProvider::new(
        ExpiringRef(provider.clone()),
    )));
    let first = cache.get().await.unwrap();
    let again = cache.get().await.unwrap();
    assert_eq!(first.access_key_id(), again.access_key_id(), "cached");
    // Past half of its 600 ms life: fetched again, before it expires.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let refreshed = cache.get().await.unwrap();
    assert_eq!(refreshed.access_key_id(), "AKID1");
    assert_eq!(
        provider.fetched.load(std::sync::atomic::Ordering::SeqCst),
        2
    );
}

#[derive(Debug)]
struct ExpiringRef(Arc<Expiring>);

impl ProvideCredentials for ExpiringRef {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        self.0.provide_credentials()
    }
}

#[test]
fn credentials_are_fetched_again_before_they_expire() {
    let now = SystemTime::now();
    let expiring = |seconds| {
        Credentials::new(
            "AKID",
            "secret",
            None,
            Some(now + Duration::from_secs(seconds)),
            "test",
        )
    };
    // An hour's session: kept until 5 minutes before its end.
    assert!(fresh(&expiring(3600), now, now));
    assert!(fresh(&expiring(3600), now, now + Duration::from_secs(3200)));
    assert!(!fresh(
        &expiring(3600),
        now,
        now + Duration::from_secs(3400)
    ));
    // A 4 s session: kept for its first half.
    assert!(fresh(&expiring(4), now, now + Duration::from_secs(1)));
    assert!(!fresh(&expiring(4), now, now + Duration::from_secs(3)));
    // No expiry: kept.
    let forever = Credentials::new("AKID", "secret", None, None, "test");
    assert!(fresh(&forever, now, now + Duration::from_secs(86_400)));
}
