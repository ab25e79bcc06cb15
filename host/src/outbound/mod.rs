//! Outbound HTTP for guests (`wasi:http/outgoing-handler`), deny by default.
//!
//! An activity's [`OutboundPolicy`] (its `allowed_outbound_hosts` and
//! `[activity.outbound]` limits) is built once; each task gets an [`OutboundTask`] in
//! its `Store`, which wasmtime-wasi-http calls for every request the guest sends. A
//! request is sent only when:
//! 1. an entry of the allow-list matches its scheme, host and port (else the guest gets
//!    `HTTP-request-denied` and the host logs `outbound:denied`);
//! 2. the task has sent fewer than `max_requests` (else `connection-limit-reached`);
//! 3. after DNS, the address it connects to passes [`address::may_connect`] (else
//!    `destination-IP-prohibited`): the host connects to the very address it checked,
//!    so a second DNS answer cannot slip another one in.
//!
//! Timeouts are the guest's request options capped by the activity's; response bodies
//! count against the task's `max_response_bytes`. The request runs on a task the
//! guest's `Store` owns, so the task's deadline or an abort, which drop the `Store`,
//! stop it too. A limit or timeout hit while the body streams reaches the guest with
//! its `wasi:http` error code, as at the head ([`http_error_code`]).

mod address;
mod allow;
mod codes;
mod send;

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use wasmtime_wasi_http::{RequestOptions, WasiHttpHooks};

pub use address::{AddressClass, classify, may_connect};
pub use allow::{AllowList, AllowedHost, Scheme};
pub use codes::{TYPES_INTERFACE, http_error_code};
pub(crate) use send::tls_connector;

/// `[activity.outbound]`: what one task may do over HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
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
}

impl Default for OutboundLimits {
    fn default() -> Self {
        Self {
            max_requests: 100,
            max_response_bytes: 16 << 20,
            connect_timeout_ms: 5000,
            first_byte_timeout_ms: 30_000,
        }
    }
}

/// An activity's outbound grant: where its tasks may send requests and how much.
#[derive(Clone)]
pub struct OutboundPolicy {
    allowed: AllowList,
    limits: OutboundLimits,
    /// Set up only when an entry is https.
    tls: Option<tokio_rustls::TlsConnector>,
}

impl std::fmt::Debug for OutboundPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundPolicy")
            .field("allowed", &self.allowed)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl OutboundPolicy {
    /// A policy allowing `allowed` within `limits`. TLS trusts the Mozilla roots
    /// (webpki-roots), so a host needs no CA bundle of its own.
    ///
    /// # Errors
    /// When the TLS client cannot be configured (a rustls build without TLS 1.2/1.3).
    pub fn new(allowed: AllowList, limits: OutboundLimits) -> Result<Self, rustls::Error> {
        let https = allowed
            .entries()
            .iter()
            .any(|entry| entry.scheme() == Scheme::Https);
        Ok(Self {
            allowed,
            limits,
            tls: https.then(send::tls_connector).transpose()?,
        })
    }

    /// No outbound requests at all.
    pub fn deny_all() -> Self {
        Self {
            allowed: AllowList::default(),
            limits: OutboundLimits::default(),
            tls: None,
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
}

/// One task's outbound state: the policy, what the task has used, and the names its
/// log lines carry. Lives in the task's `Store`.
pub struct OutboundTask {
    policy: Arc<OutboundPolicy>,
    requests: u32,
    received: Arc<send::Budget>,
    activity: Arc<str>,
    task_id: Arc<str>,
}

impl OutboundTask {
    /// The outbound state of a new task of `activity`.
    pub fn new(policy: Arc<OutboundPolicy>, activity: Arc<str>, task_id: Arc<str>) -> Self {
        let budget = policy.limits.max_response_bytes;
        Self {
            policy,
            requests: 0,
            received: Arc::new(send::Budget::new(budget)),
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
        let authority = request.uri().authority().map_or("", |a| a.as_str());
        tracing::info!(
            event = "outbound:denied",
            activity = &*self.activity,
            task_id = &*self.task_id,
            authority,
            "outbound:denied: {why}"
        );
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

impl WasiHttpHooks for OutboundTask {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<RequestOptions>,
        _done: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> SendFuture {
        let uri = request.uri();
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        let target = uri
            .authority()
            .zip(uri.scheme_str())
            .and_then(|(a, scheme)| {
                let scheme = match scheme {
                    "http" => Scheme::Http,
                    "https" => Scheme::Https,
                    _ => return None,
                };
                Some((
                    scheme,
                    a.host(),
                    a.port_u16().unwrap_or(scheme.default_port()),
                ))
            });
        let entry = target.and_then(|(scheme, host, port)| {
            self.policy
                .allowed
                .find(scheme, host, port)
                .map(|entry| (scheme, host.to_owned(), port, entry.is_literal()))
        });
        let Some((scheme, host, port, literal)) = entry else {
            let why = format!(
                "no allowed_outbound_hosts entry allows {}://{authority}",
                uri.scheme_str().unwrap_or("?")
            );
            return self.deny(request, &why, wasmtime_wasi_http::Error::HttpRequestDenied);
        };
        if self.requests >= self.policy.limits.max_requests {
            let why = format!(
                "the task has sent its {} requests (`outbound.max_requests`)",
                self.policy.limits.max_requests
            );
            return self.deny(
                request,
                &why,
                wasmtime_wasi_http::Error::ConnectionLimitReached,
            );
        }
        self.requests += 1;
        let target = send::Target {
            scheme,
            host,
            port,
            literal,
            authority: authority.to_owned(),
        };
        let context = send::LogContext {
            activity: self.activity.clone(),
            task_id: self.task_id.clone(),
        };
        Box::new(send::send(
            request,
            target,
            self.timeouts(options),
            self.received.clone(),
            self.policy.tls.clone(),
            context,
        ))
    }
}
