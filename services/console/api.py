"""JSON routes the console needs that the API lacked (thin; logic in ``inventory``).

Tenant routes (``/v1/adapters``, ``/v1/usage``) use the gateway's own tenant dependency (key,
quota admission); admin routes (``/admin/replicas``, ``/admin/jobs``) use the same
``Authenticator.admin`` check as the admin router. A tenant only ever sees its own adapters;
another tenant's adapter is a 404 worded as if it did not exist.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import Response

from adept.config.adapter import VERSION_RE, check_adapter_name
from adept.errors import AdeptError, NotFound
from adept.tenancy import Tenant
from services.console import inventory
from services.gateway.api_router import tenant_dependency

Status = Callable[[], Awaitable[Any]]
log = logging.getLogger(__name__)


def _registry(ctx: Any) -> Any:
    return ctx.platform.registry


async def _serve_status() -> tuple[Any, str | None]:
    """``serve.status()`` and this application's name, from inside a Serve replica; (None, None) elsewhere."""
    if "ray.serve" not in sys.modules:  # not inside a Serve replica: do not import Ray just to find out
        return None, None
    from ray import serve
    from ray.exceptions import RayError
    from ray.serve.exceptions import RayServeException

    try:
        app_name = serve.get_replica_context().app_name
    except RayServeException:  # Serve is imported but this is not a replica (tests, tools)
        return None, None
    try:
        return await asyncio.wait_for(asyncio.to_thread(serve.status), 10), app_name
    except (TimeoutError, RayError, RayServeException) as e:  # controller busy or gone: show what we can
        log.warning("Serve status unavailable for the console: %r", e)
        return None, app_name


def _llm_info(ctx: Any) -> Callable[[], Awaitable[dict[str, Any]]] | None:
    info = getattr(getattr(ctx.completions, "llm", None), "info", None)
    return info if callable(info) else None


def build_console_api_router(
    ctx: Any,
    *,
    serve_status: Callable[[], Awaitable[tuple[Any, str | None]]] = _serve_status,
) -> APIRouter:
    """``GET /v1/adapters``, ``/v1/adapters/{name}/{version}/{loss_curve.png|metrics}``, ``/v1/usage``,
    ``/admin/replicas``, ``/admin/jobs``.

    Args:
        ctx: The gateway's ``GatewayContext``.
        serve_status: Returns ``(serve.status(), app_name)``; injectable for tests.
    """
    tenant_dep = tenant_dependency(ctx)

    def require_admin(request: Request, authorization: str | None = Header(None)) -> None:
        ctx.auth.admin(authorization)
        request.state.tenant = "admin"

    router = APIRouter()
    admin_only = {"tags": ["admin"], "dependencies": [Depends(require_admin)]}

    @router.get(
        "/v1/adapters", tags=["console"], summary="The caller's adapters with versions, manifests and metrics"
    )
    async def list_adapters(tenant: Tenant = Depends(tenant_dep)) -> dict[str, Any]:
        data = await asyncio.to_thread(inventory.adapter_listing, _registry(ctx), tenant.name)
        return {"object": "list", "data": data}

    async def _version(tenant: Tenant, name: str, version: str) -> Any:
        try:
            check_adapter_name(name)
        except ValueError:
            raise NotFound(f"adapter {name}@{version} not found", code="model_not_found") from None
        if not VERSION_RE.fullmatch(version):
            raise NotFound(f"adapter {name}@{version} not found", code="model_not_found")
        return await asyncio.to_thread(inventory.find_version, _registry(ctx), tenant.name, name, version)

    @router.get(
        "/v1/adapters/{name}/{version}/loss_curve.png", tags=["console"], summary="Training loss curve (PNG)"
    )
    async def loss_curve(name: str, version: str, tenant: Tenant = Depends(tenant_dep)) -> Response:
        v = await _version(tenant, name, version)
        png = await asyncio.to_thread(inventory.read_extra, v, "loss_curve.png")
        if png is None:
            raise NotFound(f"adapter {name}@{version} has no loss curve")
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=300"})

    @router.get(
        "/v1/adapters/{name}/{version}/metrics", tags=["console"], summary="Training metrics and loss history"
    )
    async def metrics(name: str, version: str, tenant: Tenant = Depends(tenant_dep)) -> Any:
        import json

        v = await _version(tenant, name, version)
        raw = await asyncio.to_thread(inventory.read_extra, v, "metrics.json")
        data = {}
        if raw:
            try:
                data = json.loads(raw)
            except ValueError as e:  # stored by training: show the manifest's metrics, say what is wrong
                log.warning("ignoring unreadable metrics.json of %s: %s", v.id, e)
        return {"id": v.id, "metrics": v.manifest.metrics, **(data if isinstance(data, dict) else {})}

    @router.get("/v1/usage", tags=["console"], summary="The caller's use against its quotas")
    async def usage(tenant: Tenant = Depends(tenant_dep)) -> dict[str, Any]:
        documents = None
        try:
            documents = int(await ctx.kb.count_documents(tenant.name))
        except AdeptError as e:  # retrieval down (the handle maps every failure): the page shows "unknown"
            log.warning("document count for the usage page unavailable: %s", e.message)
        adapters = await asyncio.to_thread(lambda: len({v.name for v in _registry(ctx).list(tenant.name)}))
        window = await ctx.quotas.usage(tenant.name) if ctx.quotas is not None else (0, 0)
        report = inventory.usage_report(
            tenant, ctx.quotas, window=window, documents=documents, adapters=adapters
        )
        if ctx.finetuning is not None:
            report["quotas"].update(await ctx.finetuning.usage(tenant))
        return report

    @router.get(
        "/admin/replicas", **admin_only, summary="Deployments, and the adapters loaded on each LLM replica"
    )
    async def replicas() -> dict[str, Any]:
        status, app_name = await serve_status()
        deployments = inventory.deployment_overview(status, app_name)
        llm = next((d for d in deployments if d["name"] == "llm"), None)
        running = (llm or {}).get("replicas", {}).get("RUNNING", 1)
        info = _llm_info(ctx)
        found = await inventory.sample_replicas(info, running) if info is not None else []
        return {"deployments": deployments, "llm_replicas": found, "llm_replicas_running": running}

    @router.get("/admin/jobs", **admin_only, summary="Recent fine-tuning jobs of every tenant")
    async def jobs(limit: int = 50) -> dict[str, Any]:
        if ctx.finetuning is None:
            return {"object": "list", "data": []}
        found = await asyncio.to_thread(ctx.finetuning.owner.jobs.recent, max(1, min(limit, 500)))
        return {"object": "list", "data": [inventory.job_row(r) for r in found]}

    return router
