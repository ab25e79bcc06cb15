//! Outbound HTTP for guests (`wasi:http/outgoing-handler`), deny by default.
//!
//! An activity's [`OutboundPolicy`] (its `allowed_outbound_hosts` and
//! `[activity.outbound]` limits) is built once; each task gets an [`OutboundTask`] in
//! its `Store`, which wasmtime-wasi-http calls for every request the guest sends. A
//! request is sent only when:
//! 1. an entry of the allow-list matches its scheme, host and port (else the guest gets
//!    `HTTP-request-denied` and the host logs `outbound:denied`);
//! 2. the task has sent fewer than `max_requests`, allowed or not (else
//!    `connection-limit-reached`), and has fewer than `max_concurrent_requests` in
//!    flight (else `connection-limit-reached`);
//! 3. after DNS, the address it connects to passes [`address::may_connect`] (else
//!    `destination-IP-prohibited`): the host connects to the very address it checked,
//!    so a second DNS answer cannot slip another one in.
//!
//! What a guest makes the host hold is counted against its task: requests in flight
//! (each a socket), request bodies read whole to be signed (`max_request_buffer_bytes`
//! over all its requests), response bytes, and the log lines its requests cause (the
//! task's [`LineBudget`], shared with its stdout). An activity keeps at most
//! `pool_max_idle` idle connections, over all host names.
//!
//! Timeouts are the guest's request options capped by the activity's; response bodies
//! count against the task's `max_response_bytes`. The request runs on a task the
//! guest's `Store` owns, so the task's deadline or an abort, which drop the `Store`,
//! stop it too. A limit or timeout hit while the body streams reaches the guest with
//! its `wasi:http` error code, as at the head (`codes.rs`, which the task's
//! [`OutboundHooks::error_code`](sfn_wasm_engine::OutboundHooks::error_code) answers with).
//!
//! A request that may be sent twice (an idempotent method, or an `Idempotency-Key`, and
//! no body byte consumed) and fails on a kept connection before any response byte is
//! sent again, once, on a new connection ([`retry`]).
#![warn(missing_docs)]
// No function over 80 lines (`clippy.toml`): a long one is several steps that want names.
#![warn(clippy::too_many_lines)]

mod address;
mod allow;
pub mod aws;
mod codes;
mod pool;
mod retry;
mod send;
mod sockets;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use wasmtime_wasi_http::{RequestOptions, WasiHttpHooks};

use send::shown;
use sfn_wasm_engine::budget::LineBudget;

pub use address::{AddressClass, Reach, classify, may_connect};
pub use allow::{AllowList, AllowedHost, Scheme};
pub use aws::{
    AwsGrant, AwsSigner, Endpoint, MAX_SIGNED_BODY_BYTES, SignError, endpoint_variable, is_label,
    is_region, service_endpoints_from_env,
};
pub use send::read_ca_file;
pub use send::{tls_client_config, tls_connector};
pub use sockets::{GuestSockets, SocketPermit};

/// `[activity.outbound]`'s numbers: what one task may do over HTTP, and how long the
/// activity keeps connections for reuse. (`ca_file` is in the host's `GrantsConfig`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboundLimits {
    /// Requests one task may send; the next ones fail with `connection-limit-reached`.
    pub max_requests: u32,
    /// Response body bytes one task may receive, over all its requests.
    pub max_response_bytes: u64,
    /// The longest a connection (DNS, TCP, TLS) may take.
    pub connect_timeout_ms: u64,
    /// The longest from sending a request to the first byte of its response, and
    /// between two reads of a response body.
    pub first_byte_timeout_ms: u64,
    /// How long an idle connection is kept for the activity's next request to the same
    /// host, in seconds; 0 turns reuse off. The default, 4, is below the 5 s servers
    /// commonly keep one (Node, load balancers); a response's `Keep-Alive: timeout=N`
    /// shortens it to N − 1 for its connection.
    pub pool_idle_seconds: u64,
    /// The most idle connections kept per host.
    pub pool_max_idle_per_host: u32,
    /// The most idle connections the activity keeps, over all hosts.
    pub pool_max_idle: u32,
    /// Requests one task may have in flight at once (each holds a connection until its
    /// response body is read or dropped); more fail with `connection-limit-reached`.
    pub max_concurrent_requests: u32,
    /// Request body bytes the host may hold for one task at once: bodies read whole to
    /// be signed (AWS requests other than S3). More fail with `HTTP-request-body-size`.
    pub max_request_buffer_bytes: u64,
}

impl Default for OutboundLimits {
    fn default() -> Self {
        Self {
            max_requests: 100,
            max_response_bytes: 16 << 20,
            connect_timeout_ms: 5000,
            first_byte_timeout_ms: 30_000,
            pool_idle_seconds: 4,
            pool_max_idle_per_host: 8,
            pool_max_idle: 32,
            max_concurrent_requests: 16,
            max_request_buffer_bytes: 16 << 20,
        }
    }
}

/// An activity's outbound grant: where its tasks may send requests and how much.
#[derive(Clone)]
pub struct OutboundPolicy {
    allowed: AllowList,
    limits: OutboundLimits,
    /// `[activity.aws]`: the AWS requests the host signs.
    aws: Option<Arc<AwsSigner>>,
    /// Set up only when an entry is https, or AWS requests are granted.
    tls: Option<tokio_rustls::TlsConnector>,
    /// The activity's idle connections.
    pool: Arc<pool::Pool>,
    /// The host's descriptors for guests' connections, shared with every activity.
    sockets: GuestSockets,
}

impl std::fmt::Debug for OutboundPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundPolicy")
            .field("allowed", &self.allowed)
            .field("limits", &self.limits)
            .field("aws", &self.aws)
            .finish_non_exhaustive()
    }
}

impl OutboundPolicy {
    /// A policy allowing `allowed`, and the AWS requests `aws` signs, within `limits`.
    /// TLS trusts the Mozilla roots (webpki-roots), so a host needs no CA bundle of its
    /// own, and `extra_roots` (`ca_file`). Connections count against `sockets`, the
    /// host's share for guests.
    ///
    /// # Errors
    /// When the TLS client cannot be configured (a rustls build without TLS 1.2/1.3).
    pub fn new(
        allowed: AllowList,
        limits: OutboundLimits,
        aws: Option<AwsSigner>,
        extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
        sockets: GuestSockets,
    ) -> Result<Self, rustls::Error> {
        let https = aws.is_some()
            || allowed
                .entries()
                .iter()
                .any(|entry| entry.scheme() == Scheme::Https);
        Ok(Self {
            allowed,
            limits,
            aws: aws.map(Arc::new),
            tls: https
                .then(|| send::tls_connector_with(extra_roots))
                .transpose()?,
            pool: Arc::new(pool::Pool::new(
                Duration::from_secs(limits.pool_idle_seconds),
                limits.pool_max_idle_per_host,
                limits.pool_max_idle,
            )),
            sockets,
        })
    }

    /// No outbound requests at all.
    pub fn deny_all() -> Self {
        Self {
            allowed: AllowList::default(),
            limits: OutboundLimits::default(),
            aws: None,
            tls: None,
            pool: Arc::new(pool::Pool::new(Duration::ZERO, 1, 1)),
            sockets: GuestSockets::new(0),
        }
    }

    /// The allow-list.
    pub fn allowed(&self) -> &AllowList {
        &self.allowed
    }

    /// The limits.
    pub fn limits(&self) -> &OutboundLimits {
        &self.limits
    }

    /// The host's share of descriptors for guests' connections, which this policy's
    /// connections count against.
    pub fn sockets(&self) -> &GuestSockets {
        &self.sockets
    }
}

/// One task's outbound state: the policy, what the task has used, and the names its
/// log lines carry. Lives in the task's `Store`.
pub struct OutboundTask {
    policy: Arc<OutboundPolicy>,
    /// Requests the guest has sent, allowed or not.
    requests: u32,
    /// The task's first request past `max_requests` was logged; the rest are not.
    limit_logged: bool,
    received: Arc<send::Budget>,
    /// Request body bytes the host holds for the task (signed bodies).
    held: Arc<send::Budget>,
    /// One permit per request in flight.
    in_flight: Arc<Semaphore>,
    /// The task's log-line rate limit, shared with its stdout and stderr.
    lines: Arc<LineBudget>,
    activity: Arc<str>,
    task_id: Arc<str>,
}

impl OutboundTask {
    /// The outbound state of a new task of `activity`, whose log lines count against
    /// `lines`.
    pub fn new(
        policy: Arc<OutboundPolicy>,
        activity: Arc<str>,
        task_id: Arc<str>,
        lines: Arc<LineBudget>,
    ) -> Self {
        let limits = policy.limits;
        Self {
            policy,
            requests: 0,
            limit_logged: false,
            received: Arc::new(send::Budget::new(limits.max_response_bytes)),
            held: Arc::new(send::Budget::new(limits.max_request_buffer_bytes)),
            in_flight: Arc::new(Semaphore::new(
                usize::try_from(limits.max_concurrent_requests).unwrap_or(usize::MAX),
            )),
            lines,
            activity,
            task_id,
        }
    }

    /// The timeouts of one request: the guest's options, capped by the activity's.
    fn timeouts(&self, options: Option<RequestOptions>) -> send::Timeouts {
        let limits = &self.policy.limits;
        let cap = |asked: Option<Duration>, limit: Duration| asked.map_or(limit, |a| a.min(limit));
        let first_byte = Duration::from_millis(limits.first_byte_timeout_ms);
        send::Timeouts {
            connect: cap(
                options.and_then(|o| o.connect_timeout),
                Duration::from_millis(limits.connect_timeout_ms),
            ),
            first_byte: cap(options.and_then(|o| o.first_byte_timeout), first_byte),
            between_bytes: cap(options.and_then(|o| o.between_bytes_timeout), first_byte),
        }
    }
}

impl OutboundTask {
    /// Logs `outbound:denied` and fails the request with `error` once the guest has
    /// written its body (see [`send::refuse`]).
    fn deny(
        &self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        why: &str,
        error: wasmtime_wasi_http::Error,
    ) -> SendFuture {
        self.deny_naming(request, why, error, None)
    }

    /// [`deny`](Self::deny), with the AWS endpoint's `service` and `region` in the line
    /// when the request named one. The line counts against the task's line budget.
    fn deny_naming(
        &self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        why: &str,
        error: wasmtime_wasi_http::Error,
        endpoint: Option<&Endpoint>,
    ) -> SendFuture {
        let authority = shown(request.uri().authority().map_or("", |a| a.as_str()));
        if self.lines.take() {
            tracing::info!(
                event = "outbound:denied",
                activity = &*self.activity,
                task_id = &*self.task_id,
                authority = &*authority,
                service = endpoint.map(|e| e.service.as_str()),
                region = endpoint.map(|e| e.region.as_str()),
                "outbound:denied: {why}"
            );
        }
        let refused = send::refuse(request, error);
        Box::new(async move { Err(refused.await) })
    }
}

type SendFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<wasmtime_wasi_http::WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

/// The engine asks the task's hooks to name the errors a guest reads from a body: this
/// client's own body errors (cut at the byte budget, timed out) have wasi:http codes.
impl sfn_wasm_engine::OutboundHooks for OutboundTask {
    fn error_code(
        &self,
        err: &wasmtime::Error,
    ) -> Option<wasmtime_wasi_http::p2::bindings::http::types::ErrorCode> {
        codes::http_error_code(err)
    }
}

impl WasiHttpHooks for OutboundTask {
    fn p2_error_from_tls(
        &mut self,
        err: &std::io::Error,
    ) -> wasmtime_wasi_http::p2::bindings::http::types::ErrorCode {
        codes::tls_error_code(err)
    }

    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<RequestOptions>,
        _done: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> SendFuture {
        // Every request counts, allowed or not: a guest that sends denied requests in a
        // loop costs the host no more than `max_requests` of them, and one line for all
        // those past it.
        if let Some(why) = self.count_request() {
            return self.deny_over_limit(request, &why);
        }
        let uri = request.uri();
        let authority = uri
            .authority()
            .map(|a| a.as_str())
            .unwrap_or_default()
            .to_owned();
        let scheme_text = uri.scheme_str().unwrap_or("?").to_owned();
        let target = request_target(uri);
        // An AWS endpoint (on its https port): signed by the host when granted. Read
        // only for an activity with a grant; a denial reads it again to name it.
        let aws = self
            .policy
            .aws
            .as_ref()
            .and_then(|_| aws_endpoint(target.as_ref()?));
        if let Some((endpoint, https)) = &aws
            && let Some(signer) = self.policy.aws.clone()
            && signer.grant().allows(endpoint)
        {
            if !https {
                let why = format!(
                    "AWS requests are signed only over https (on port 443): {scheme_text}://{}",
                    shown(&authority)
                );
                return self.deny(request, &why, wasmtime_wasi_http::Error::HttpRequestDenied);
            }
            let Some(permit) = self.permit() else {
                return self.deny_in_flight(request);
            };
            return self.send_aws(request, endpoint.clone(), signer, options, permit);
        }
        let entry = target.as_ref().and_then(|(scheme, host, port)| {
            self.policy
                .allowed
                .find(*scheme, host, *port)
                .map(|entry| (*scheme, host.clone(), *port, entry.is_literal()))
        });
        let Some(allowed) = entry else {
            if let Some((endpoint, _)) = aws.or_else(|| aws_endpoint(target.as_ref()?)) {
                return self.deny_aws(request, &endpoint);
            }
            let why = format!(
                "no allowed_outbound_hosts entry allows {scheme_text}://{}",
                shown(&authority)
            );
            return self.deny(request, &why, wasmtime_wasi_http::Error::HttpRequestDenied);
        };
        self.send_allowed(request, allowed, authority, options)
    }
}

/// The `(scheme, host, port)` a request's URI names, when it has a host and its scheme
/// is http or https (the port its scheme's when not written).
fn request_target(uri: &http::Uri) -> Option<(Scheme, String, u16)> {
    uri.authority()
        .zip(uri.scheme_str())
        .and_then(|(a, scheme)| {
            let scheme = match scheme {
                "http" => Scheme::Http,
                "https" => Scheme::Https,
                _ => return None,
            };
            Some((
                scheme,
                a.host().to_owned(),
                a.port_u16().unwrap_or(scheme.default_port()),
            ))
        })
}

impl OutboundTask {
    /// Refuses a request past `max_requests`: the first is logged (`why`), the ones
    /// after it fail without a line.
    fn deny_over_limit(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        why: &str,
    ) -> SendFuture {
        if std::mem::replace(&mut self.limit_logged, true) {
            let refused = send::refuse(request, wasmtime_wasi_http::Error::ConnectionLimitReached);
            return Box::new(async move { Err(refused.await) });
        }
        self.deny(
            request,
            why,
            wasmtime_wasi_http::Error::ConnectionLimitReached,
        )
    }

    /// Refuses a request while the task has `max_concurrent_requests` in flight.
    fn deny_in_flight(&self, request: http::Request<wasmtime_wasi_http::WasiBody>) -> SendFuture {
        self.deny(
            request,
            &self.too_many_in_flight(),
            wasmtime_wasi_http::Error::ConnectionLimitReached,
        )
    }

    /// Sends a request an allow-list entry matched (`(scheme, host, port, literal)`),
    /// when the task has a place for it among its requests in flight.
    fn send_allowed(
        &self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        (scheme, host, port, literal): (Scheme, String, u16, bool),
        authority: String,
        options: Option<RequestOptions>,
    ) -> SendFuture {
        let Some(permit) = self.permit() else {
            return self.deny_in_flight(request);
        };
        let target = send::Target {
            scheme,
            host,
            port,
            reach: if literal {
                Reach::Literal
            } else {
                Reach::Public
            },
            authority,
        };
        let context = self.log_context(None);
        Box::new(send::send(
            request,
            target,
            self.timeouts(options),
            self.received.clone(),
            self.policy.tls.clone(),
            context,
            self.policy.pool.clone(),
            permit,
            self.policy.sockets.clone(),
        ))
    }
}

/// The AWS endpoint a request's `(scheme, host, port)` names, and whether it is on its
/// https port. Host names are case-insensitive; the endpoint rules are lower-case.
fn aws_endpoint((scheme, host, port): &(Scheme, String, u16)) -> Option<(Endpoint, bool)> {
    let endpoint = Endpoint::parse(&host.to_ascii_lowercase())?;
    Some((endpoint, *scheme == Scheme::Https && *port == 443))
}

impl OutboundTask {
    /// Counts a request against `max_requests`; why not, when the task has sent them all.
    fn count_request(&mut self) -> Option<String> {
        if self.requests >= self.policy.limits.max_requests {
            return Some(format!(
                "the task has sent its {} requests (`outbound.max_requests`)",
                self.policy.limits.max_requests
            ));
        }
        self.requests += 1;
        None
    }

    /// A place among the task's requests in flight, if one is free.
    fn permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.in_flight.clone().try_acquire_owned().ok()
    }

    fn too_many_in_flight(&self) -> String {
        format!(
            "the task has {} requests in flight (`outbound.max_concurrent_requests`): read or drop a response first",
            self.policy.limits.max_concurrent_requests
        )
    }

    fn log_context(&self, aws: Option<&Endpoint>) -> send::LogContext {
        send::LogContext {
            activity: self.activity.clone(),
            task_id: self.task_id.clone(),
            lines: self.lines.clone(),
            aws: aws.map(|endpoint| send::AwsLabel {
                service: endpoint.service.as_str().into(),
                region: endpoint.region.as_str().into(),
            }),
        }
    }

    /// Sends a granted AWS request: credentials, signature, then the same path as any
    /// other request (address check, limits, timeouts), to `[aws] endpoint_url` when set.
    fn send_aws(
        &self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        endpoint: Endpoint,
        signer: Arc<AwsSigner>,
        options: Option<RequestOptions>,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> SendFuture {
        let authority = request
            .uri()
            .authority()
            .map_or("", |a| a.as_str())
            .to_owned();
        let target = signer.destination(
            &endpoint,
            request.uri().host().unwrap_or_default(),
            authority,
        );
        let context = self.log_context(Some(&endpoint));
        let timeouts = self.timeouts(options);
        let budget = self.received.clone();
        let held = send::Held::new(self.held.clone());
        let tls = self.policy.tls.clone();
        let pool = self.policy.pool.clone();
        let sockets = self.policy.sockets.clone();
        Box::new(async move {
            // A request refused before its body was read is handed back, to be drained.
            let signed = match signer.credentials().await {
                Ok(credentials) => signer
                    .sign(request, &endpoint, credentials, held)
                    .await
                    .map_err(|err| (err, None)),
                Err(err) => Err((err, Some(request))),
            };
            let request = match signed {
                Ok(request) => request,
                Err((err, unread)) => {
                    if context.lines.take() {
                        tracing::warn!(
                            event = "outbound:aws",
                            activity = &*context.activity,
                            task_id = &*context.task_id,
                            service = endpoint.service.as_str(),
                            region = endpoint.region.as_str(),
                            error = %err,
                            "outbound:aws: not sent: {err}"
                        );
                    }
                    let error = err.into_error();
                    return Err(match unread {
                        Some(request) => send::refuse(request, error).await,
                        None => error,
                    });
                }
            };
            send::send(
                request, target, timeouts, budget, tls, context, pool, permit, sockets,
            )
            .await
        })
    }

    /// Refuses a request to an AWS endpoint the activity was not granted, naming the
    /// service and region in `outbound:denied`.
    fn deny_aws(
        &self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        endpoint: &Endpoint,
    ) -> SendFuture {
        let why = match &self.policy.aws {
            Some(_) => "the activity's `[activity.aws]` does not grant this service in this region",
            None => {
                "the activity has no `[activity.aws]` grant (nor an allowed_outbound_hosts entry for it)"
            }
        };
        let why = format!("{} in {}: {why}", endpoint.service, endpoint.region);
        self.deny_naming(
            request,
            &why,
            wasmtime_wasi_http::Error::HttpRequestDenied,
            Some(endpoint),
        )
    }
}
