"""``sfn_wasm_guest.http`` outside a component (a handler's own tests): one request over
``urllib``, its failures named as wasi:http names them. Redirects are not followed, as
wasi:http does not follow them."""

from __future__ import annotations

import http.client
import socket
import ssl
import urllib.error
import urllib.request
from typing import Any


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def _name(reason: BaseException) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection-refused"
    if isinstance(reason, (ConnectionResetError, BrokenPipeError)):
        return "connection-terminated"
    if isinstance(reason, socket.gaierror):
        return "DNS-error"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return "connection-timeout"
    if isinstance(reason, ssl.SSLCertVerificationError):
        return "TLS-certificate-error"
    if isinstance(reason, ssl.SSLError):
        return "TLS-protocol-error"
    return "internal-error"


def _headers(message: Any) -> dict:
    """A response's headers, names lowercased, a repeated header's values joined with ", "."""
    headers: dict = {}
    for name, value in message.items():
        name = name.lower()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def send(req: Any, response: type, error: type) -> Any:
    outgoing = urllib.request.Request(
        req.url, data=req.body or None, headers=req.headers, method=req.method
    )
    try:
        answer = _OPENER.open(outgoing, timeout=60)
    except urllib.error.HTTPError as refused:
        # A status urllib calls an error (4xx, 5xx, an unfollowed 3xx) is a response.
        answer = refused
    except urllib.error.URLError as err:
        reason = err.reason if isinstance(err.reason, BaseException) else err
        raise error(_name(reason), str(getattr(err, "reason", err))) from None
    except (OSError, ssl.SSLError) as err:
        raise error(_name(err), str(err)) from None
    with answer:
        status = getattr(answer, "status", None) or answer.code
        try:
            body = answer.read()
        except http.client.IncompleteRead as err:
            raise error("HTTP-response-incomplete", str(err)) from None
        except (TimeoutError, socket.timeout) as err:
            raise error("connection-read-timeout", str(err)) from None
        except OSError as err:
            raise error(_name(err), str(err)) from None
        return response(status, _headers(answer.headers), body)
