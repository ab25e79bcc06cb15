"""``sfn_wasm_guest.http`` inside a component: one request over wasi:http (the bindings
componentize-py generates for the ``handler-with-http`` world), blocking until the whole
response body is read. Never imported outside a component."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from componentize_py_types import Err, Ok
from wit_world.imports import outgoing_handler, streams
from wit_world.imports import wasi_http_types as http

_METHODS = {
    "GET": http.Method_Get, "HEAD": http.Method_Head, "POST": http.Method_Post,
    "PUT": http.Method_Put, "DELETE": http.Method_Delete, "PATCH": http.Method_Patch,
    "OPTIONS": http.Method_Options, "CONNECT": http.Method_Connect, "TRACE": http.Method_Trace,
}  # fmt: skip
_UPPER = {"http", "dns", "tls", "ip", "uri"}


def _name(code: Any) -> str:
    """The WIT name of an ``error-code`` case: ``ErrorCode_HttpRequestDenied`` is
    ``HTTP-request-denied``."""
    if code is None:
        return "HTTP-error"
    kind = type(code).__name__.removeprefix("ErrorCode_")
    words = re.findall(r"[A-Z][a-z0-9]*", kind) or ["error"]
    return "-".join(w.upper() if w.lower() in _UPPER else w.lower() for w in words)


# The host says no more to the guest (why is in its log).
_DENIED = (
    "the host sends no request there: the activity's allowed_outbound_hosts or "
    "[activity.aws] does not grant it (the host logs outbound:denied with why)"
)


def _failed(code: Any, error: type) -> Exception:
    name = _name(code)
    detail = ""
    if name == "HTTP-response-body-size" and getattr(code, "value", None) is not None:
        detail = f"over the task's {code.value} bytes (outbound.max_response_bytes)"
    elif name == "HTTP-request-denied":
        detail = _DENIED
    elif name == "internal-error" and getattr(code, "value", None):
        detail = str(code.value)
    return error(name, detail)


def send(req: Any, response: type, error: type) -> Any:
    parts = urlsplit(req.url)
    try:
        fields = http.Fields.from_list([(name, value.encode()) for name, value in req.headers.items()])
    except Err as err:
        # A header wasi:http does not take (a forbidden name, invalid syntax).
        raise error("internal-error", f"a request header was refused ({type(err.value).__name__})") from None
    outgoing = http.OutgoingRequest(fields)
    method = _METHODS.get(req.method)
    try:
        outgoing.set_method(method() if method else http.Method_Other(req.method))
        outgoing.set_scheme(http.Scheme_Https() if parts.scheme == "https" else http.Scheme_Http())
        outgoing.set_authority(parts.netloc)
        outgoing.set_path_with_query((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
    except Err:
        raise error("HTTP-request-URI-invalid", req.url) from None
    outgoing_body = outgoing.body()
    try:
        # Sent before the body is written: the host reads the body as it sends it.
        future = outgoing_handler.handle(outgoing, None)
    except Err as err:
        raise _failed(err.value, error) from None
    write_failed = False
    with outgoing_body.write() as stream:
        try:
            for at in range(0, len(req.body), 4096):
                stream.blocking_write_and_flush(req.body[at : at + 4096])
        except Err:
            write_failed = True
    try:
        http.OutgoingBody.finish(outgoing_body, None)
    except Err:
        write_failed = True
    with future:
        with future.subscribe() as ready:
            ready.block()
        result = future.get()
    if not isinstance(result, Ok) or not isinstance(result.value, Ok):
        raise _failed(result.value.value if isinstance(result, Ok) else None, error)
    if write_failed:
        raise error("HTTP-error", "the request body could not be written")
    with result.value.value as incoming_response:
        status = incoming_response.status()
        headers: dict = {}
        with incoming_response.headers() as fields:
            for name, value in fields.entries():
                text = value.decode("utf-8", "replace")
                # A repeated header's values joined with ", ", as the other transports do.
                headers[name] = f"{headers[name]}, {text}" if name in headers else text
        chunks = []
        with incoming_response.consume() as incoming:
            with incoming.stream() as stream:
                while True:
                    try:
                        chunks.append(stream.blocking_read(64 * 1024))
                    except Err as err:
                        if isinstance(err.value, streams.StreamError_Closed):
                            break
                        failed = err.value.value
                        code = http.http_error_code(failed)
                        raise (_failed(code, error) if code is not None else error("HTTP-error", failed.to_debug_string())) from None
    return response(status, headers, b"".join(chunks))
