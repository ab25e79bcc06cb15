"""Outbound HTTP for handlers: ``get(url)`` and ``request(method, url, headers=, body=)``
return a :class:`Response` whose body has been read to its end, or raise
:class:`HttpError` named by the wasi:http error code (``HTTP-request-denied``,
``connection-refused``, ``connection-read-timeout``, ``HTTP-response-body-size``, ...), so
a handler can fail its task with it and a state machine can ``Retry`` or ``Catch`` on it.

Inside a component the requests go through wasi:http, and the host sends them only where
the activity's ``allowed_outbound_hosts`` allows (``python3 -m sfn_wasm_guest build``
builds a handler that imports this module for the world with wasi:http). Outside one (a
handler's own tests) they go through ``urllib``, or to the function given to
:func:`stub`; nothing there checks ``allowed_outbound_hosts``.
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Any, Callable, Iterator, Mapping, Optional, Union
from urllib.parse import urlsplit

__all__ = ["HttpError", "Response", "Request", "get", "request", "stub"]

Body = Union[str, bytes, None]


class HttpError(Exception):
    """A failed request; ``name`` is the wasi:http error code as the WIT spells it."""

    def __init__(self, name: str, detail: str = "") -> None:
        super().__init__(f"{name}: {detail}" if detail else name)
        self.name = name
        self.detail = detail


class Request:
    """A request as a stub sees it: ``method`` uppercased, ``url``, ``headers``
    (lowercase names), ``body`` (bytes)."""

    def __init__(self, method: str, url: str, headers: dict[str, str], body: bytes) -> None:
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        return f"Request({self.method} {self.url})"


class Response:
    """A response: ``status``, ``headers`` ({lowercase name: value}; a repeated header's
    values joined with ", "), ``body`` (bytes)."""

    def __init__(self, status: int = 200, headers: Optional[Mapping[str, str]] = None, body: Body = b"") -> None:
        self.status = status
        self.headers = {name.lower(): str(value) for name, value in (headers or {}).items()}
        self.body = _bytes(body)

    @property
    def ok(self) -> bool:
        """True for a 2xx status."""
        return 200 <= self.status < 300

    def text(self) -> str:
        """The body as UTF-8 text (undecodable bytes replaced)."""
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body parsed as JSON; raises ``ValueError`` when it is not."""
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"Response({self.status}, {len(self.body)} bytes)"


def _bytes(body: Body) -> bytes:
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode()
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    raise TypeError("body must be str or bytes")


# The test's stand-in for the network, while one is in place.
_stubbed: Optional[Callable[[Request], Response]] = None


@contextlib.contextmanager
def stub(fn: Callable[[Request], Response]) -> Iterator[None]:
    """Puts ``fn(request)`` in place of the network inside a ``with`` block: what it
    returns (a :class:`Response`) answers every request; what it raises is raised (raise
    an :class:`HttpError` to act out a failure). For tests."""
    global _stubbed
    previous, _stubbed = _stubbed, fn
    try:
        yield
    finally:
        _stubbed = previous


def request(method: str, url: str, headers: Optional[Mapping[str, str]] = None, body: Body = None) -> Response:
    """Sends ``method url`` with ``headers`` and ``body``; returns the Response once its
    whole body is read. Raises :class:`HttpError`."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {url!r}")
    req = Request(
        method.upper(),
        url,
        {name.lower(): str(value) for name, value in (headers or {}).items()},
        _bytes(body),
    )
    if _stubbed is not None:
        return _stubbed(req)
    return _send(req)


def get(url: str, headers: Optional[Mapping[str, str]] = None) -> Response:
    """``GET url``, as :func:`request`."""
    return request("GET", url, headers)


# Inside a component the interpreter is built for WASI (a `wit_world` package alone says
# nothing: componentize-py's `bindings` command writes one into a project for editors).
if sys.platform != "wasi":
    from ._http_local import send as _local_send

    def _send(req: Request) -> Response:
        return _local_send(req, Response, HttpError)
else:
    try:
        from ._http_wasi import send as _wasi_send
    except ImportError as err:
        raise ImportError(
            "this component was built without wasi:http: `python3 -m sfn_wasm_guest build` "
            "builds a handler that imports sfn_wasm_guest.http for the world with it "
            "(or give --wit/--world for your own)"
        ) from err

    def _send(req: Request) -> Response:
        return _wasi_send(req, Response, HttpError)
