//! Sending one allowed request: resolve, check the address, connect, TLS, HTTP/1.1,
//! and a response body that keeps to the task's byte budget and read timeout.
//!
//! wasmtime-wasi-http's own `default_send_request` connects to the request's name
//! itself, so the address cannot be checked between DNS and connect; this does the
//! same steps with the check in between.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, WasiBody};

use super::address::{Reach, may_connect};
use super::allow::Scheme;
use super::pool::{Connection, Pool, PoolKey, idle_limit};
use super::retry::{Replay, dead_connection, may_resend};
use super::sockets::GuestSockets;
use crate::budget::LineBudget;

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

/// The TLS client configuration: Mozilla's roots (webpki-roots, so that a host needs no
/// CA bundle of its own), ring, TLS 1.2 and 1.3.
pub(crate) fn tls_connector() -> Result<tokio_rustls::TlsConnector, rustls::Error> {
    tls_connector_with(Vec::new())
}

/// [`tls_connector`], also trusting `extra_roots` (an activity's `ca_file`).
pub(super) fn tls_connector_with(
    extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
) -> Result<tokio_rustls::TlsConnector, rustls::Error> {
    Ok(tokio_rustls::TlsConnector::from(Arc::new(
        tls_client_config(extra_roots)?,
    )))
}

/// The host's TLS client settings: Mozilla's roots (webpki-roots) and `extra_roots` (a
/// `ca_file`), ring, TLS 1.2 and 1.3. Every TLS client of the host (guests' outbound
/// requests, the OTLP exporter) uses them.
pub(crate) fn tls_client_config(
    extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
) -> Result<rustls::ClientConfig, rustls::Error> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for root in extra_roots {
        roots.add(root)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// Reads a PEM file of CA certificates (`ca_file`): every certificate in it, each one a
/// root rustls accepts.
///
/// # Errors
/// A message naming the file: unreadable, no certificate in it, or one rustls rejects.
pub fn read_ca_file(
    path: &std::path::Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let bytes =
        std::fs::read(path).map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    let certificates = rustls::pki_types::CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("{} is not PEM certificates: {err}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!(
            "{} holds no certificate: give a PEM file with -----BEGIN CERTIFICATE----- blocks",
            path.display()
        ));
    }
    let mut store = rustls::RootCertStore::empty();
    for certificate in &certificates {
        store.add(certificate.clone()).map_err(|err| {
            format!(
                "{} holds a certificate that cannot be a root: {err}",
                path.display()
            )
        })?;
    }
    Ok(certificates)
}

/// Sends `request` to `target` on an idle connection of `pool` when one is kept, else
/// on a new one; the response, and a future for wasmtime-wasi-http to await (the
/// connection itself runs on its own task, so that it can outlive the request).
///
/// A request that fails on a kept connection before any response byte is sent again,
/// once, on a new connection when it may be sent twice (see [`super::retry`]): within
/// the same first-byte deadline, the new connection made and checked as any other.
#[allow(clippy::too_many_arguments)]
pub(super) async fn send(
    mut request: http::Request<WasiBody>,
    target: Target,
    timeouts: Timeouts,
    budget: Arc<Budget>,
    tls: Option<tokio_rustls::TlsConnector>,
    context: LogContext,
    pool: Arc<Pool>,
    permit: tokio::sync::OwnedSemaphorePermit,
    sockets: GuestSockets,
) -> Result<(Response, Driver), Error> {
    let mut log = RequestLog {
        context,
        authority: shown(&target.authority).into_owned(),
        method: request.method().to_string(),
        status: 0,
        bytes: 0,
        started: Instant::now(),
    };

    // The request line carries only the path: scheme and authority are for proxies.
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(path)
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)?;

    let key = PoolKey {
        scheme: target.scheme,
        host: target.host.clone(),
        port: target.port,
        reach: target.reach,
    };
    // A request that may be sent twice keeps its body here, to send it again while
    // nothing of it is consumed.
    let (mut request, replay) = if may_resend(request.method(), request.headers()) {
        let (parts, body) = request.into_parts();
        let replay = Replay::new(body);
        let request = http::Request::from_parts(parts.clone(), replay.body());
        (request, Some((replay, parts)))
    } else {
        (request, None)
    };
    // Set when the request was sent once and is sent again: the first-byte deadline
    // of the first try, which the second keeps to.
    let mut resent: Option<tokio::time::Instant> = None;
    let (response, connection) = loop {
        let kept = match resent {
            Some(_) => None,
            None => pool.take(&key).await,
        };
        let reused = kept.is_some();
        let mut connection = match kept {
            Some(connection) => connection,
            // A request sent again keeps to the first try's deadline, connecting included.
            None => match open(
                &target,
                &tls,
                &log,
                connect_within(timeouts.connect, resent),
                &sockets,
            )
            .await
            {
                Ok(connection) => connection,
                Err(err) => return Err(refuse(request, err).await),
            },
        };
        let received = connection.received();
        let deadline = resent.unwrap_or_else(|| tokio::time::Instant::now() + timeouts.first_byte);
        let sent =
            tokio::time::timeout_at(deadline, connection.sender.try_send_request(request)).await;
        match sent {
            Err(_) => return Err(Error::ConnectionReadTimeout),
            Ok(Ok(response)) => break (response, connection),
            Ok(Err(mut failed)) => {
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
                    tracing::debug!(
                        event = "outbound:retry",
                        activity = &*log.context.activity,
                        task_id = &*log.context.task_id,
                        authority = log.authority.as_str(),
                        method = log.method.as_str(),
                        error = %failed.error(),
                        "outbound:retry: a kept connection failed before any response byte; sending the request again on a new connection"
                    );
                    resent = Some(deadline);
                    request = http::Request::from_parts(parts.clone(), replay.body());
                    continue;
                }
                return Err(super::codes::body_error(failed.error()));
            }
        }
    };
    drop(replay);

    log.status = response.status().as_u16();
    // Kept no longer than the server says it keeps it (`Keep-Alive: timeout=N`).
    let keep = idle_limit(pool.idle_for(), response.headers());
    let declared = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > budget.remaining()) {
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

/// Opens a connection to `target` (DNS, the address rules, TCP, TLS, HTTP/1.1) within
/// `timeout` for each step, and runs it on a task of its own.
async fn open(
    target: &Target,
    tls: &Option<tokio_rustls::TlsConnector>,
    log: &RequestLog,
    timeout: Duration,
    sockets: &GuestSockets,
) -> Result<Connection, Error> {
    // Taken before the socket is: the host's own calls keep their reserve.
    let Some(socket) = sockets.take() else {
        if log.context.lines.take() {
            tracing::warn!(
                event = "outbound:denied",
                activity = &*log.context.activity,
                task_id = &*log.context.task_id,
                authority = log.authority.as_str(),
                limit = sockets.activity_limit(),
                "outbound:denied: the activity's guests hold all {} connections they may have, or all guests the {} the host gives them (half its open-files limit)",
                sockets.activity_limit(),
                sockets.limit()
            );
        }
        return Err(Error::ConnectionLimitReached);
    };
    let stream = tokio::time::timeout(timeout, connect(target, tls, log, sockets))
        .await
        .map_err(|_| Error::ConnectionTimeout)??;
    let received = Arc::new(AtomicU64::new(0));
    let (sender, connection) = tokio::time::timeout(
        timeout,
        hyper::client::conn::http1::handshake(TokioIo::new(Counted {
            stream,
            received: received.clone(),
        })),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)?
    .map_err(Error::from)?;
    // Ends when the last sender is dropped (closed idle, or not kept) or the server
    // closes; its errors reach the request's response or body.
    tokio::spawn(async move {
        let _ = connection.await;
        drop(socket);
    });
    Ok(Connection { sender, received })
}

/// How long a new connection may take: `connect`, or less when the request is sent again
/// and its first try's `deadline` comes sooner.
fn connect_within(connect: Duration, deadline: Option<tokio::time::Instant>) -> Duration {
    deadline.map_or(connect, |deadline| {
        connect.min(deadline.saturating_duration_since(tokio::time::Instant::now()))
    })
}

/// A connection's stream, counting the bytes read from it: a request that failed with
/// none read since it was sent had no byte of a response.
struct Counted {
    stream: Box<dyn Stream>,
    received: Arc<AtomicU64>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.stream).poll_read(cx, buf))?;
        let read = (buf.filled().len() - before) as u64;
        self.received.fetch_add(read, Ordering::Relaxed);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
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

/// Resolves the target, keeps the addresses it may reach, connects to the first that
/// answers, and adds TLS for https.
async fn connect(
    target: &Target,
    tls: &Option<tokio_rustls::TlsConnector>,
    log: &RequestLog,
    sockets: &GuestSockets,
) -> Result<Box<dyn Stream>, Error> {
    let bare = target.host.trim_start_matches('[').trim_end_matches(']');
    let addresses: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, target.port)],
        Err(_) => sockets
            .lookup(bare, target.port)
            .await
            .map_err(|err| Error::DnsError {
                rcode: Some(err.to_string()),
                info_code: None,
            })?,
    };
    if addresses.is_empty() {
        return Err(Error::DestinationNotFound);
    }
    let allowed: Vec<SocketAddr> = addresses
        .iter()
        .copied()
        .filter(|address| may_connect(address.ip(), target.reach))
        .collect();
    if allowed.is_empty() {
        let address = addresses[0].ip().to_string();
        if !log.context.lines.take() {
            return Err(Error::DestinationIpProhibited);
        }
        tracing::info!(
            event = "outbound:denied",
            activity = &*log.context.activity,
            task_id = &*log.context.task_id,
            authority = log.authority.as_str(),
            address,
            "outbound:denied: {} is at {address}, which guests may not reach{}",
            log.authority,
            match target.reach {
                Reach::Literal => {
                    " (link-local addresses, such as the instance metadata service, are never reachable)"
                }
                Reach::PrivateNetwork => {
                    " (a private AWS endpoint may be private, never loopback or link-local)"
                }
                Reach::Public => {
                    " (loopback, private and link-local addresses need an entry that names the IP or localhost)"
                }
            },
        );
        return Err(Error::DestinationIpProhibited);
    }
    let mut last_error = None;
    let mut stream = None;
    for address in allowed {
        match TcpStream::connect(address).await {
            Ok(connected) => {
                stream = Some(connected);
                break;
            }
            Err(err) => last_error = Some(err),
        }
    }
    let Some(stream) = stream else {
        return Err(match last_error {
            Some(err) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
                Error::ConnectionRefused
            }
            Some(err) => Error::Connect(err),
            None => Error::DestinationUnavailable,
        });
    };
    let _ = stream.set_nodelay(true);
    match target.scheme {
        Scheme::Http => Ok(Box::new(stream)),
        Scheme::Https => {
            let name = match bare.parse::<IpAddr>() {
                Ok(ip) => rustls::pki_types::ServerName::IpAddress(ip.into()),
                Err(_) => rustls::pki_types::ServerName::try_from(bare.to_owned())
                    .map_err(|_| Error::HttpRequestUriInvalid)?,
            };
            // Set up whenever an https entry exists, which this request matched.
            let Some(tls) = tls else {
                return Err(Error::ConfigurationError);
            };
            let stream = tls.connect(name, stream).await.map_err(Error::Tls)?;
            Ok(Box::new(stream))
        }
    }
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
