"""Serves the console's files: ``GET /ui`` (the page) and ``GET /ui/static/<name>`` (an allow-list).

Only the files named in ``STATIC_FILES`` are served, read once at build time: a request path is
a dictionary key, never a file-system path, so ``..`` or an encoded slash can reach nothing.
Every response carries a strict Content-Security-Policy: scripts and styles only from this
origin (no inline code at all), requests only to this origin, no framing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from adept.errors import NotFound

STATIC_DIR = Path(__file__).resolve().parent / "static"

# name -> media type; the whole console, nothing else.
STATIC_FILES: dict[str, str] = {
    "index.html": "text/html; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "dom.js": "text/javascript; charset=utf-8",
    "chat.js": "text/javascript; charset=utf-8",
    "knowledge.js": "text/javascript; charset=utf-8",
    "adapters.js": "text/javascript; charset=utf-8",
    "finetuning.js": "text/javascript; charset=utf-8",
    "overview.js": "text/javascript; charset=utf-8",
    "admin.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        # blob: for the loss curves and eval charts, fetched with the key and shown as object URLs.
        "img-src 'self' blob: data:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
    ]
)

SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    media_type: str
    etag: str


def load_static(directory: Path = STATIC_DIR) -> dict[str, StaticFile]:
    """The allow-listed files, read into memory (the whole console is a few tens of kB)."""
    files = {}
    for name, media_type in STATIC_FILES.items():
        body = (directory / name).read_bytes()
        files[name] = StaticFile(body, media_type, '"' + hashlib.sha256(body).hexdigest()[:20] + '"')
    return files


def _respond(request: Request, f: StaticFile) -> Response:
    # no-cache = revalidate each load; the ETag turns that into a cheap 304.
    headers = {**SECURITY_HEADERS, "ETag": f.etag, "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == f.etag:
        return Response(status_code=304, headers=headers)
    return Response(f.body, media_type=f.media_type, headers=headers)


def build_console_router(directory: Path = STATIC_DIR) -> APIRouter:
    """``GET /ui``, ``GET /ui/`` and ``GET /ui/static/{name}`` for the allow-listed names."""
    files = load_static(directory)
    router = APIRouter(tags=["console"], include_in_schema=False)

    @router.get("/ui")
    async def index(request: Request) -> Response:
        return _respond(request, files["index.html"])

    @router.get("/ui/")
    async def index_slash() -> Response:
        return RedirectResponse("/ui", status_code=308, headers=SECURITY_HEADERS)

    @router.get("/ui/static/{name}")
    async def static(name: str, request: Request) -> Response:
        f = files.get(name)
        if f is None:
            raise NotFound(f"no console file named {name!r}", code="unknown_url")
        return _respond(request, f)

    return router
