"""A blocking HTTP GET over wasi:http for Python handlers (componentize-py bindings).

The host sends a request only where the activity's `allowed_outbound_hosts` allows; any
other fails with wasi:http's HTTP-request-denied, raised here as `HttpError` whose
`name` is the error code's WIT name.
"""

import re
from urllib.parse import urlsplit

from componentize_py_types import Err, Ok
from wit_world.imports import outgoing_handler, streams
from wit_world.imports import wasi_http_types as http


class HttpError(Exception):
    """A failed request; `name` is the wasi:http error code (`HTTP-request-denied`)."""

    def __init__(self, code, detail=""):
        if code is None:
            # The host gave no code (an error of its own, not of the request).
            self.name = "HTTP-error"
        else:
            kind = type(code).__name__.removeprefix("ErrorCode_")
            words = re.findall(r"[A-Z][a-z0-9]*", kind) or ["error"]
            upper = {"http", "dns", "tls", "ip", "uri"}
            self.name = "-".join(w.upper() if w.lower() in upper else w.lower() for w in words)
        super().__init__(f"{self.name}{': ' + detail if detail else ''}")


def get(url):
    """GETs `url`; returns (status, body bytes). Raises HttpError."""
    parts = urlsplit(url)
    request = http.OutgoingRequest(http.Fields())
    request.set_scheme(http.Scheme_Https() if parts.scheme == "https" else http.Scheme_Http())
    request.set_authority(parts.netloc)
    request.set_path_with_query((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
    http.OutgoingBody.finish(request.body(), None)
    try:
        future = outgoing_handler.handle(request, None)
    except Err as err:
        raise HttpError(err.value) from None
    with future:
        with future.subscribe() as ready:
            ready.block()
        result = future.get()
    if not isinstance(result, Ok) or not isinstance(result.value, Ok):
        code = result.value.value if isinstance(result, Ok) else None
        raise HttpError(code)
    with result.value.value as response:
        status = response.status()
        with response.consume() as body:
            chunks = []
            with body.stream() as stream:
                while True:
                    try:
                        chunks.append(stream.blocking_read(64 * 1024))
                    except Err as err:
                        if isinstance(err.value, streams.StreamError_Closed):
                            break
                        failed = err.value.value
                        raise HttpError(http.http_error_code(failed), failed.to_debug_string()) from None
    return status, b"".join(chunks)
