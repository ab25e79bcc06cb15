//! Outbound HTTP for handlers (feature `http`), through `wasi:http`.
//!
//! Blocking calls straight over the `wasi:http` imports (the [`wasip2`] bindings), since
//! `handle` is a plain function. The host sends a request only to hosts the activity's
//! `allowed_outbound_hosts` lists; any other fails with `HTTP-request-denied`.
//!
//! ```ignore
//! let response = sfn_wasm_guest::http::get("https://api.example.com/items/42")?;
//! let item: Item = response.json()?;
//! ```
//!
//! An [`Error`] turns into a [`TaskFailure`](crate::TaskFailure) named after the `wasi:http`
//! error code (`HTTP-request-denied`, `connection-timeout`, `HTTP-response-body-size`,
//! ...), so a state machine can `Retry` or `Catch` on it. The code is asked of the host
//! wherever the request fails: at the head, and while the body streams (a body cut at
//! the task's byte budget, or one that stalls past the read timeout), which async
//! clients that turn a stream error into text would lose.

use std::fmt;
use std::time::Duration;

pub use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use serde::de::DeserializeOwned;
pub use wasip2;
pub use wasip2::http::types::ErrorCode;
use wasip2::http::types::{
    Fields, IncomingResponse, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use wasip2::io::streams::StreamError;

/// A response, its body read whole.
#[derive(Debug, Clone)]
pub struct Response {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Response {
    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body, owned.
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }

    /// The body as UTF-8 text.
    ///
    /// # Errors
    /// When it is not UTF-8.
    pub fn text(&self) -> Result<&str, Error> {
        std::str::from_utf8(&self.body)
            .map_err(|err| Error::other(format!("the body is not UTF-8: {err}")))
    }

    /// The body as JSON.
    ///
    /// # Errors
    /// When it is not JSON of that shape.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body)
            .map_err(|err| Error::other(format!("the body is not the JSON expected: {err}")))
    }
}

/// Why a request failed: a `wasi:http` error code when the host gave one, and a message.
#[derive(Debug, Clone)]
pub struct Error {
    code: Option<ErrorCode>,
    message: String,
}

impl Error {
    fn other(message: String) -> Self {
        Self {
            code: None,
            message,
        }
    }

    /// A failure the host named by `code`; `context` says where it happened.
    pub(crate) fn from_code(code: ErrorCode, context: &str) -> Self {
        Self {
            message: format!("{context}: {}", describe(&code)),
            code: Some(code),
        }
    }

    /// The `wasi:http` error code, when the failure had one.
    pub fn code(&self) -> Option<&ErrorCode> {
        self.code.as_ref()
    }

    /// The error's name: the `wasi:http` error code's case name as the WIT spells it
    /// (`HTTP-request-denied`, `destination-IP-prohibited`), else `HTTP-error`.
    pub fn name(&self) -> String {
        match &self.code {
            Some(code) => wit_case_name(&format!("{code:?}")),
            None => "HTTP-error".to_owned(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<Error> for crate::TaskFailure {
    fn from(err: Error) -> Self {
        crate::TaskFailure::new(err.name(), err.message)
    }
}

/// The timeouts a request asks for (the host caps each at the activity's own limit);
/// `None` leaves the host's.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// The longest connecting (DNS, TCP, TLS) may take.
    pub connect_timeout: Option<Duration>,
    /// The longest from sending the request to the first byte of the response.
    pub first_byte_timeout: Option<Duration>,
    /// The longest between two reads of the response body.
    pub between_bytes_timeout: Option<Duration>,
}

/// `GET url`.
///
/// # Errors
/// When the request is denied or fails, or the body cannot be read.
pub fn get(url: &str) -> Result<Response, Error> {
    let request = Request::get(url)
        .body(Vec::new())
        .map_err(|err| Error::other(format!("invalid request to {url:?}: {err}")))?;
    send(request)
}

/// Sends `request` with the host's timeouts, waiting for the whole response.
///
/// # Errors
/// As [`get`].
pub fn send(request: Request<Vec<u8>>) -> Result<Response, Error> {
    send_with(&Options::default(), request)
}

/// Sends `request` with `options`, waiting for the whole response.
///
/// # Errors
/// As [`get`].
pub fn send_with(options: &Options, request: Request<Vec<u8>>) -> Result<Response, Error> {
    let (parts, body) = request.into_parts();
    let outgoing = outgoing_request(&parts)?;
    let outgoing_body = outgoing
        .body()
        .map_err(|()| Error::other("the request body was taken twice".into()))?;
    // Sent before the body is written: the host reads the body as it sends it, so a
    // body larger than the stream's buffer would otherwise wait for a reader forever.
    let future = wasip2::http::outgoing_handler::handle(outgoing, Some(request_options(options)?))
        .map_err(|code| Error::from_code(code, "sending the request"))?;
    let written = write_body(outgoing_body, &body);
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(Error::from_code(code, "sending the request")),
        Some(Err(())) | None => {
            return Err(Error::other("the response was taken twice".into()));
        }
    };
    // A refused body is reported only when the response does not say more.
    written?;
    read_response(&response)
}

fn outgoing_request(parts: &http::request::Parts) -> Result<OutgoingRequest, Error> {
    let invalid = |what: &str| Error::from_code(ErrorCode::HttpRequestUriInvalid, what);
    let entries: Vec<(String, Vec<u8>)> = parts
        .headers
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect();
    let headers = Fields::from_list(&entries)
        .map_err(|err| Error::other(format!("the request headers are refused: {err:?}")))?;
    let request = OutgoingRequest::new(headers);
    let method = match &parts.method {
        m if *m == Method::GET => wasip2::http::types::Method::Get,
        m if *m == Method::HEAD => wasip2::http::types::Method::Head,
        m if *m == Method::POST => wasip2::http::types::Method::Post,
        m if *m == Method::PUT => wasip2::http::types::Method::Put,
        m if *m == Method::DELETE => wasip2::http::types::Method::Delete,
        m if *m == Method::CONNECT => wasip2::http::types::Method::Connect,
        m if *m == Method::OPTIONS => wasip2::http::types::Method::Options,
        m if *m == Method::TRACE => wasip2::http::types::Method::Trace,
        m if *m == Method::PATCH => wasip2::http::types::Method::Patch,
        m => wasip2::http::types::Method::Other(m.as_str().to_owned()),
    };
    request
        .set_method(&method)
        .map_err(|()| Error::from_code(ErrorCode::HttpRequestMethodInvalid, "the method"))?;
    let scheme = match parts.uri.scheme_str() {
        Some("http") => Scheme::Http,
        Some("https") => Scheme::Https,
        Some(other) => Scheme::Other(other.to_owned()),
        None => return Err(invalid("the URL has no scheme")),
    };
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| invalid("the URL's scheme"))?;
    let authority = parts
        .uri
        .authority()
        .ok_or_else(|| invalid("the URL has no host"))?;
    request
        .set_authority(Some(authority.as_str()))
        .map_err(|()| invalid("the URL's host"))?;
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    request
        .set_path_with_query(Some(path))
        .map_err(|()| invalid("the URL's path"))?;
    Ok(request)
}

fn request_options(options: &Options) -> Result<RequestOptions, Error> {
    let nanos = |d: Option<Duration>| d.map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let set = RequestOptions::new();
    let refused = |what: &str| Error::other(format!("the host does not take a {what}"));
    if options.connect_timeout.is_some() {
        set.set_connect_timeout(nanos(options.connect_timeout))
            .map_err(|()| refused("connect timeout"))?;
    }
    if options.first_byte_timeout.is_some() {
        set.set_first_byte_timeout(nanos(options.first_byte_timeout))
            .map_err(|()| refused("first-byte timeout"))?;
    }
    if options.between_bytes_timeout.is_some() {
        set.set_between_bytes_timeout(nanos(options.between_bytes_timeout))
            .map_err(|()| refused("between-bytes timeout"))?;
    }
    Ok(set)
}

/// Writes `body` whole and finishes it.
fn write_body(outgoing: OutgoingBody, body: &[u8]) -> Result<(), Error> {
    {
        let stream = outgoing
            .write()
            .map_err(|()| Error::other("the request body stream was taken twice".into()))?;
        // `blocking-write-and-flush` takes at most 4096 bytes a call.
        for chunk in body.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|err| stream_error(err, "writing the request body"))?;
        }
    }
    OutgoingBody::finish(outgoing, None)
        .map_err(|code| Error::from_code(code, "finishing the request body"))
}

fn read_response(response: &IncomingResponse) -> Result<Response, Error> {
    let status = StatusCode::from_u16(response.status())
        .map_err(|_| Error::from_code(ErrorCode::HttpProtocolError, "the response status"))?;
    let mut headers = HeaderMap::new();
    for (name, value) in response.headers().entries() {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(&value),
        ) {
            headers.append(name, value);
        }
    }
    let incoming = response
        .consume()
        .map_err(|()| Error::other("the response body was taken twice".into()))?;
    let mut body = Vec::new();
    {
        let stream = incoming
            .stream()
            .map_err(|()| Error::other("the response body stream was taken twice".into()))?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(bytes) => body.extend_from_slice(&bytes),
                Err(StreamError::Closed) => break,
                Err(err) => return Err(stream_error(err, "reading the response body")),
            }
        }
    }
    drop(wasip2::http::types::IncomingBody::finish(incoming));
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// A stream error, named by its `wasi:http` code when the host gives one.
fn stream_error(err: StreamError, context: &str) -> Error {
    match err {
        StreamError::Closed => Error::from_code(ErrorCode::ConnectionTerminated, context),
        StreamError::LastOperationFailed(io) => match wasip2::http::types::http_error_code(&io) {
            Some(code) => Error::from_code(code, context),
            None => Error::other(format!("{context}: {}", io.to_debug_string())),
        },
    }
}

/// What `code` means, in a sentence for the task's cause: the limits a host enforces
/// say which setting they come from; any other code is its WIT name.
fn describe(code: &ErrorCode) -> String {
    let name = || wit_case_name(&format!("{code:?}"));
    match code {
        ErrorCode::HttpRequestDenied => {
            "HTTP-request-denied: the activity is not granted this destination (allowed_outbound_hosts, or [activity.aws] for AWS)".into()
        }
        ErrorCode::ConnectionLimitReached => {
            "connection-limit-reached: the task has sent its outbound.max_requests".into()
        }
        ErrorCode::HttpResponseBodySize(Some(limit)) => format!(
            "HTTP-response-body-size: over the task's {limit} bytes (outbound.max_response_bytes)"
        ),
        ErrorCode::ConnectionReadTimeout => {
            "connection-read-timeout: the server sent nothing for longer than the read timeout"
                .into()
        }
        ErrorCode::ConnectionTimeout => {
            "connection-timeout: connecting took longer than the connect timeout".into()
        }
        ErrorCode::DestinationIpProhibited => {
            "destination-IP-prohibited: the host resolved to an address guests may not reach".into()
        }
        ErrorCode::DnsError(payload) => match &payload.rcode {
            Some(rcode) => format!("DNS-error: {rcode}"),
            None => name(),
        },
        ErrorCode::TlsAlertReceived(payload) => match &payload.alert_message {
            Some(message) => format!("TLS-alert-received: {message}"),
            None => name(),
        },
        ErrorCode::InternalError(Some(message)) => format!("internal-error: {message}"),
        _ => name(),
    }
}

/// `HttpRequestDenied` → `HTTP-request-denied`, from the Debug form of an error code
/// (payloads dropped): the name the WIT gives the case.
pub(crate) fn wit_case_name(debug: &str) -> String {
    let name = debug.rsplit("::").next().unwrap_or(debug);
    let name = name.split(['(', ' ', '{']).next().unwrap_or(name);
    let mut words: Vec<String> = Vec::new();
    for c in name.chars() {
        if c.is_ascii_uppercase() || words.is_empty() {
            words.push(String::new());
        }
        if let Some(word) = words.last_mut() {
            word.push(c.to_ascii_lowercase());
        }
    }
    words
        .into_iter()
        .map(|word| match word.as_str() {
            "http" | "dns" | "tls" | "ip" | "uri" => word.to_ascii_uppercase(),
            _ => word,
        })
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::wit_case_name;

    #[test]
    fn case_names_are_spelled_as_in_the_wit() {
        for (debug, wit) in [
            ("ErrorCode::HttpRequestDenied", "HTTP-request-denied"),
            ("HttpRequestDenied", "HTTP-request-denied"),
            (
                "ErrorCode::DestinationIpProhibited",
                "destination-IP-prohibited",
            ),
            (
                "ErrorCode::HttpRequestUriTooLong",
                "HTTP-request-URI-too-long",
            ),
            (
                "ErrorCode::DnsError(DnsErrorPayload { rcode: None })",
                "DNS-error",
            ),
            (
                "ErrorCode::HttpResponseBodySize(Some(10))",
                "HTTP-response-body-size",
            ),
            (
                "ErrorCode::ConnectionReadTimeout",
                "connection-read-timeout",
            ),
            ("ErrorCode::TlsAlertReceived(..)", "TLS-alert-received"),
        ] {
            assert_eq!(wit_case_name(debug), wit, "{debug}");
        }
    }
}
