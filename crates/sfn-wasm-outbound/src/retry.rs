//! Sending a request again when a kept connection turns out to be dead.
//!
//! A server (Node's 5 s `keepAliveTimeout`, a load balancer, a NAT table) may drop a
//! connection the pool keeps, sometimes without a FIN: the next request on it fails
//! before any response byte, though the server never saw it. As pooling clients do (Go's
//! `net/http`, browsers, curl), such a request is sent again, once, on a new connection
//! when that cannot do what sending it twice would: its method is idempotent (GET, HEAD,
//! OPTIONS, PUT, DELETE) or it carries an `Idempotency-Key`, and no byte of its body was
//! consumed (a streamed body cannot be replayed). A failure on a new connection, after a
//! response byte, or of a POST without `Idempotency-Key` reaches the guest as before.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error, WasiBody};

/// Whether a request with `method` and `headers` may be sent twice (when its body is
/// not consumed): an idempotent method (RFC 9110 §9.2.2, those a client may retry), or
/// any method with an `Idempotency-Key`, which asks the server to act on it once.
pub(super) fn may_resend(method: &http::Method, headers: &http::HeaderMap) -> bool {
    matches!(
        *method,
        http::Method::GET
            | http::Method::HEAD
            | http::Method::OPTIONS
            | http::Method::PUT
            | http::Method::DELETE
    ) || headers.contains_key("idempotency-key")
}

/// Whether `err`, a request's failure on a kept connection, says the connection was dead
/// before the server answered: closed, reset or at its end before a status line. (That
/// no response byte came is checked on the connection's byte count, not here.) A
/// timeout, a malformed response or the guest's own body error is not one.
pub(super) fn dead_connection(err: &hyper::Error) -> bool {
    if err.is_user() || err.is_timeout() || err.is_parse() {
        return false;
    }
    if err.is_incomplete_message() || err.is_canceled() || err.is_closed() {
        return true;
    }
    std::iter::successors(std::error::Error::source(err), |e| e.source())
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::NotConnected
            )
        })
}

/// A request body that can be handed to hyper again as long as no byte of it was
/// consumed. hyper drops the body it was given when the connection fails (or never
/// polls it: a GET has none); the guest's body stays here, unread, for the next try.
/// Once a frame carrying something is read, the body moves into the [`ReplayBody`] that
/// read it (and is dropped with it, as before) and cannot be replayed.
pub(super) struct Replay {
    slot: Arc<Mutex<Slot>>,
}

struct Slot {
    /// The guest's body, until a frame of it is consumed.
    body: Option<WasiBody>,
    /// The body ended without a byte: a replay is empty.
    ended: bool,
    /// A data frame, trailers or an error was read: no replay.
    consumed: bool,
}

impl Replay {
    pub(super) fn new(body: WasiBody) -> Self {
        Self {
            slot: Arc::new(Mutex::new(Slot {
                body: Some(body),
                ended: false,
                consumed: false,
            })),
        }
    }

    fn slot(&self) -> MutexGuard<'_, Slot> {
        lock(&self.slot)
    }

    /// Whether nothing of the body was consumed, so that it can be sent again.
    pub(super) fn replayable(&self) -> bool {
        !self.slot().consumed
    }

    /// A body for hyper to send: what of the guest's body is left (all of it, while
    /// [`replayable`](Self::replayable)).
    pub(super) fn body(&self) -> WasiBody {
        ReplayBody {
            slot: self.slot.clone(),
            own: None,
        }
        .boxed_unsync()
    }
}

fn lock(slot: &Mutex<Slot>) -> MutexGuard<'_, Slot> {
    slot.lock().unwrap_or_else(|e| e.into_inner())
}

/// What hyper sends of a [`Replay`].
struct ReplayBody {
    slot: Arc<Mutex<Slot>>,
    /// The guest's body once this one consumed a frame of it.
    own: Option<WasiBody>,
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        if let Some(own) = self.own.as_mut() {
            return Pin::new(own).poll_frame(cx);
        }
        let slot = self.slot.clone();
        let mut slot = lock(&slot);
        if slot.ended {
            return Poll::Ready(None);
        }
        let Some(body) = slot.body.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(body).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                slot.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame)))
                if frame.data_ref().is_some_and(|data| data.is_empty()) =>
            {
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(frame)) => {
                slot.consumed = true;
                self.own = slot.body.take();
                Poll::Ready(Some(frame))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        if let Some(own) = &self.own {
            return own.is_end_stream();
        }
        let slot = lock(&self.slot);
        slot.ended || slot.body.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        if let Some(own) = &self.own {
            return own.size_hint();
        }
        let slot = lock(&self.slot);
        match &slot.body {
            Some(body) if !slot.ended => body.size_hint(),
            _ => SizeHint::with_exact(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Empty, Full, StreamBody};

    fn boxed<B>(body: B) -> WasiBody
    where
        B: Body<Data = Bytes, Error = std::convert::Infallible> + Send + 'static,
    {
        body.map_err(|never| match never {}).boxed_unsync()
    }

    #[test]
    fn idempotent_methods_and_idempotency_keys_may_be_sent_again() {
        let none = http::HeaderMap::new();
        for method in ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"] {
            let method: http::Method = method.parse().unwrap();
            assert!(may_resend(&method, &none), "{method}");
        }
        for method in ["POST", "PATCH", "CONNECT", "TRACE", "PURGE"] {
            let method: http::Method = method.parse().unwrap();
            assert!(!may_resend(&method, &none), "{method}");
        }
        let mut keyed = http::HeaderMap::new();
        keyed.insert("Idempotency-Key", "8e03978e".parse().unwrap());
        assert!(may_resend(&http::Method::POST, &keyed));
        assert!(may_resend(&http::Method::PATCH, &keyed));
        let mut other = http::HeaderMap::new();
        other.insert("x-idempotency", "1".parse().unwrap());
        assert!(!may_resend(&http::Method::POST, &other));
    }

    #[tokio::test]
    async fn a_body_never_read_or_empty_can_be_replayed() {
        // hyper drops a GET's body unread.
        let replay = Replay::new(boxed(Empty::<Bytes>::new()));
        drop(replay.body());
        assert!(replay.replayable());
        // An empty body read to its end: the replay is empty too.
        let first = replay.body().collect().await.unwrap().to_bytes();
        assert!(first.is_empty());
        assert!(replay.replayable());
        let again = replay.body();
        assert!(again.is_end_stream());
        assert!(again.collect().await.unwrap().to_bytes().is_empty());
    }

    #[tokio::test]
    async fn a_body_with_bytes_read_cannot_be_replayed() {
        let replay = Replay::new(boxed(Full::new(Bytes::from_static(b"payload"))));
        assert_eq!(replay.body().size_hint().exact(), Some(7));
        let sent = replay.body().collect().await.unwrap().to_bytes();
        assert_eq!(&sent[..], b"payload");
        assert!(!replay.replayable());
    }

    #[tokio::test]
    async fn empty_chunks_consume_nothing_but_a_data_chunk_does() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Error>>(4);
        let stream = tokio_stream_from(rx);
        let replay = Replay::new(StreamBody::new(stream).boxed_unsync());
        let mut body = replay.body();
        tx.send(Ok(Frame::data(Bytes::new()))).await.unwrap();
        let frame = body.frame().await.unwrap().unwrap();
        assert!(frame.data_ref().unwrap().is_empty());
        assert!(replay.replayable());
        // Dropped after an empty chunk (as hyper does when the connection fails): the
        // rest of the guest's body is still there.
        drop(body);
        let mut body = replay.body();
        tx.send(Ok(Frame::data(Bytes::from_static(b"x"))))
            .await
            .unwrap();
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(&frame.into_data().unwrap()[..], b"x");
        assert!(!replay.replayable());
        drop(tx);
        assert!(body.frame().await.is_none());
    }

    /// A `Stream` of the frames sent on `rx`.
    fn tokio_stream_from(
        mut rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, Error>>,
    ) -> impl futures::Stream<Item = Result<Frame<Bytes>, Error>> + Send + 'static {
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }

    /// A server that reads a request and closes without a byte: hyper's error says the
    /// connection was dead. One that answers garbage: not a dead connection.
    #[tokio::test]
    async fn a_connection_closed_before_the_status_line_is_a_dead_one() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        for (answer, dead) in [(&b""[..], true), (&b"HTTP/9 nonsense\r\n\r\n"[..], false)] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            tokio::spawn(async move {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(answer).await;
            });
            let stream = tokio::net::TcpStream::connect(address).await.unwrap();
            let (mut sender, connection) = hyper::client::conn::http1::handshake::<_, WasiBody>(
                wasmtime_wasi_http::io::TokioIo::new(stream),
            )
            .await
            .unwrap();
            tokio::spawn(connection);
            let request = http::Request::get("/")
                .body(boxed(Empty::<Bytes>::new()))
                .unwrap();
            let err = sender.send_request(request).await.unwrap_err();
            assert_eq!(dead_connection(&err), dead, "{err:?}");
        }
    }
}
