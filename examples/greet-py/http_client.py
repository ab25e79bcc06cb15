"""Blocking HTTP requests over wasi:http for Python handlers (componentize-py bindings).

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
    status, _headers, body = request("GET", url)
    return status, body


_METHODS = {
    "GET": http.Method_Get, "HEAD": http.Method_Head, "POST": http.Method_Post,
    "PUT": http.Method_Put, "DELETE": http.Method_Delete, "PATCH": http.Method_Patch,
    "OPTIONS": http.Method_Options,
}


def request(method, url, headers=None, body=b""):
    """Sends `method url` with `headers` ({name: value}) and `body` (bytes or str);
    returns (status, {name: value}, body bytes). Raises HttpError."""
    parts = urlsplit(url)
    fields = http.Fields.from_list(
        [(name.lower(), str(value).encode()) for name, value in (headers or {}).items()]
    )
    outgoing = http.OutgoingRequest(fields)
    method_type = _METHODS.get(method.upper())
    outgoing.set_method(method_type() if method_type else http.Method_Other(method))
    outgoing.set_scheme(http.Scheme_Https() if parts.scheme == "https" else http.Scheme_Http())
    outgoing.set_authority(parts.netloc)
    outgoing.set_path_with_query((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
    outgoing_body = outgoing.body()
    try:
        # Sent before the body is written: the host reads the body as it sends it.
        future = outgoing_handler.handle(outgoing, None)
    except Err as err:
        raise HttpError(err.value) from None
    data = body.encode() if isinstance(body, str) else body
    write_error = None
    with outgoing_body.write() as stream:
        try:
            for at in range(0, len(data), 4096):
                stream.blocking_write_and_flush(data[at:at + 4096])
        except Err as err:
            write_error = err
    try:
        http.OutgoingBody.finish(outgoing_body, None)
    except Err as err:
        write_error = write_error or err
    with future:
        with future.subscribe() as ready:
            ready.block()
        result = future.get()
    if not isinstance(result, Ok) or not isinstance(result.value, Ok):
        code = result.value.value if isinstance(result, Ok) else None
        raise HttpError(code)
    if write_error is not None:
        raise HttpError(None, "the request body could not be written")
    with result.value.value as response:
        status = response.status()
        with response.headers() as fields:
            response_headers = {name: value.decode("utf-8", "replace") for name, value in fields.entries()}
        with response.consume() as incoming:
            chunks = []
            with incoming.stream() as stream:
                while True:
                    try:
                        chunks.append(stream.blocking_read(64 * 1024))
                    except Err as err:
                        if isinstance(err.value, streams.StreamError_Closed):
                            break
                        failed = err.value.value
                        raise HttpError(http.http_error_code(failed), failed.to_debug_string()) from None
    return status, response_headers, b"".join(chunks)
