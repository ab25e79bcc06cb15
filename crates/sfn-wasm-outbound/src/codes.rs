//! The `wasi:http` error code of a failed body read, whoever framed or paced the body.
//!
//! wasmtime-wasi-http hands a guest the error of a response body stream as a
//! `wasi:io/error` holding the embedder's [`Error`], and its `http-error-code` only
//! recognises an [`ErrorCode`] there: a body cut at the byte budget or stalled past the
//! read timeout reached the guest as a text, while the same limit hit at the head (a
//! declared `Content-Length`) had its code. [`http_error_code`] is the host's
//! `wasi:http/types.http-error-code`: it answers for the errors this host's
//! [`ResponseBody`](super::send) yields too, so a state machine can `Retry` or `Catch`
//! on `HTTP-response-body-size` or `connection-read-timeout` however the server sent
//! the body.

use wasmtime_wasi_http::Error;
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;

/// The code of `err`, an error a guest read from a `wasi:io` stream: wasmtime's own
/// [`ErrorCode`]s, and the body errors of this host's outbound client. `None` for any
/// other error (a guest then has only its text).
pub fn http_error_code(err: &wasmtime::Error) -> Option<ErrorCode> {
    if let Some(code) = err.downcast_ref::<ErrorCode>() {
        return Some(code.clone());
    }
    Some(match err.downcast_ref::<Error>()? {
        Error::HttpResponseBodySize(limit) => ErrorCode::HttpResponseBodySize(*limit),
        Error::ConnectionReadTimeout => ErrorCode::ConnectionReadTimeout,
        Error::HttpResponseTimeout => ErrorCode::HttpResponseTimeout,
        Error::HttpResponseIncomplete => ErrorCode::HttpResponseIncomplete,
        Error::ConnectionTerminated => ErrorCode::ConnectionTerminated,
        Error::HttpProtocolError => ErrorCode::HttpProtocolError,
        Error::InternalError(text) => ErrorCode::InternalError(text.clone()),
        _ => return None,
    })
}

/// The error a failed read of a response body becomes: always one that
/// [`http_error_code`] names.
/// The code of a failed TLS handshake: `TLS-certificate-error` when the server's
/// certificate is not trusted (an internal CA without `ca_file`, a wrong name, expired),
/// `TLS-alert-received` when the server refused, else `TLS-protocol-error`.
/// (wasmtime-wasi-http's default names every TLS failure `TLS-protocol-error`.)
pub(super) fn tls_error_code(err: &std::io::Error) -> ErrorCode {
    use wasmtime_wasi_http::p2::bindings::http::types::TlsAlertReceivedPayload;
    match err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented) => {
            ErrorCode::TlsCertificateError
        }
        Some(rustls::Error::AlertReceived(alert)) => {
            ErrorCode::TlsAlertReceived(TlsAlertReceivedPayload {
                alert_id: Some(u8::from(*alert)),
                alert_message: Some(format!("{alert:?}")),
            })
        }
        _ => ErrorCode::TlsProtocolError,
    }
}

/// The connection ending before the declared length (hyper's body error over an
/// `UnexpectedEof`) is `HTTP-response-incomplete`; any other I/O error,
/// `connection-terminated`; a malformed body (chunk syntax), `HTTP-protocol-error`.
pub(super) fn body_error(err: &hyper::Error) -> Error {
    let io = std::iter::successors(std::error::Error::source(err), |e| e.source())
        .find_map(|e| e.downcast_ref::<std::io::Error>());
    if err.is_timeout() {
        Error::HttpResponseTimeout
    } else if err.is_incomplete_message()
        || io.is_some_and(|io| io.kind() == std::io::ErrorKind::UnexpectedEof)
    {
        Error::HttpResponseIncomplete
    } else if io.is_some() || err.is_closed() || err.is_canceled() {
        Error::ConnectionTerminated
    } else {
        Error::HttpProtocolError
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_errors_of_the_host_have_their_code() {
        for (err, code) in [
            (
                Error::HttpResponseBodySize(Some(1000)),
                ErrorCode::HttpResponseBodySize(Some(1000)),
            ),
            (
                Error::ConnectionReadTimeout,
                ErrorCode::ConnectionReadTimeout,
            ),
            (Error::HttpResponseTimeout, ErrorCode::HttpResponseTimeout),
            (
                Error::HttpResponseIncomplete,
                ErrorCode::HttpResponseIncomplete,
            ),
            (Error::ConnectionTerminated, ErrorCode::ConnectionTerminated),
            (Error::HttpProtocolError, ErrorCode::HttpProtocolError),
        ] {
            let found = http_error_code(&wasmtime::Error::from(err));
            assert_eq!(format!("{found:?}"), format!("{:?}", Some(code)));
        }
        let code = http_error_code(&wasmtime::Error::from(ErrorCode::DnsTimeout));
        assert!(matches!(code, Some(ErrorCode::DnsTimeout)));
        assert!(http_error_code(&wasmtime::format_err!("a file error")).is_none());
    }
}
