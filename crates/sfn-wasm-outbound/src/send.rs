//! Sending one allowed request: resolve, check the address, connect, TLS, HTTP/1.1,
//! and a response body that keeps to the task's byte budget and read timeout.
//!
//! wasmtime-wasi-http's own `default_send_request` connects to the request's name
//! itself, so the address cannot be checked between DNS and connect; this does the
//! same steps with the check in between.

mod connect;
mod tls;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use sfn_wasm_engine::budget::LineBudget;
use tokio::io::{AsyncRead, AsyncWrite};
use wasmtime_wasi_http::{Error, WasiBody};

use super::address::Reach;
use super::allow::Scheme;
use super::pool::{Connection, Pool, PoolKey, idle_limit};
use super::retry::{Replay, dead_connection, may_resend};
use super::sockets::GuestSockets;
use connect::{connect_within, open};

pub use tls::read_ca_file;
pub(super) use tls::tls_connector_with;
pub use tls::{tls_client_config, tls_connector};

/// Bytes a task may still receive (response bodies) or have the host hold (request
/// bodies read whole to be signed), shared by all its requests.
#[derive(Debug)]
pub(super) struct Budget {
    limit: u64,
    used: AtomicU64,
}

impl Budget {
    pub(super) fn new(limit: u64) -> Self {
        Self {
            limit,
            used: AtomicU64::new(0),
        }
    }

    /// Takes `bytes` from the budget; false (and nothing taken) when they do not fit.
    fn take(&self, bytes: u64) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.used.load(Ordering::Relaxed))
    }

    /// The budget's limit.
    pub(super) fn limit(&self) -> u64 {
        self.limit
    }

    /// Gives back `bytes` taken before (bytes the host no longer holds).
    fn release(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                Some(used.saturating_sub(bytes))
            });
    }
}

/// Bytes taken from a [`Budget`] while the host holds them; given back when dropped.
#[derive(Debug)]
pub(super) struct Held {
    budget: Arc<Budget>,
    bytes: u64,
}

impl Held {
    /// Nothing held yet, against `budget`.
    pub(super) fn new(budget: Arc<Budget>) -> Self {
        Self { budget, bytes: 0 }
    }

    /// The budget's limit.
    pub(super) fn limit(&self) -> u64 {
        self.budget.limit()
    }

    /// Takes `bytes` more; false (nothing taken) when the budget has no room for them.
    pub(super) fn take(&mut self, bytes: u64) -> bool {
        let taken = self.budget.take(bytes);
        if taken {
            self.bytes += bytes;
        }
        taken
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

/// A request body the host read whole (to sign it), holding its bytes against the
/// task's budget until hyper has written it and drops it.
pub(super) struct HeldBody {
    bytes: Option<Bytes>,
    _held: Held,
}

impl HeldBody {
    pub(super) fn new(bytes: Bytes, held: Held) -> Self {
        Self {
            bytes: Some(bytes).filter(|b| !b.is_empty()),
            _held: held,
        }
    }
}

impl Body for HeldBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        Poll::Ready(self.bytes.take().map(|bytes| Ok(Frame::data(bytes))))
    }

    fn is_end_stream(&self) -> bool {
        self.bytes.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.bytes.as_ref().map_or(0, |b| b.len() as u64))
    }
}

/// The longest host name a log line shows whole: a DNS name's 253 bytes and a port.
const MAX_SHOWN_AUTHORITY: usize = 260;

/// `authority` for a log line: without userinfo, and cut (and marked `…`) past
/// [`MAX_SHOWN_AUTHORITY`], so that a guest's 8 KB host name costs the log no more than
/// a real one.
pub(super) fn shown(authority: &str) -> std::borrow::Cow<'_, str> {
    // A guest may put userinfo in its authority: its own secret, not the log's.
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if authority.len() <= MAX_SHOWN_AUTHORITY {
        return authority.into();
    }
    let mut end = MAX_SHOWN_AUTHORITY;
    while !authority.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &authority[..end]).into()
}

/// The timeouts of one request.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub between_bytes: Duration,
}

/// Where a request goes, as the allow-list matched it.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub scheme: Scheme,
    /// As in the URI: IPv6 literals in brackets.
    pub host: String,
    pub port: u16,
    /// Which addresses it may connect to, by what allowed it.
    pub reach: Reach,
    /// `host[:port]` as the guest wrote it (logged through [`shown`]).
    pub authority: String,
}

/// What the log lines of a request carry.
#[derive(Debug, Clone)]
pub(super) struct LogContext {
    pub activity: Arc<str>,
    pub task_id: Arc<str>,
    /// The task's log-line rate limit: lines a guest causes count against its task.
    pub lines: Arc<LineBudget>,
    /// A request the host signed: logged as `outbound:aws`.
    pub aws: Option<AwsLabel>,
}

/// The label an AWS request's log lines carry.
#[derive(Debug, Clone)]
pub struct AwsLabel {
    /// The signing name.
    pub service: Arc<str>,
    /// The region.
    pub region: Arc<str>,
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

type Response = http::Response<WasiBody>;
type Driver = Box<dyn Future<Output = Result<(), Error>> + Send>;

/// Sends `request` to `target` on an idle connection of `pool` when one is kept, else
/// on a new one; the response, and a future for wasmtime-wasi-http to await (the
/// connection itself runs on its own task, so that it can outlive the request).
///
/// A request that fails on a kept connection before any response byte is sent again,
/// once, on a new connection when it may be sent twice (see [`super::retry`]): within
/// the same first-byte deadline, the new connection made and checked as any other.
#[allow(clippy::too_many_arguments)]
pub(super) async fn send(
    request: http::Request<WasiBody>,
    target: Target,
    timeouts: Timeouts,
    budget: Arc<Budget>,
    tls: Option<tokio_rustls::TlsConnector>,
    context: LogContext,
    pool: Arc<Pool>,
    permit: tokio::sync::OwnedSemaphorePermit,
    sockets: GuestSockets,
) -> Result<(Response, Driver), Error> {
    let mut log = RequestLog::start(context, &target, &request);
    let head = request.method() == http::Method::HEAD;
    let request = origin_form(request)?;
    let key = PoolKey {
        scheme: target.scheme,
        host: target.host.clone(),
        port: target.port,
        reach: target.reach,
    };
    let exchange = Exchange {
        target: &target,
        key: &key,
        timeouts,
        tls: &tls,
        log: &log,
        pool: &pool,
        sockets: &sockets,
    };
    let (response, connection) = exchange.run(request).await?;

    log.status = response.status().as_u16();
    // Kept no longer than the server says it keeps it (`Keep-Alive: timeout=N`).
    let keep = idle_limit(pool.idle_for(), response.headers());
    // A HEAD's, 204's or 304's Content-Length is the length of a body it does not send
    // (S3 `HeadObject` of a large object): nothing to refuse.
    let bodiless = head
        || matches!(
            response.status(),
            http::StatusCode::NO_CONTENT | http::StatusCode::NOT_MODIFIED
        );
    if !bodiless
        && declared_length(response.headers()).is_some_and(|length| length > budget.remaining())
    {
        return Err(Error::HttpResponseBodySize(Some(budget.limit)));
    }
    let between_bytes = timeouts.between_bytes.max(Duration::from_millis(1));
    let response = response.map(|incoming| {
        ResponseBody {
            incoming,
            between_bytes,
            timer: Box::pin(tokio::time::sleep(between_bytes)),
            budget,
            done: false,
            log,
            reuse: keep.map(|idle_for| (pool, key, connection, idle_for)),
            _permit: permit,
        }
        .boxed_unsync()
    });
    let driver: Driver = Box::new(async { Ok(()) });
    Ok((response, driver))
}

/// `request` with a URI of its path and query only: the request line carries only the
/// path, scheme and authority are for proxies.
fn origin_form(mut request: http::Request<WasiBody>) -> Result<http::Request<WasiBody>, Error> {
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(path)
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)?;
    Ok(request)
}

/// The `Content-Length` a response declares, if it declares one that is a number.
fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// `request` ready to be sent and, when it may be sent twice ([`may_resend`]), its body
/// kept in a [`Replay`] with its head: a request that may be sent twice keeps its body
/// here, to send it again while nothing of it is consumed.
fn with_replay(
    request: http::Request<WasiBody>,
) -> (
    http::Request<WasiBody>,
    Option<(Replay, http::request::Parts)>,
) {
    if may_resend(request.method(), request.headers()) {
        let (parts, body) = request.into_parts();
        let replay = Replay::new(body);
        let request = http::Request::from_parts(parts.clone(), replay.body());
        (request, Some((replay, parts)))
    } else {
        (request, None)
    }
}

/// What sending one request to its response needs: where it goes, its timeouts, and
/// the connections it may take or open.
struct Exchange<'a> {
    target: &'a Target,
    key: &'a PoolKey,
    timeouts: Timeouts,
    tls: &'a Option<tokio_rustls::TlsConnector>,
    log: &'a RequestLog,
    pool: &'a Pool,
    sockets: &'a GuestSockets,
}

impl Exchange<'_> {
    /// Sends `request` on a kept connection or a new one, and again, once, on a new one
    /// when a kept connection failed before any response byte; the response's head and
    /// the connection it came on.
    async fn run(
        &self,
        request: http::Request<WasiBody>,
    ) -> Result<(http::Response<hyper::body::Incoming>, Connection), Error> {
        let (mut request, replay) = with_replay(request);
        // Set when the request was sent once and is sent again: the first-byte deadline
        // of the first try, which the second keeps to.
        let mut resent: Option<tokio::time::Instant> = None;
        loop {
            let kept = match resent {
                Some(_) => None,
                None => self.pool.take(self.key).await,
            };
            let reused = kept.is_some();
            let mut connection = match kept {
                Some(connection) => connection,
                // A request sent again keeps to the first try's deadline, connecting included.
                None => match self.open(resent).await {
                    Ok(connection) => connection,
                    Err(err) => return Err(refuse(request, err).await),
                },
            };
            let received = connection.received();
            let deadline =
                resent.unwrap_or_else(|| tokio::time::Instant::now() + self.timeouts.first_byte);
            let sent =
                tokio::time::timeout_at(deadline, connection.sender.try_send_request(request))
                    .await;
            let mut failed = match sent {
                Err(_) => return Err(Error::ConnectionReadTimeout),
                Ok(Ok(response)) => return Ok((response, connection)),
                Ok(Err(failed)) => failed,
            };
            // A kept connection the server closed meanwhile: the request was not
            // sent, so it goes on a new one.
            if reused && let Some(unsent) = failed.take_message() {
                request = unsent;
                continue;
            }
            // A kept connection dropped without a word (no FIN, or one that crossed
            // the request): nothing of the response came, so the server did not act
            // on it, or may act on it twice without harm.
            if reused
                && resent.is_none()
                && connection.received() == received
                && dead_connection(failed.error())
                && let Some((replay, parts)) = replay.as_ref().filter(|(r, _)| r.replayable())
            {
                self.log.retrying(failed.error());
                resent = Some(deadline);
                request = http::Request::from_parts(parts.clone(), replay.body());
                continue;
            }
            return Err(super::codes::body_error(failed.error()));
        }
    }

    /// A new connection to the target, within the connect timeout, or less when the
    /// request is `resent` and its first try's deadline comes sooner.
    async fn open(&self, resent: Option<tokio::time::Instant>) -> Result<Connection, Error> {
        open(
            self.target,
            self.tls,
            self.log,
            connect_within(self.timeouts.connect, resent),
            self.sockets,
        )
        .await
    }
}

/// Reads the guest's request body to its end (or its error) and discards it, then
/// hands back `err`. A guest writes the body while it waits for the response; dropping
/// the body unread would fail its writes with a closed stream, an error that often
/// reaches the guest before, and instead of, the error that says why.
pub(super) async fn refuse(request: http::Request<WasiBody>, err: Error) -> Error {
    let mut body = request.into_body();
    while let Some(Ok(_)) = body.frame().await {}
    err
}

/// A response body within the task's byte budget and read timeout. Logs the request
/// (`outbound:request`, debug) when it is dropped: read to the end or not. Read to its
/// end, it gives its connection back to the pool; cut short, the connection closes.
struct ResponseBody {
    incoming: hyper::body::Incoming,
    between_bytes: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    budget: Arc<Budget>,
    done: bool,
    log: RequestLog,
    /// Where the connection goes back when the body is read to its end, and for how
    /// long it may wait there; `None`: closed (the server keeps it a second or less).
    reuse: Option<(Arc<Pool>, PoolKey, Connection, Duration)>,
    /// The request's place among the task's requests in flight, given back when the
    /// guest drops the body.
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let length = data.len() as u64;
                    if !self.budget.take(length) {
                        self.done = true;
                        return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(
                            self.budget.limit,
                        )))));
                    }
                    self.log.bytes += length;
                }
                let next = tokio::time::Instant::now() + self.between_bytes;
                self.timer.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => {
                self.done = true;
                Poll::Ready(Some(Err(super::codes::body_error(&err))))
            }
            Poll::Ready(None) => {
                self.done = true;
                if let Some((pool, key, connection, idle_for)) = self.reuse.take() {
                    pool.put(key, connection, idle_for);
                }
                Poll::Ready(None)
            }
            Poll::Pending => {
                ready!(self.timer.as_mut().poll(cx));
                self.done = true;
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

/// The debug line of one request, written when its response body goes away, or when
/// the request fails before a response (`status` 0; the guest has the error code).
struct RequestLog {
    context: LogContext,
    authority: String,
    method: String,
    status: u16,
    bytes: u64,
    started: Instant,
}

impl RequestLog {
    /// The line of `request` to `target`, timed from now.
    fn start(context: LogContext, target: &Target, request: &http::Request<WasiBody>) -> Self {
        Self {
            context,
            authority: shown(&target.authority).into_owned(),
            method: request.method().to_string(),
            status: 0,
            bytes: 0,
            started: Instant::now(),
        }
    }

    /// `outbound:retry`: the request is sent again after a kept connection failed with
    /// `error`.
    fn retrying(&self, error: &hyper::Error) {
        tracing::debug!(
            event = "outbound:retry",
            activity = &*self.context.activity,
            task_id = &*self.context.task_id,
            authority = self.authority.as_str(),
            method = self.method.as_str(),
            error = %error,
            "outbound:retry: a kept connection failed before any response byte; sending the request again on a new connection"
        );
    }
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if let Some(aws) = &self.context.aws {
            tracing::debug!(
                event = "outbound:aws",
                activity = &*self.context.activity,
                task_id = &*self.context.task_id,
                service = &*aws.service,
                region = &*aws.region,
                authority = self.authority.as_str(),
                method = self.method.as_str(),
                status = self.status,
                ms,
                bytes = self.bytes,
                "outbound:aws"
            );
            return;
        }
        tracing::debug!(
            event = "outbound:request",
            activity = &*self.context.activity,
            task_id = &*self.context.task_id,
            authority = self.authority.as_str(),
            method = self.method.as_str(),
            status = self.status,
            ms,
            bytes = self.bytes,
            "outbound:request"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_refuses_what_does_not_fit_and_keeps_the_rest() {
        let budget = Budget::new(10);
        assert!(budget.take(6));
        assert!(!budget.take(5));
        assert_eq!(budget.remaining(), 4);
        assert!(budget.take(4));
        assert!(!budget.take(1));
        assert!(budget.take(0));
    }
}
