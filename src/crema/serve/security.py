"""What the viewer accepts from the network: ASGI middleware wrapped around its app.

* Host names: only the viewer's own (:data:`LOCAL_HOSTS`, the address it listens on and the names
  given with ``--allowed-host``), through Starlette's ``TrustedHostMiddleware``: a page of another
  site whose DNS name is rebound to 127.0.0.1 sends its own name as ``Host`` and gets 400.
* Writes (any method but GET/HEAD/OPTIONS): :class:`SameOriginWrites` answers 403 unless the
  request carries :data:`WRITE_HEADER` (the page's script sets it; a cross-site HTML form cannot,
  and a cross-site script that adds it needs a CORS preflight the viewer never grants) and its
  ``Origin`` (when absent, ``Referer``) is the viewer's own origin. A request with neither, as
  ``curl`` sends, is not a browser acting for another site and needs only the header.
* Request bodies: :class:`BodyLimit` refuses a ``Content-Length`` over ``limits.UPLOAD_BYTES``
  before reading anything, and counts the bytes while they stream in, so a body without a length
  stops at the limit too (413, ``{"error": message}``).
* Every response: :class:`SecurityHeaders` adds a Content-Security-Policy that allows only the
  viewer's own script and style and ``data:`` images and forbids framing, ``nosniff``, and
  ``no-store`` (results are patient data).
"""
from __future__ import annotations

import ipaddress
from typing import Iterable, Sequence
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import limits
from ..errors import CremaError, printable

LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")
WILDCARD_ADDRESSES = frozenset({"0.0.0.0", "::", "[::]", ""})   # listen on all: not a name to visit
WRITE_HEADER = "x-crema-viewer"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DEFAULT_PORTS = {"http": 80, "https": 443}

SECURITY_HEADERS = (
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; object-src 'none'; "
                                 b"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
)


def host_patterns(names: Iterable[str] = ()) -> list[str]:
    """The ``Host`` names the viewer answers: :data:`LOCAL_HOSTS` and ``names`` (the address it
    listens on, unless that is every address, and the ``--allowed-host`` names or ``*.domain``
    patterns; an IPv6 address is bracketed as it appears in a ``Host`` header).

    Raises:
        CremaError: a bare ``*`` (any host: the DNS-rebinding hole), another wildcard form, or a
            name with a scheme, port or path.
    """
    patterns = list(LOCAL_HOSTS)
    for raw in names:
        if raw.strip() in WILDCARD_ADDRESSES:
            continue
        name = _host_name(raw)
        if name not in patterns:
            patterns.append(name)
    return patterns


def _host_name(raw: str) -> str:
    name = raw.strip().lower()
    if name == "*" or "*" in name[1:] or (name.startswith("*") and not name.startswith("*.")):
        raise CremaError(f"--allowed-host {printable(raw)!r}: give a host name or a *.domain pattern "
                         "(a bare * would answer any site's pages)")
    try:
        if ipaddress.ip_address(name.strip("[]")).version == 6:
            return f"[{name.strip('[]')}]"
    except ValueError:
        pass
    if not name or any(ch in name for ch in "/:@ "):
        raise CremaError(f"--allowed-host {printable(raw)!r}: give a host name without scheme, port or path")
    return name


def json_error(status: int, message: str) -> JSONResponse:
    """``{"error": message}`` with ``status`` (a Starlette response is an ASGI app: usable before routing)."""
    return JSONResponse({"error": message}, status_code=status)


class SameOriginWrites:
    """403 for a write without :data:`WRITE_HEADER` or from another origin (see the module)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            problem = write_problem(scope)
            if problem:
                await json_error(403, problem)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def write_problem(scope: Scope) -> str | None:
    """Why a write request is refused, or None."""
    headers = Headers(scope=scope)
    if WRITE_HEADER not in headers:
        return (f"refused: a write to the viewer needs the {WRITE_HEADER} header (the viewer's page sets it; "
                f"other clients add -H '{WRITE_HEADER}: 1')")
    claimed = headers.get("origin")
    if claimed is None and headers.get("referer") is not None:
        claimed = headers["referer"]
    if claimed is None:
        return None
    own = _origin(f"{scope.get('scheme', 'http')}://{headers.get('host', '')}")
    if own is None or _origin(claimed) != own:
        return f"refused: a request from {printable(claimed)[:200]!r}, which is not this viewer's page"
    return None


def _origin(url: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of an origin or URL, or None when it has none (``null``)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return parts.scheme, parts.hostname.lower(), port or DEFAULT_PORTS[parts.scheme]


class BodyLimit:
    """413 for a body over ``limits.UPLOAD_BYTES``: declared (``Content-Length``, before reading)
    or read so far (the app's ``receive`` raises :class:`~crema.limits.LimitError`)."""

    def __init__(self, app: ASGIApp, limit: limits.Limit = limits.UPLOAD_BYTES):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            try:
                self.limit.check(int(declared), "the upload")
            except ValueError as exc:  # LimitError is one; int() of a bad header the other
                bad = not isinstance(exc, limits.LimitError)
                await json_error(400 if bad else 413, "bad Content-Length header" if bad else str(exc))(
                    scope, receive, send)
                return
        read = 0

        async def counted() -> Message:
            nonlocal read
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > self.limit.value():
                    raise limits.LimitError(_streamed_over(self.limit))
            return message

        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except limits.LimitError as exc:
            # a route that let the body's LimitError through; the analysis answers it itself
            if started:
                raise
            await json_error(413, str(exc))(scope, receive, send)


def _streamed_over(limit: limits.Limit) -> str:
    """The message for a body sent without its length that passed ``limit`` (its size is unknown)."""
    return (f"the upload: more than {limit.value() / limits.MIB:,.1f} MiB, over the {limit.name} limit "
            f"(set {limit.env} to raise it)")


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every response that does not set them itself."""

    def __init__(self, app: ASGIApp, headers: Sequence[tuple[bytes, bytes]] = SECURITY_HEADERS):
        self.app, self.headers = app, headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in self.headers if n not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)
