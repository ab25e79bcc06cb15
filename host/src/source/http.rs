//! Handlers behind an HTTPS URL, on the host's own HTTP stack (hyper, rustls with
//! Mozilla's roots): a conditional GET (`If-None-Match` with the last ETag, else
//! `If-Modified-Since`), so that an unchanged module costs a `304` and no body.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::{Fetch, Fetched, SourceError, redact_url, too_large};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// The HTTPS client for handler URLs.
pub struct HttpSource {
    tls: tokio_rustls::TlsConnector,
}

impl HttpSource {
    /// The client.
    ///
    /// # Errors
    /// When rustls cannot be set up.
    pub fn new() -> Result<Self, rustls::Error> {
        Ok(Self {
            tls: sfn_wasm_outbound::tls_connector()?,
        })
    }

    /// The module at `url` unless the server says it is unchanged since `known`.
    pub(super) async fn fetch(
        &self,
        url: &str,
        known: Option<&str>,
        max_bytes: u64,
    ) -> Result<Fetch, SourceError> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.get(url, known, max_bytes))
            .await
            .unwrap_or_else(|_| {
                Err(SourceError::Http {
                    url: redact_url(url),
                    message: format!("no complete answer within {} s", REQUEST_TIMEOUT.as_secs()),
                })
            })
    }

    async fn get(
        &self,
        url: &str,
        known: Option<&str>,
        max_bytes: u64,
    ) -> Result<Fetch, SourceError> {
        // Every message names the URL without its userinfo and query (a password, a
        // presigned token).
        let shown = redact_url(url);
        let failed = |message: String| SourceError::Http {
            url: shown.clone(),
            message,
        };
        let uri: http::Uri = url.parse().map_err(|err| failed(format!("{err}")))?;
        let host = uri
            .host()
            .ok_or_else(|| failed("no host".into()))?
            .to_owned();
        let (mut sender, driver) = self.connect(&uri, &host).await.map_err(failed)?;
        let request = conditional_get(&uri, &host, known).map_err(|err| failed(err.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|err| failed(err.to_string()))?;
        let status = response.status();
        if status == http::StatusCode::NOT_MODIFIED {
            driver.abort();
            return Ok(Fetch::Unchanged);
        }
        if !status.is_success() {
            driver.abort();
            let location = redirect_note(&response);
            return Err(failed(format!("status {status}{location}")));
        }
        let tag = header(&response, http::header::ETAG)
            .map(|etag| format!("etag:{etag}"))
            .or_else(|| {
                header(&response, http::header::LAST_MODIFIED)
                    .map(|date| format!("last-modified:{date}"))
            });
        let declared =
            header(&response, http::header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|length| length > max_bytes) {
            driver.abort();
            return Err(too_large(&shown, max_bytes));
        }
        let bytes = read_body(response.into_body(), &driver, max_bytes, &shown).await?;
        driver.abort();
        Ok(Fetch::Fetched(Fetched { bytes, tag }))
    }

    /// Connects to `uri`'s `host` (TLS for https) and starts HTTP/1.1 on it: the sender,
    /// and the task that runs the connection. Why not, as a message.
    async fn connect(
        &self,
        uri: &http::Uri,
        host: &str,
    ) -> Result<(SendRequest<Empty<Bytes>>, Driver), String> {
        let https = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((bare.as_str(), port)))
            .await
            .map_err(|_| "connecting timed out".to_owned())?
            .map_err(|err| format!("cannot connect: {err}"))?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = if https {
            let name = rustls::pki_types::ServerName::try_from(bare.clone())
                .map_err(|err| format!("bad server name: {err}"))?;
            Box::new(
                self.tls
                    .connect(name, tcp)
                    .await
                    .map_err(|err| format!("TLS: {err}"))?,
            )
        } else {
            Box::new(tcp)
        };
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|err| err.to_string())?;
        Ok((sender, tokio::spawn(connection)))
    }
}

/// The task running a connection to a handler URL.
type Driver = tokio::task::JoinHandle<hyper::Result<()>>;

/// The GET of `uri`, conditional on `known` (the validator of the last fetch).
fn conditional_get(
    uri: &http::Uri,
    host: &str,
    known: Option<&str>,
) -> Result<http::Request<Empty<Bytes>>, http::Error> {
    // `Host` is `host[:port]`: a URL's userinfo is not sent in it.
    let authority = uri.authority().map_or(host, |a| {
        a.as_str().rsplit_once('@').map_or(a.as_str(), |(_, h)| h)
    });
    let mut request = http::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, authority)
        .header(
            http::header::USER_AGENT,
            concat!("sfn-wasm-host/", env!("CARGO_PKG_VERSION")),
        );
    match known.map(Tag::parse) {
        Some(Tag::ETag(etag)) => request = request.header(http::header::IF_NONE_MATCH, etag),
        Some(Tag::LastModified(date)) => {
            request = request.header(http::header::IF_MODIFIED_SINCE, date);
        }
        None => {}
    }
    request.body(Empty::<Bytes>::new())
}

/// A response header's value, when it is text.
fn header<B>(response: &http::Response<B>, name: http::header::HeaderName) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v: &http::HeaderValue| v.to_str().ok())
        .map(str::to_owned)
}

/// Where a redirect points, for the error that says it is not followed; empty when the
/// response names no `Location`.
fn redirect_note<B>(response: &http::Response<B>) -> String {
    response
        .headers()
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(|to| {
            format!(
                " (to {}: redirects are not followed; configure the final URL)",
                redact_url(to)
            )
        })
        .unwrap_or_default()
}

/// Reads a response body, at most `max_bytes` of it: past them, the connection's
/// `driver` is stopped and the fetch fails as too large.
async fn read_body(
    mut body: hyper::body::Incoming,
    driver: &Driver,
    max_bytes: u64,
    shown: &str,
) -> Result<Vec<u8>, SourceError> {
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|err| SourceError::Http {
            url: shown.to_owned(),
            message: format!("reading the body: {err}"),
        })?;
        if let Ok(chunk) = frame.into_data() {
            if (bytes.len() + chunk.len()) as u64 > max_bytes {
                driver.abort();
                return Err(too_large(shown, max_bytes));
            }
            bytes.extend_from_slice(&chunk);
        }
    }
    Ok(bytes)
}

/// The validator kept from the last fetch.
enum Tag<'a> {
    ETag(&'a str),
    LastModified(&'a str),
}

impl<'a> Tag<'a> {
    fn parse(text: &'a str) -> Self {
        match text.strip_prefix("etag:") {
            Some(etag) => Tag::ETag(etag),
            None => Tag::LastModified(text.strip_prefix("last-modified:").unwrap_or(text)),
        }
    }
}
