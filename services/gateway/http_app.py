"""The gateway's FastAPI application: routes, OpenAI-style errors, body limits, request metrics.

Every failure leaves as ``{"error": {"message", "type", "code", "param"}}`` with a 4xx/5xx
status: ``AdeptError``s carry their own; FastAPI's 422 validation errors and malformed JSON
become 400; unknown routes 404; oversized bodies 413; anything unexpected a generic 500 that
reveals nothing (the traceback goes to the replica log).
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adept import __version__
from adept.errors import AdeptError, InvalidRequest, NotFound, PayloadTooLarge
from services.gateway.admin_router import build_admin_router
from services.gateway.api_router import (
    STREAM_EVENT_MODELS,
    admin_tenant_dependency,
    build_api_router,
    tenant_dependency,
)
from services.gateway.context import GatewayContext
from services.gateway.finetuning_router import build_finetuning_router
from services.responses import error_response

log = logging.getLogger(__name__)

# Routes whose bodies are uploads (files, adapters) get the upload limit; the rest the JSON limit.
UPLOAD_PREFIXES = ("/v1/kb/documents", "/admin/kb/", "/admin/adapters", "/v1/files")
# Hook for the web console: a module exposing ``mount_console(app, ctx)``, mounted at /ui when present.
CONSOLE_MODULE = "services.console"


class BodyLimitMiddleware:
    """413 for bodies over the route's limit: by Content-Length up front, else while streaming in."""

    def __init__(self, app: ASGIApp, *, max_request_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_request_bytes = max_request_bytes
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_upload_bytes if scope["path"].startswith(UPLOAD_PREFIXES) else self.max_request_bytes
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await error_response(
                PayloadTooLarge(f"request body is {int(declared)} bytes; the limit is {limit} bytes")
            )(scope, receive, send)
            return
        seen = 0

        async def capped_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
            return message

        await self.app(scope, capped_receive, send)


class MetricsMiddleware:
    """Counts every request by route template (never the raw path), tenant and status."""

    def __init__(self, app: ASGIApp, ctx: GatewayContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 500

        async def tracked_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            tenant = (scope.get("state") or {}).get("tenant", "")
            self.ctx.metrics.observe_request(
                route=label, tenant=tenant, status=status, seconds=time.monotonic() - started
            )


def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(InvalidRequest("request body is not valid JSON"))
    parts, param = [], None
    for e in errors[:5]:
        loc = [str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path", "header")]
        param = param or (".".join(loc) or None)
        parts.append(f"{'.'.join(loc) or 'body'}: {e.get('msg', 'invalid')}")
    return error_response(InvalidRequest("invalid request: " + "; ".join(parts), param=param))


def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        err: AdeptError = NotFound(f"Invalid URL ({request.method} {request.url.path})", code="unknown_url")
    elif exc.status_code == 405:
        err = InvalidRequest(
            f"method {request.method} is not allowed on {request.url.path}", code="method_not_allowed"
        )
        err.status = 405
    else:
        err = InvalidRequest(str(exc.detail))
        err.status = exc.status_code
    return error_response(err)


def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    # The base AdeptError is the generic 500 (server_error / internal_error): it reveals nothing.
    return error_response(AdeptError("internal server error"))


def document_models(app: FastAPI, models: Iterable[type[BaseModel]]) -> None:
    """Add ``models`` that no route returns (stream events) to the OpenAPI document's components."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schemas = build().setdefault("components", {}).setdefault("schemas", {})
            for model in models:
                schema = model.model_json_schema(
                    ref_template="#/components/schemas/{model}", mode="serialization"
                )
                for name, sub in schema.pop("$defs", {}).items():
                    schemas.setdefault(name, sub)
                schemas[model.__name__] = schema
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def build_http_app(ctx: GatewayContext) -> FastAPI:
    """The complete ASGI app of one gateway replica."""
    app = FastAPI(
        title="Adept",
        version=__version__,
        description="OpenAI-compatible API with per-tenant adapters and knowledge bases.",
    )
    app.state.ctx = ctx

    async def adept_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, AdeptError)
        return error_response(exc)

    app.add_exception_handler(AdeptError, adept_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)

    app.include_router(build_api_router(ctx))
    app.include_router(build_finetuning_router(ctx))
    app.include_router(build_admin_router(ctx))
    from services.retrieval.api_router import build_kb_router

    app.include_router(build_kb_router(tenant_dependency(ctx), lambda: ctx.kb, config=ctx.retrieval))
    # The same routes for the admin key, acting for the tenant in the path (the operator's KnowledgeBase sync).
    app.include_router(
        build_kb_router(
            admin_tenant_dependency(ctx),
            lambda: ctx.kb,
            config=ctx.retrieval,
            prefix="/admin/kb/{tenant}",
            tags=["admin"],
        )
    )
    mount_console(app, ctx)
    document_models(app, STREAM_EVENT_MODELS)

    app.add_middleware(
        BodyLimitMiddleware, max_request_bytes=ctx.max_request_bytes, max_upload_bytes=ctx.max_upload_bytes
    )
    app.add_middleware(MetricsMiddleware, ctx=ctx)
    return app


def mount_console(app: FastAPI, ctx: Any) -> bool:
    """Mount the web console at ``/ui`` if ``services.console`` provides ``mount_console(app, ctx)``."""
    try:
        module = importlib.import_module(CONSOLE_MODULE)
    except ModuleNotFoundError as e:
        if e.name in (CONSOLE_MODULE, CONSOLE_MODULE.rsplit(".", 1)[0]):
            return False
        raise
    try:
        module.mount_console(app, ctx)
    except Exception:  # a broken console must not take the API down with it
        log.exception("the web console could not be mounted; serving the API without /ui")
        return False
    return True
