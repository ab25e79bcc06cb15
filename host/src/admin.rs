//! The admin server (`[host] admin_listen`): `/metrics`, `/healthz`, `/readyz`,
//! `/status`, over plain HTTP/1.1.
//!
//! It runs on the host's one runtime, beside the polls and the guests: a `/healthz`
//! answered at all shows that runtime is alive and the guests yield it; the handler then
//! checks what it cannot see from there (the epoch clock ticks while tasks run). Each request is
//! cheap: `/metrics` encodes counters already kept, `/status` copies a small map.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::engine::WasmEngine;
use crate::metrics::{self, Metrics};
use crate::status::StatusBoard;

/// How long the epoch clock may go without a tick while tasks run before `/healthz`
/// says 503 (it ticks every 10 ms).
pub const EPOCH_TICKS_WITHIN: Duration = Duration::from_secs(2);
/// A connection that sends nothing for this long is closed.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// runtime.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn start(addr: SocketAddr, state: Arc<AdminState>) -> Result<Self, AdminError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| AdminError { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| AdminError { addr, source })?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(accept(listener, state, stop.clone()));
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

async fn accept(listener: TcpListener, state: Arc<AdminState>, stop: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
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
        let state = state.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, &request).await) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = &mut connection => {}
                () = stop.cancelled() => {}
            }
        });
    }
}

async fn route(state: &AdminState, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
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

/// Why the host is not ready, or `None`: what `/readyz` and the `ready` metric say.
fn not_ready(state: &AdminState) -> Option<String> {
    if state.shutting_down.load(Ordering::SeqCst) {
        Some("shutting down".to_owned())
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
