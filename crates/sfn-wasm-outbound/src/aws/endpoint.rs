//! AWS endpoint names: what a request's host says about the service and region it
//! calls, and the SDKs' `AWS_ENDPOINT_URL_<SERVICE>` destinations.

/// The `AWS_ENDPOINT_URL_<SERVICE>` variable the AWS SDKs read for a service, by its
/// signing name: the service id upper-cased, spaces and `-` as `_` (`SQS`, `DYNAMODB`,
/// `SECRETS_MANAGER`, `SFN` for `states`).
pub fn endpoint_variable(service: &str) -> String {
    let id = match service {
        "states" => "SFN",
        "secretsmanager" => "SECRETS_MANAGER",
        "events" => "EVENTBRIDGE",
        "monitoring" => "CLOUDWATCH",
        "logs" => "CLOUDWATCH_LOGS",
        "apigateway" => "API_GATEWAY",
        "cognito-idp" => "COGNITO_IDENTITY_PROVIDER",
        "es" => "OPENSEARCH",
        other => other,
    };
    format!(
        "AWS_ENDPOINT_URL_{}",
        id.to_ascii_uppercase().replace('-', "_")
    )
}

/// The granted `services` whose `AWS_ENDPOINT_URL_<SERVICE>` is set (and not empty) in
/// `env`, with its value.
pub fn service_endpoints_from_env(
    services: &[String],
    env: impl Fn(&str) -> Option<String>,
) -> Vec<(String, String)> {
    services
        .iter()
        .filter_map(|service| {
            let url = env(&endpoint_variable(service)).filter(|url| !url.is_empty())?;
            Some((service.clone(), url))
        })
        .collect()
}

/// The AWS endpoint a request's host names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The SigV4 signing name (`s3`; `ses` for `email.*`).
    pub service: String,
    /// The region the request is signed for (`us-east-1` for a global endpoint).
    pub region: String,
    /// S3's virtual-hosted form: the bucket in the host name.
    pub bucket: Option<String>,
    /// A global endpoint (`iam.amazonaws.com`): no region in the name.
    pub global: bool,
}

impl Endpoint {
    /// Reads `host` (lower case, no port) as an AWS endpoint:
    /// `SERVICE.REGION.amazonaws.com`, `BUCKET.s3.REGION.amazonaws.com`, the global
    /// `SERVICE.amazonaws.com` (signed in `us-east-1`) and `BUCKET.s3.amazonaws.com`.
    /// `None` for anything else, look-alikes included
    /// (`s3.us-east-1.amazonaws.com.attacker.test`).
    pub fn parse(host: &str) -> Option<Self> {
        let name = host.strip_suffix(".amazonaws.com")?;
        let labels: Vec<&str> = name.split('.').collect();
        if labels.iter().any(|label| !is_label(label)) {
            return None;
        }
        let signing_name = |prefix: &str| match prefix {
            "email" => "ses".to_owned(),
            other => other.to_owned(),
        };
        match labels.as_slice() {
            [service] => Some(Self {
                service: signing_name(service),
                region: "us-east-1".into(),
                bucket: None,
                global: true,
            }),
            [service, region] if is_region(region) => Some(Self {
                service: signing_name(service),
                region: (*region).into(),
                bucket: None,
                global: false,
            }),
            [bucket @ .., "s3"] if !bucket.is_empty() => Some(Self {
                service: "s3".into(),
                region: "us-east-1".into(),
                bucket: Some(bucket.join(".")),
                global: true,
            }),
            [bucket @ .., "s3", region] if !bucket.is_empty() && is_region(region) => Some(Self {
                service: "s3".into(),
                region: (*region).into(),
                bucket: Some(bucket.join(".")),
                global: false,
            }),
            _ => None,
        }
    }
}

/// Whether `name` can be a SigV4 signing name or endpoint label: lower-case letters,
/// digits and `-`.
pub fn is_label(label: &str) -> bool {
    !label.is_empty()
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Whether `label` is shaped like a region name (`us-east-1`, `eu-central-2`,
/// `us-gov-west-1`): lower-case words, then a number.
pub fn is_region(label: &str) -> bool {
    let parts: Vec<&str> = label.split('-').collect();
    parts.len() >= 3
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty()
}

/// `url` as a destination: a URL with a scheme and host. The error names `what` (the key
/// or variable), never the URL, which may carry a token.
pub(super) fn endpoint_uri(url: &str, what: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|err| format!("{what} is not a URL: {err}"))?;
    if uri.authority().is_none() || uri.scheme_str().is_none() {
        return Err(format!(
            "{what} needs a scheme and host, like http://127.0.0.1:4566"
        ));
    }
    Ok(uri)
}
