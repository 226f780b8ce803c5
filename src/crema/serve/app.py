"""The viewer's web app (Starlette): a page, its script and style, and two JSON endpoints.

    GET  /              the page (static/index.html); /static/* its script and style
    GET  /api/info      the model: kind, classes and thresholds, reference set (names, no paths),
                        the upload limit
    POST /api/analyze   multipart: ``files`` (one ECG: a file, or a WFDB .hea with its .dat/.mat),
                        optional ``fs`` and ``leads``; answers the analysis
                        (:meth:`crema.serve.analysis.Viewer.analyze`) or ``{"error": message}``
                        with 400 (unusable upload), 413 (over a limit), 422 (an unexpected
                        ValueError), 403 (a write from another origin, see :mod:`.security`)

Everything is served from this package: the page loads nothing from elsewhere, so the viewer
works on a machine without network, and no ECG leaves it. Every error is one line of JSON; an
unexpected failure is logged here with its traceback and answered by a generic 500.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .. import limits
from ..errors import CremaError
from ..use.inputs import check_fs
from .analysis import Viewer
from .security import BodyLimit, SameOriginWrites, SecurityHeaders, host_patterns, json_error
from .uploads import MAX_UPLOAD_FILES, UploadError

STATIC = Path(__file__).resolve().parent / "static"
MAX_FIELD_BYTES = 64 * 2**10     # a form field (fs, leads) is a few characters
MAX_FIELDS = 8
INTERNAL_ERROR = "internal error while analysing the upload (the server's log has the details)"

log = logging.getLogger(__name__)


def create_app(viewer: Viewer, hosts: Iterable[str] = ()) -> Starlette:
    """The app serving ``viewer``, answering the ``Host`` names ``security.LOCAL_HOSTS`` and
    ``hosts`` (the address it listens on and the ``--allowed-host`` names, see
    :func:`crema.serve.security.host_patterns`)."""

    async def index(request: Request) -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    async def info(request: Request) -> JSONResponse:
        return JSONResponse(viewer.info())

    async def analyze(request: Request) -> JSONResponse:
        try:
            async with request.form(max_files=MAX_UPLOAD_FILES, max_fields=MAX_FIELDS,
                                    max_part_size=MAX_FIELD_BYTES) as form:
                files = [(upload.filename or "", upload.file) for upload in form.getlist("files")
                         if isinstance(upload, UploadFile)]
                fs = _optional_fs(form.get("fs"))
                leads = [name.strip() for name in str(form.get("leads") or "").split(",") if name.strip()] or None
                # inference and plotting are blocking: keep them off the event loop; the uploads
                # are read from their spooled files there, inside the form's lifetime
                result = await run_in_threadpool(viewer.analyze, files, fs, leads)
        except Exception as exc:  # noqa: BLE001 - every failure becomes one line of JSON
            return error_response(exc)
        return JSONResponse(result)

    routes = [Route("/", index), Route("/api/info", info), Route("/api/analyze", analyze, methods=["POST"]),
              Mount("/static", StaticFiles(directory=STATIC), name="static")]
    middleware = [Middleware(SecurityHeaders),
                  Middleware(TrustedHostMiddleware, allowed_hosts=host_patterns(hosts), www_redirect=False),
                  Middleware(SameOriginWrites), Middleware(BodyLimit)]
    return Starlette(routes=routes, middleware=middleware,
                     exception_handlers={HTTPException: _http_error, Exception: _internal_error})


def error_response(exc: Exception) -> JSONResponse:
    """``{"error": one line}`` for what an upload raised: the status of an :class:`UploadError`,
    413 for a limit, 400 for any other message the library wrote (or Starlette's form parser),
    and for anything else a generic 500, its traceback logged here and never sent."""
    if isinstance(exc, UploadError):
        return json_error(exc.status, str(exc))
    if isinstance(exc, limits.LimitError):
        return json_error(413, str(exc))
    if isinstance(exc, CremaError):
        return json_error(400, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    if isinstance(exc, HTTPException):
        # the form parser's refusals: a field over MAX_FIELD_BYTES, too many files, bad multipart
        too_large = "exceeded maximum size" in str(exc.detail)
        return json_error(413 if too_large else exc.status_code, f"the upload: {exc.detail}")
    log.error("crema serve: analysing an upload failed", exc_info=exc)
    return json_error(500, INTERNAL_ERROR)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    return json_error(500, "internal error (the server's log has the details)")


def _optional_fs(value) -> float | None:
    text = str(value or "").strip()
    return None if not text else check_fs(text)
