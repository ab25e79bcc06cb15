//! Handlers behind an HTTPS URL, on the host's own HTTP stack (hyper, rustls with
//! Mozilla's roots): a conditional GET (`If-None-Match` with the last ETag, else
//! `If-Modified-Since`), so that an unchanged module costs a `304` and no body.

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
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
            tls: crate::outbound::tls_connector()?,
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
        let https = uri.scheme_str() == Some("https");
        let host = uri
            .host()
            .ok_or_else(|| failed("no host".into()))?
            .to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((bare.as_str(), port)))
            .await
            .map_err(|_| failed("connecting timed out".into()))?
            .map_err(|err| failed(format!("cannot connect: {err}")))?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = if https {
            let name = rustls::pki_types::ServerName::try_from(bare.clone())
                .map_err(|err| failed(format!("bad server name: {err}")))?;
            Box::new(
                self.tls
                    .connect(name, tcp)
                    .await
                    .map_err(|err| failed(format!("TLS: {err}")))?,
            )
        } else {
            Box::new(tcp)
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|err| failed(err.to_string()))?;
        let driver = tokio::spawn(connection);

        // `Host` is `host[:port]`: a URL's userinfo is not sent in it.
        let authority = uri.authority().map_or(host.as_str(), |a| {
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
        let request = request
            .body(Empty::<bytes::Bytes>::new())
            .map_err(|err| failed(err.to_string()))?;
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
            let location = response
                .headers()
                .get(http::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(|to| {
                    format!(
                        " (to {}: redirects are not followed; configure the final URL)",
                        redact_url(to)
                    )
                })
                .unwrap_or_default();
            return Err(failed(format!("status {status}{location}")));
        }
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &http::HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let tag = header(http::header::ETAG)
            .map(|etag| format!("etag:{etag}"))
            .or_else(|| {
                header(http::header::LAST_MODIFIED).map(|date| format!("last-modified:{date}"))
            });
        let declared = header(http::header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|length| length > max_bytes) {
            driver.abort();
            return Err(too_large(&shown, max_bytes));
        }
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|err| failed(format!("reading the body: {err}")))?;
            if let Ok(chunk) = frame.into_data() {
                if (bytes.len() + chunk.len()) as u64 > max_bytes {
                    driver.abort();
                    return Err(too_large(&shown, max_bytes));
                }
                bytes.extend_from_slice(&chunk);
            }
        }
        driver.abort();
        Ok(Fetch::Fetched(Fetched { bytes, tag }))
    }
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
