//! The admin server (`[host] admin_listen`): `/metrics`, `/healthz`, `/readyz`,
//! `/status`, over plain HTTP/1.1.
//!
//! It runs on the host's one runtime, beside the polls and the guests: a `/healthz`
//! answered at all shows that runtime is alive and the guests yield it; the handler then
//! checks what it cannot see from there (the epoch clock ticks while tasks run). Each request is
//! cheap: `/metrics` encodes counters already kept, `/status` copies a small map.
//!
//! It is bounded ([`AdminOptions`]), because whatever reaches its port could otherwise
//! hold sockets and tasks on the runtime the guests share: a cap on open connections
//! (one more is answered 503 and closed at once), a deadline for a request's head that
//! also ends an idle keep-alive connection, a lifetime per connection (so a client that
//! sends a request just before each deadline still lets go), a cap on a request's head,
//! and no request bodies. `/status` names ARNs (account ids), worker names and digests:
//! with a bearer token configured it answers only to that token; `/metrics` and the
//! health endpoints stay open for probes and scrapers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Body as _, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sfn_wasm_engine::WasmEngine;
use sfn_wasm_outbound::GuestSockets;
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metrics::{self, Metrics};
use crate::status::StatusBoard;

/// How long the epoch clock may go without a tick while tasks run before `/healthz`
/// says 503 (it ticks every 10 ms).
pub const EPOCH_TICKS_WITHIN: Duration = Duration::from_secs(2);
/// The default of `[host] admin_max_connections`: far more than a kubelet and a few
/// scrapers open, far fewer than the host's file descriptors.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// What a connection over the cap is told before it is closed: a complete answer, so
/// that a probe reports 503 rather than a reset.
const OVER_CAP: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 35\r\nconnection: close\r\n\r\ntoo many admin connections; retry\r\n";

/// The bounds of an admin server and who may read `/status`. [`Default`] is what
/// `serve` uses, but for `[host] admin_max_connections` and `admin_token_file`; tests
/// shorten the times.
#[derive(Clone)]
pub struct AdminOptions {
    /// The most connections open at once; one more is answered 503 and closed at once
    /// (not queued: a queue would let a flood delay the kubelet's probes unseen).
    pub max_connections: usize,
    /// How long a request's head may take to arrive, counted from when the connection
    /// became idle: it also closes a keep-alive connection that sends nothing.
    pub idle_timeout: Duration,
    /// How long a connection may stay open in all; then it finishes the request in hand
    /// and closes (within another `idle_timeout`), so that requests sent just inside
    /// `idle_timeout` cannot hold it forever.
    pub connection_lifetime: Duration,
    /// The largest request head (request line and headers) accepted, in bytes; a larger
    /// one is answered 431.
    pub max_header_bytes: usize,
    /// The SHA-256 of the bearer token `/status` requires; `None`: `/status` is open.
    /// Only the digest is kept: the comparison is of digests, in constant time, so its
    /// duration says nothing about the token or its length.
    pub status_token_sha256: Option<[u8; 32]>,
}

impl Default for AdminOptions {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: Duration::from_secs(10),
            connection_lifetime: Duration::from_secs(60),
            max_header_bytes: 8 << 10,
            status_token_sha256: None,
        }
    }
}

impl std::fmt::Debug for AdminOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminOptions")
            .field("max_connections", &self.max_connections)
            .field("idle_timeout", &self.idle_timeout)
            .field("connection_lifetime", &self.connection_lifetime)
            .field("max_header_bytes", &self.max_header_bytes)
            .field(
                "status_token_sha256",
                &self.status_token_sha256.map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// What the admin server reads; shared with the runtime that updates it.
pub struct AdminState {
    /// The metrics `/metrics` encodes.
    pub metrics: Arc<Metrics>,
    /// Activities, workers and tasks in flight.
    pub status: Arc<StatusBoard>,
    /// The engine, for its epoch clock.
    pub engine: Arc<WasmEngine>,
    /// Set when shutdown starts: `/readyz` says 503 from then on.
    pub shutting_down: AtomicBool,
    /// The host's descriptors for guests' connections: `/readyz` says 503 while guests
    /// hold them all (their next connection is refused; the host's own calls are not).
    pub guest_sockets: GuestSockets,
}

/// Why the admin server could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct AdminError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// What the OS said.
    #[source]
    pub source: std::io::Error,
}

/// A running admin server; stops when [`stop`](Self::stop)ped or dropped.
pub struct AdminServer {
    addr: SocketAddr,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Binds `addr` now (so that a taken port fails start-up) and serves on the current
    /// runtime, with the default [`AdminOptions`] (`/status` open).
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn start(addr: SocketAddr, state: Arc<AdminState>) -> Result<Self, AdminError> {
        Self::start_with(addr, state, AdminOptions::default()).await
    }

    /// As [`start`](Self::start), within `options`.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn start_with(
        addr: SocketAddr,
        state: Arc<AdminState>,
        options: AdminOptions,
    ) -> Result<Self, AdminError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| AdminError { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| AdminError { addr, source })?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(accept(listener, state, Arc::new(options), stop.clone()));
        Ok(Self {
            addr: bound,
            stop,
            task: Some(task),
        })
    }

    /// The address it listens on (the port the OS chose, for `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and closes connections.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept(
    listener: TcpListener,
    state: Arc<AdminState>,
    options: Arc<AdminOptions>,
    stop: CancellationToken,
) {
    // At least one, so that a cap of 0 cannot make a server that answers nothing.
    let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %err, "admin server: cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Never waits: a client that does not read is not worth a task.
            let _ = stream.try_write(OVER_CAP);
            tracing::debug!(%peer, max = options.max_connections, "admin server: connection cap reached; closed a connection");
            continue;
        };
        tokio::spawn(serve_connection(
            stream,
            permit,
            state.clone(),
            options.clone(),
            stop.clone(),
        ));
    }
}

/// Serves one connection within `options`' times; the permit is its place under the
/// cap, given back when it closes.
async fn serve_connection(
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    state: Arc<AdminState>,
    options: Arc<AdminOptions>,
    stop: CancellationToken,
) {
    let token = options.status_token_sha256;
    let service = service_fn(move |request| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(route(&state, token.as_ref(), &request).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(options.idle_timeout)
        .max_header_size(options.max_header_bytes);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = &mut connection => {}
        () = stop.cancelled() => {}
        () = tokio::time::sleep(options.connection_lifetime) => {
            // The request in hand is answered; a client that does not read that answer
            // does not keep the connection either.
            connection.as_mut().graceful_shutdown();
            tokio::select! {
                _ = tokio::time::timeout(options.idle_timeout, &mut connection) => {}
                () = stop.cancelled() => {}
            }
        }
    }
}

async fn route(
    state: &AdminState,
    token_sha256: Option<&[u8; 32]>,
    request: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
    }
    if !request.body().is_end_stream() {
        // Nothing here takes a body; the connection closes rather than read one.
        let mut response = text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "admin requests take no body\n".into(),
        );
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        return response;
    }
    match request.uri().path() {
        "/metrics" => {
            state.metrics.set_ready(not_ready(state).is_none());
            let mut response = text(StatusCode::OK, state.metrics.encode());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(metrics::CONTENT_TYPE),
            );
            response
        }
        "/healthz" => match unhealthy(state) {
            None => text(StatusCode::OK, "ok\n".into()),
            Some(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("unhealthy: {why}\n"),
            ),
        },
        "/readyz" => match not_ready(state) {
            None => text(StatusCode::OK, "ready\n".into()),
            Some(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        "/status" if !authorized(token_sha256, request.headers()) => {
            let mut response = text(
                StatusCode::UNAUTHORIZED,
                "/status needs `Authorization: Bearer TOKEN` (the token of [host] admin_token_file)\n"
                    .into(),
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"sfn-wasm-host\""),
            );
            response
        }
        "/status" => {
            let mut body = state.status.snapshot().to_string();
            body.push('\n');
            let mut response = text(StatusCode::OK, body);
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            response
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /metrics, /healthz, /readyz or /status\n".into(),
        ),
    }
}

/// Whether `request` may read `/status`: always without a token, else only with
/// `Authorization: Bearer TOKEN`. The presented token is hashed and the digests compared
/// without an early exit, so the time taken does not tell how much of it was right.
fn authorized(token_sha256: Option<&[u8; 32]>, headers: &http::HeaderMap) -> bool {
    let Some(expected) = token_sha256 else {
        return true;
    };
    let Some(presented) = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
    else {
        return false;
    };
    let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    digest
        .iter()
        .zip(expected)
        .fold(0u8, |differ, (a, b)| differ | (a ^ b))
        == 0
}

/// Why the host is not ready, or `None`: what `/readyz` and the `ready` metric say.
fn not_ready(state: &AdminState) -> Option<String> {
    if state.shutting_down.load(Ordering::SeqCst) {
        Some("shutting down".to_owned())
    } else if state.guest_sockets.exhausted() {
        Some(format!(
            "guests hold all {} connections the host gives them (half its open-files limit)",
            state.guest_sockets.limit()
        ))
    } else {
        state.status.not_ready()
    }
}

/// Why the host is not healthy, or `None`.
fn unhealthy(state: &AdminState) -> Option<String> {
    if state.engine.epoch_stalled(EPOCH_TICKS_WITHIN) {
        return Some(format!(
            "tasks are running and the epoch clock has not ticked for {} s",
            EPOCH_TICKS_WITHIN.as_secs()
        ));
    }
    None
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_over_the_cap_is_one_whole_response() {
        let text = std::str::from_utf8(OVER_CAP).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap();
        assert_eq!(length.parse::<usize>().unwrap(), body.len());
    }

    #[test]
    fn only_the_bearer_token_is_authorized_when_one_is_set() {
        let expected: [u8; 32] = Sha256::digest(b"t0ken").into();
        let with = |value: Option<&str>| {
            let mut headers = http::HeaderMap::new();
            if let Some(value) = value {
                headers.insert(header::AUTHORIZATION, value.parse().unwrap());
            }
            headers
        };
        assert!(authorized(None, &with(None)));
        assert!(authorized(Some(&expected), &with(Some("Bearer t0ken"))));
        assert!(authorized(Some(&expected), &with(Some("bearer  t0ken "))));
        for refused in [
            None,
            Some("Bearer"),
            Some("Bearer t0ke"),
            Some("Bearer t0ken2"),
            Some("Basic t0ken"),
            Some("t0ken"),
        ] {
            assert!(!authorized(Some(&expected), &with(refused)), "{refused:?}");
        }
    }
}
