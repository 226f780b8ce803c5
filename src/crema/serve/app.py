"""The viewer's web app (Starlette): a page, its script and style, and two JSON endpoints.

    GET  /              the page (static/index.html); /static/* its script and style
    GET  /api/info      the model: kind, classes and thresholds, reference set
    POST /api/analyze   multipart: ``files`` (one ECG: a file, or a WFDB .hea with its .dat/.mat),
                        optional ``fs`` and ``leads``; answers the analysis
                        (:meth:`crema.serve.analysis.Viewer.analyze`) or 400 ``{"error": message}``

Everything is served from this package: the page loads nothing from elsewhere, so the viewer
works on a machine without network, and no ECG leaves it.
"""
from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..errors import CremaError
from ..use.inputs import check_fs
from .analysis import Viewer

STATIC = Path(__file__).resolve().parent / "static"
MAX_UPLOAD_BYTES = 200 * 2**20   # an ECG file is kilobytes to a few megabytes


def create_app(viewer: Viewer) -> Starlette:
    """The app serving ``viewer``."""

    async def index(request: Request) -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    async def info(request: Request) -> JSONResponse:
        return JSONResponse(viewer.info())

    async def analyze(request: Request) -> JSONResponse:
        try:
            async with request.form(max_files=16, max_part_size=MAX_UPLOAD_BYTES) as form:
                files = [(upload.filename or "", await upload.read()) for upload in form.getlist("files")
                         if hasattr(upload, "read")]
                fs = _optional_fs(form.get("fs"))
                leads = [name.strip() for name in str(form.get("leads") or "").split(",") if name.strip()] or None
            # inference and plotting are blocking: keep them off the event loop
            result = await run_in_threadpool(viewer.analyze, files, fs, leads)
        except CremaError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(result)

    routes = [Route("/", index), Route("/api/info", info), Route("/api/analyze", analyze, methods=["POST"]),
              Mount("/static", StaticFiles(directory=STATIC), name="static")]
    return Starlette(routes=routes)


def _optional_fs(value) -> float | None:
    text = str(value or "").strip()
    return None if not text else check_fs(text)
