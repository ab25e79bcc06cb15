//! Opening a connection for a request: DNS, the address rules between DNS and connect,
//! TCP, TLS and the HTTP/1.1 handshake, the connection run on a task of its own.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmtime_wasi_http::Error;
use wasmtime_wasi_http::io::TokioIo;

use super::{RequestLog, Stream, Target};
use crate::address::{Reach, may_connect};
use crate::allow::Scheme;
use crate::pool::Connection;
use crate::sockets::GuestSockets;

/// Opens a connection to `target` (DNS, the address rules, TCP, TLS, HTTP/1.1) within
/// `timeout` for each step, and runs it on a task of its own.
pub(super) async fn open(
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
pub(super) fn connect_within(
    connect: Duration,
    deadline: Option<tokio::time::Instant>,
) -> Duration {
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

/// Resolves the target, keeps the addresses it may reach, connects to the first that
/// answers, and adds TLS for https.
async fn connect(
    target: &Target,
    tls: &Option<tokio_rustls::TlsConnector>,
    log: &RequestLog,
    sockets: &GuestSockets,
) -> Result<Box<dyn Stream>, Error> {
    let bare = target.host.trim_start_matches('[').trim_end_matches(']');
    let addresses = resolve(bare, target.port, sockets).await?;
    let allowed = reachable(&addresses, target, log)?;
    let stream = connect_first(allowed).await?;
    let _ = stream.set_nodelay(true);
    match target.scheme {
        Scheme::Http => Ok(Box::new(stream)),
        Scheme::Https => with_tls(stream, bare, tls).await,
    }
}

/// The addresses of `bare` (a host name, or an IP literal without brackets) at `port`;
/// at least one.
async fn resolve(bare: &str, port: u16, sockets: &GuestSockets) -> Result<Vec<SocketAddr>, Error> {
    let addresses: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => sockets
            .lookup(bare, port)
            .await
            .map_err(|err| Error::DnsError {
                rcode: Some(err.to_string()),
                info_code: None,
            })?,
    };
    if addresses.is_empty() {
        return Err(Error::DestinationNotFound);
    }
    Ok(addresses)
}

/// The `addresses` the target may reach ([`may_connect`]); none fails the request, with
/// an `outbound:denied` line (within the task's line budget) naming the first.
fn reachable(
    addresses: &[SocketAddr],
    target: &Target,
    log: &RequestLog,
) -> Result<Vec<SocketAddr>, Error> {
    let allowed: Vec<SocketAddr> = addresses
        .iter()
        .copied()
        .filter(|address| may_connect(address.ip(), target.reach))
        .collect();
    if !allowed.is_empty() {
        return Ok(allowed);
    }
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
        unreachable_because(target.reach),
    );
    Err(Error::DestinationIpProhibited)
}

/// Why an address is out of `reach`, for the `outbound:denied` line.
fn unreachable_because(reach: Reach) -> &'static str {
    match reach {
        Reach::Literal => {
            " (link-local addresses, such as the instance metadata service, are never reachable)"
        }
        Reach::PrivateNetwork => {
            " (a private AWS endpoint may be private, never loopback or link-local)"
        }
        Reach::Public => {
            " (loopback, private and link-local addresses need an entry that names the IP or localhost)"
        }
    }
}

/// A TCP connection to the first of `allowed` that answers; else the last failure.
async fn connect_first(allowed: Vec<SocketAddr>) -> Result<TcpStream, Error> {
    let mut last_error = None;
    for address in allowed {
        match TcpStream::connect(address).await {
            Ok(connected) => return Ok(connected),
            Err(err) => last_error = Some(err),
        }
    }
    Err(match last_error {
        Some(err) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
            Error::ConnectionRefused
        }
        Some(err) => Error::Connect(err),
        None => Error::DestinationUnavailable,
    })
}

/// TLS over `stream`, for the server `bare` (a name, or an IP literal without brackets).
async fn with_tls(
    stream: TcpStream,
    bare: &str,
    tls: &Option<tokio_rustls::TlsConnector>,
) -> Result<Box<dyn Stream>, Error> {
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
