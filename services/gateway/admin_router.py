"""Admin routes (thin): tenants and adapters. Every route needs the admin key; tenant keys get 403."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse

from adept.config.tenant import TenantSpec
from adept.errors import InvalidRequest
from services.gateway.admin import PublishAdapterRequest, UnloadAdapterRequest, adapter_view
from services.gateway.context import GatewayContext
from services.gateway.protocol import parse_body


def build_admin_router(ctx: GatewayContext) -> APIRouter:
    """``/admin/tenants[/{name}]`` (POST, GET, DELETE, key rotation) and ``/admin/adapters`` (POST, GET, DELETE)."""

    def require_admin(request: Request, authorization: str | None = Header(None)) -> None:
        ctx.auth.admin(authorization)
        request.state.tenant = "admin"

    router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])

    @router.post("/tenants", status_code=201, openapi_extra={"requestBody": _schema(TenantSpec)})
    async def create_tenant(request: Request) -> JSONResponse:
        spec = parse_body(TenantSpec, await request.body())
        tenant, key = await ctx.admin.create_tenant(spec)
        # The key is shown this once; only its hash is stored.
        return JSONResponse({**tenant.to_dict(), "api_key": key}, status_code=201)

    @router.get("/tenants")
    async def list_tenants() -> dict[str, Any]:
        return {"object": "list", "data": [t.to_dict() for t in await ctx.admin.list_tenants()]}

    @router.get("/tenants/{name}")
    async def get_tenant(name: str) -> dict[str, Any]:
        return (await ctx.admin.get_tenant(name)).to_dict()

    @router.put("/tenants/{name}", openapi_extra={"requestBody": _schema(TenantSpec)})
    async def update_tenant(name: str, request: Request) -> dict[str, Any]:
        raw = await request.body()
        spec = parse_body(TenantSpec, raw)
        if spec.name != name:
            raise InvalidRequest(f"body names tenant {spec.name!r} but the URL names {name!r}", param="name")
        return (await ctx.admin.update_tenant(spec)).to_dict()

    @router.post("/tenants/{name}/rotate-key")
    async def rotate_key(name: str) -> dict[str, Any]:
        return {"name": name, "api_key": await ctx.admin.rotate_key(name)}

    @router.delete("/tenants/{name}")
    async def delete_tenant(name: str) -> dict[str, Any]:
        return await ctx.admin.delete_tenant(name)

    @router.post("/adapters", status_code=201, openapi_extra={"requestBody": _schema(PublishAdapterRequest)})
    async def publish_adapter(request: Request) -> JSONResponse:
        req = parse_body(PublishAdapterRequest, await request.body())
        version = await ctx.admin.publish_adapter(req)
        return JSONResponse(adapter_view(version), status_code=201)

    @router.post("/adapters/unload", openapi_extra={"requestBody": _schema(UnloadAdapterRequest)})
    async def unload_adapter(request: Request) -> dict[str, Any]:
        req = parse_body(UnloadAdapterRequest, await request.body())
        return await ctx.admin.unload_adapter(req.model)

    @router.get("/adapters/{tenant}")
    async def list_adapters(tenant: str) -> dict[str, Any]:
        return {"object": "list", "data": [adapter_view(v) for v in await ctx.admin.list_adapters(tenant)]}

    @router.delete("/adapters/{tenant}/{name}")
    async def delete_adapter(tenant: str, name: str) -> dict[str, Any]:
        return await ctx.admin.delete_adapter(tenant, name)

    return router


def _schema(model: type) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}
