"""Tenant-facing routes (thin): authenticate, admit under quota, parse, call the logic layer, reply."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel

from adept.finetuning.jobs import adapter_of_fine_tuned_model
from adept.tenancy import Tenant
from services.gateway.chat import model_not_found
from services.gateway.context import GatewayContext
from services.gateway.metrics import CONTENT_TYPE
from services.gateway.protocol import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Completion,
    CompletionChunk,
    CompletionRequest,
    EmbeddingRequest,
    EmbeddingResponse,
    HealthResponse,
    ModelCard,
    ModelList,
    parse_body,
)
from services.responses import TENANT_ERRORS, ModelResponse

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# Stream event models: not return types of any route, so the OpenAPI document gets them from here.
STREAM_EVENT_MODELS: tuple[type[BaseModel], ...] = (ChatCompletionChunk, CompletionChunk)


def tenant_dependency(ctx: GatewayContext) -> Callable[..., Tenant]:
    """FastAPI dependency: the calling tenant (401 without a valid key), admitted under its quota (429)."""

    async def current_tenant(request: Request, authorization: str | None = Header(None)) -> Tenant:
        tenant = ctx.auth.tenant(authorization)
        request.state.tenant = tenant.name  # for the request metrics' tenant label
        await ctx.admit(tenant)
        return tenant

    return current_tenant


def admin_tenant_dependency(ctx: GatewayContext) -> Callable[..., Tenant]:
    """FastAPI dependency for admin routes that act for a tenant named in the path (``{tenant}``)."""

    def named_tenant(tenant: str, request: Request, authorization: str | None = Header(None)) -> Tenant:
        ctx.auth.admin(authorization)
        request.state.tenant = "admin"
        return ctx.platform.tenants.get(tenant)

    return named_tenant


def _reply(result: BaseModel | AsyncIterator[bytes]) -> Response:
    if isinstance(result, BaseModel):
        return ModelResponse(result)
    return StreamingResponse(result, media_type="text/event-stream", headers=_SSE_HEADERS)


def _streamed(json_model: type[BaseModel], event_model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses of a route that answers JSON, or Server-Sent Events when ``stream`` is set.

    An event stream is text, not one JSON document: its schema is a string, and each event's
    model is in the document's components (``document_models`` puts it there).
    """
    name = event_model.__name__
    events = {
        "type": "string",
        "description": f"`data: <{name}>` events (components/schemas/{name}), then `data: [DONE]`.",
    }
    return {
        **TENANT_ERRORS,
        200: {
            "model": json_model,
            "description": f"A `{json_model.__name__}`, or with `stream: true` a stream of `{name}` events.",
            "content": {"text/event-stream": {"schema": events}},
        },
    }


def _body_schema(model: type) -> dict[str, Any]:
    # Bodies are parsed by protocol.parse_body (400s, not 422s); this keeps them in the OpenAPI document.
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


def build_api_router(ctx: GatewayContext) -> APIRouter:
    """``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``, ``/v1/embeddings``, ``/healthz``, ``/metrics``."""
    router = APIRouter()
    tenant_dep = tenant_dependency(ctx)

    @router.post(
        "/v1/chat/completions",
        tags=["openai"],
        response_model=ChatCompletion,
        responses=_streamed(ChatCompletion, ChatCompletionChunk),
        openapi_extra=_body_schema(ChatCompletionRequest),
    )
    async def chat_completions(request: Request, tenant: Tenant = Depends(tenant_dep)) -> Response:
        req = parse_body(ChatCompletionRequest, await request.body())
        return _reply(await ctx.completions.chat(tenant, req))

    @router.post(
        "/v1/completions",
        tags=["openai"],
        response_model=Completion,
        responses=_streamed(Completion, CompletionChunk),
        openapi_extra=_body_schema(CompletionRequest),
    )
    async def completions(request: Request, tenant: Tenant = Depends(tenant_dep)) -> Response:
        req = parse_body(CompletionRequest, await request.body())
        return _reply(await ctx.completions.complete(tenant, req))

    @router.get("/v1/models", tags=["openai"], response_model=ModelList, responses=TENANT_ERRORS)
    async def list_models(tenant: Tenant = Depends(tenant_dep)) -> Response:
        return ModelResponse(await asyncio.to_thread(ctx.catalog.list, tenant.name))

    @router.get("/v1/models/{model:path}", tags=["openai"], response_model=ModelCard, responses=TENANT_ERRORS)
    async def get_model(model: str, tenant: Tenant = Depends(tenant_dep)) -> Response:
        models = await asyncio.to_thread(ctx.catalog.list, tenant.name)
        # A fine-tuning job's ft:<base>:<tenant>:<suffix>:<id> names one of the listed adapters.
        ref = adapter_of_fine_tuned_model(tenant.name, model) or model
        for card in models.data:
            if card.id == ref:
                return ModelResponse(card.model_copy(update={"id": model}))
        raise model_not_found(model)

    @router.post(
        "/v1/embeddings",
        tags=["openai"],
        response_model=EmbeddingResponse,
        responses=TENANT_ERRORS,
        openapi_extra=_body_schema(EmbeddingRequest),
    )
    async def embeddings(request: Request, tenant: Tenant = Depends(tenant_dep)) -> Response:
        req = parse_body(EmbeddingRequest, await request.body())
        out = await ctx.embeddings.embed(req)
        ctx.charge(tenant, out.usage.total_tokens)
        return ModelResponse(out)

    @router.get(
        "/healthz",
        tags=["operations"],
        response_model=HealthResponse,
        responses={503: {"model": HealthResponse, "description": "A deployment is not ready"}},
    )
    async def healthz() -> Response:
        deployments = await ctx.health()
        ready = all(state == "ready" for state in deployments.values())
        health = HealthResponse(status="ok" if ready else "unavailable", deployments=deployments)
        return ModelResponse(health, status_code=200 if ready else 503)

    @router.get("/metrics", tags=["operations"])
    async def metrics(authorization: str | None = Header(None)) -> Response:
        # Series are labelled by tenant and adapter: only the platform (admin key) may read them.
        ctx.auth.admin(authorization)
        if ctx.refresh_metrics is not None:
            await ctx.refresh_metrics()
        return Response(ctx.metrics.render(), media_type=CONTENT_TYPE)

    return router
