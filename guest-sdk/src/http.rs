//! Outbound HTTP for handlers (feature `http`), through `wasi:http`.
//!
//! Built on [`wstd`], the Bytecode Alliance's async standard library for WASI 0.2
//! components: it owns the `wasi:http` plumbing (request and body resources, pollables),
//! and this module wraps it in blocking calls, since `handle` is a plain function. The
//! host sends a request only to hosts the activity's `allowed_outbound_hosts` lists; any
//! other fails with `HTTP-request-denied`.
//!
//! ```ignore
//! let response = sfn_wasm_guest::http::get("https://api.example.com/items/42")?;
//! let item: Item = response.json()?;
//! ```
//!
//! An [`Error`] turns into a [`Failure`](crate::Failure) named after the `wasi:http`
//! error code (`HTTP-request-denied`, `connection-timeout`, ...), so a state machine can
//! `Retry` or `Catch` on it.

use std::fmt;

use serde::de::DeserializeOwned;
pub use wstd;
pub use wstd::http::{Client, ErrorCode, HeaderMap, HeaderValue, Method, Request, StatusCode};

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

/// Why a request failed: a `wasi:http` error code when the host gave one, and the whole
/// message.
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

impl From<wstd::http::Error> for Error {
    fn from(err: wstd::http::Error) -> Self {
        let code = err
            .chain()
            .find_map(|cause| cause.downcast_ref::<ErrorCode>())
            .cloned();
        Self {
            code,
            message: format!("{err:#}"),
        }
    }
}

impl From<Error> for crate::Failure {
    fn from(err: Error) -> Self {
        crate::Failure::new(err.name(), err.message)
    }
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

/// Sends `request` with a default [`Client`], waiting for the whole response.
///
/// # Errors
/// As [`get`].
pub fn send(request: Request<Vec<u8>>) -> Result<Response, Error> {
    send_with(&Client::new(), request)
}

/// Sends `request` with `client` (for its timeouts), waiting for the whole response.
///
/// # Errors
/// As [`get`].
pub fn send_with(client: &Client, request: Request<Vec<u8>>) -> Result<Response, Error> {
    wstd::runtime::block_on(async {
        let response = client.send(request).await?;
        let (parts, mut body) = response.into_parts();
        let body = body.contents().await?.to_vec();
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    })
}

/// `HttpRequestDenied` → `HTTP-request-denied`, from the Debug form of an error code
/// (payloads dropped): the name the WIT gives the case.
fn wit_case_name(debug: &str) -> String {
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
