"""Admin routes (thin): tenants and adapters through the kernel's ``Platform``. Admin key only; tenant keys get 403."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse

from adept.config.tenant import TenantSpec
from adept.errors import InvalidRequest, Unavailable
from adept.evalset import check_evaluation_file
from services.gateway.admin import (
    ActivateAdapterRequest,
    AdapterDeleted,
    AdapterUnloaded,
    AdapterView,
    EvaluateRequest,
    KeyRotated,
    PublishAdapterRequest,
    TenantDeleted,
    UnloadAdapterRequest,
)
from services.gateway.context import GatewayContext
from services.gateway.protocol import parse_body


def build_admin_router(ctx: GatewayContext) -> APIRouter:
    """``/admin/tenants[/{name}]`` (POST, GET, PUT, DELETE, key rotation) and ``/admin/adapters`` (POST, GET, DELETE)."""

    def require_admin(request: Request, authorization: str | None = Header(None)) -> None:
        ctx.auth.admin(authorization)
        request.state.tenant = "admin"

    router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])
    platform = ctx.platform

    @router.post("/tenants", status_code=201, openapi_extra={"requestBody": _schema(TenantSpec)})
    async def create_tenant(request: Request) -> JSONResponse:
        spec = parse_body(TenantSpec, await request.body())
        tenant, key = await platform.create_tenant(spec)
        # The key is shown this once; only its hash is stored.
        return JSONResponse({**tenant.to_dict(), "api_key": key}, status_code=201)

    @router.get("/tenants")
    async def list_tenants() -> dict[str, Any]:
        return {"object": "list", "data": [t.to_dict() for t in await platform.list_tenants()]}

    @router.get("/tenants/{name}")
    async def get_tenant(name: str) -> dict[str, Any]:
        return (await platform.get_tenant(name)).to_dict()

    @router.put("/tenants/{name}", openapi_extra={"requestBody": _schema(TenantSpec)})
    async def update_tenant(name: str, request: Request) -> dict[str, Any]:
        spec = parse_body(TenantSpec, await request.body())
        if spec.name != name:
            raise InvalidRequest(f"body names tenant {spec.name!r} but the URL names {name!r}", param="name")
        return (await platform.update_tenant(spec)).to_dict()

    @router.post("/tenants/{name}/rotate-key")
    async def rotate_key(name: str) -> KeyRotated:
        return KeyRotated(name=name, api_key=await platform.rotate_key(name))

    @router.delete("/tenants/{name}")
    async def delete_tenant(name: str) -> TenantDeleted:
        deletion = await platform.delete_tenant(name)
        return TenantDeleted(name=deletion.name, adapters_deleted=deletion.adapters_deleted)

    @router.post("/tenants/{name}/purge")
    async def purge_tenant(name: str) -> TenantDeleted:
        """Remove everything the tenant owns but its record and key (the operator's finalizer calls this)."""
        deletion = await platform.purge_tenant(name)
        return TenantDeleted(name=deletion.name, adapters_deleted=deletion.adapters_deleted)

    @router.post("/adapters", status_code=201, openapi_extra={"requestBody": _schema(PublishAdapterRequest)})
    async def publish_adapter(request: Request) -> JSONResponse:
        req = parse_body(PublishAdapterRequest, await request.body())
        version = await platform.publish_adapter(
            req.tenant,
            req.name,
            req.path,
            description=req.description or None,
            base_model=req.base_model,
            activate=req.activate,
        )
        served = await platform.served_versions(req.tenant)
        return JSONResponse(AdapterView.of(version, served).model_dump(), status_code=201)

    @router.post("/adapters/unload", openapi_extra={"requestBody": _schema(UnloadAdapterRequest)})
    async def unload_adapter(request: Request) -> AdapterUnloaded:
        req = parse_body(UnloadAdapterRequest, await request.body())
        return AdapterUnloaded(id=req.model, unloaded=await platform.unload_adapter(req.model))

    @router.get("/adapters/{tenant}")
    async def list_adapters(tenant: str) -> dict[str, Any]:
        versions = await platform.list_adapters(tenant)
        served = await platform.served_versions(tenant)
        return {"object": "list", "data": [AdapterView.of(v, served).model_dump() for v in versions]}

    @router.post(
        "/adapters/{tenant}/{name}/activate", openapi_extra={"requestBody": _schema(ActivateAdapterRequest)}
    )
    async def activate_adapter(tenant: str, name: str, request: Request) -> AdapterView:
        req = parse_body(ActivateAdapterRequest, await request.body())
        version = await platform.activate_adapter(tenant, name, req.version)
        return AdapterView.of(version, {name: version.version})

    @router.delete("/adapters/{tenant}/{name}")
    async def delete_adapter(
        tenant: str,
        name: str,
        version: str | None = Query(None, description="Delete only this version (`v<N>`)."),
    ) -> AdapterDeleted:
        ids = await platform.delete_adapter(tenant, name, version)
        return AdapterDeleted(id=f"{tenant}/{name}", versions=[i.rsplit("@", 1)[1] for i in ids])

    @router.post("/tenants/{name}/evaluate", openapi_extra={"requestBody": _schema(EvaluateRequest)})
    async def evaluate(name: str, request: Request) -> dict[str, Any]:
        """Eval-gated promotion's measurement: ``model`` asked every question of ``evaluation`` as tenant
        ``name`` (its documents, its adapters), scored as ``adept eval`` scores; every metric's mean."""
        req = parse_body(EvaluateRequest, await request.body())
        if ctx.evaluator is None:
            raise Unavailable(
                "this gateway measures nothing: it was built without an evaluator "
                "(the Serve application's import path tools.eval.serve_app:build_app injects one)"
            )
        await platform.get_tenant(name)
        await asyncio.to_thread(
            ctx.catalog.resolve, name, req.model
        )  # 404 for a model the tenant cannot use (not scores of 0)
        eval_set = check_evaluation_file(req.evaluation, "evaluation")
        metrics = await ctx.evaluator(name, eval_set)(req.model)
        return {"object": "evaluation", "tenant": name, "model": req.model, "metrics": metrics}

    return router


def _schema(model: type) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}
