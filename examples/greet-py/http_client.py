"""Blocking HTTP requests over wasi:http for the Python examples: the Python SDK's client
(`sfn_wasm_guest.http`, which goes through wasi:http inside a component), in the tuple
form these raw-bindings examples use. `scripts/build-polyglot.sh` puts `guest-sdk/python`
on the build's path.

The host sends a request only where the activity's `allowed_outbound_hosts` allows; any
other fails with wasi:http's HTTP-request-denied, raised here as `HttpError` whose
`name` is the error code's WIT name.
"""

from sfn_wasm_guest import http
from sfn_wasm_guest.http import HttpError

__all__ = ["HttpError", "get", "request"]


def get(url):
    """GETs `url`; returns (status, body bytes). Raises HttpError."""
    response = http.get(url)
    return response.status, response.body


def request(method, url, headers=None, body=b""):
    """Sends `method url` with `headers` ({name: value}) and `body` (bytes or str);
    returns (status, {name: value}, body bytes). Raises HttpError."""
    response = http.request(method, url, headers, body)
    return response.status, response.headers, response.body
