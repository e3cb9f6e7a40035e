"""Platform administration (logic only): tenants with everything they own, and adapter publishing.

Deleting a tenant removes, in this order, its documents, its adapters (unloaded from replicas
and deleted from the registry) and finally its key: a deletion that fails half-way leaves the
tenant in place, so repeating the call finishes it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import Field

from adept.adapters import parse_adapter_id
from adept.config.adapter import check_adapter_name
from adept.config.base import StrictModel
from adept.config.tenant import TenantSpec, check_tenant_name
from adept.errors import InvalidRequest, NotFound, PermissionDenied
from adept.tenancy import Tenant, TenantStore
from services.gateway.quotas import QuotaEnforcer

log = logging.getLogger(__name__)


class PublishAdapterRequest(StrictModel):
    """``POST /admin/adapters``: publish a PEFT directory readable by the gateway as a tenant's adapter."""

    tenant: str = Field(description="Owning tenant.")
    name: str = Field(description="Adapter name (what the tenant passes as `model`).")
    path: str = Field(
        min_length=1, description="Directory with adapter_config.json and adapter_model.safetensors."
    )
    description: str = Field("", max_length=2000, description="Free text stored in the manifest.")
    activate: bool = Field(False, description="Pin the new version as the active one (default: latest wins).")


class UnloadAdapterRequest(StrictModel):
    """``POST /admin/adapters/unload``: drop an adapter from the LLM replicas (the registry is untouched)."""

    model: str = Field(min_length=3, max_length=200, description="Adapter id `<tenant>/<name>[@v<N>]`.")


def _check_names(tenant: str, name: str | None = None) -> None:
    try:
        check_tenant_name(tenant)
        if name is not None:
            check_adapter_name(name)
    except ValueError as e:
        raise InvalidRequest(str(e)) from None


def adapter_view(v: Any) -> dict[str, Any]:
    m = v.manifest
    return {
        "id": v.id,
        "tenant": v.tenant,
        "name": v.name,
        "version": v.version,
        "base_model": m.base_model,
        "method": m.method,
        "rank": m.rank,
        "created_at": m.created_at,
        "description": m.description,
    }


class PlatformAdmin:
    """What the admin API does, over the tenant store, the adapter registry and the two deployments.

    Args:
        store: Tenant store.
        registry: ``adept.adapters.AdapterRegistry``.
        kb: Async knowledge base (``delete_tenant``), or None when retrieval is not deployed.
        unload: ``unload(model_id)`` coroutine that drops an adapter from LLM replicas.
        base_model_id: The served base model; adapters trained on another are refused.
        quotas: The gateway's quota counters (reset when a tenant is deleted).
    """

    def __init__(
        self,
        *,
        store: TenantStore,
        registry: Any,
        kb: Any | None,
        unload: Callable[[str], Awaitable[Any]] | None,
        base_model_id: str,
        quotas: QuotaEnforcer | None = None,
    ) -> None:
        self.store, self.registry, self.kb, self._unload = store, registry, kb, unload
        self.base_model_id = base_model_id
        self.quotas = quotas

    # -- tenants ---------------------------------------------------------------------------------
    async def create_tenant(self, spec: TenantSpec) -> tuple[Tenant, str]:
        return await asyncio.to_thread(self.store.create, spec)

    async def list_tenants(self) -> list[Tenant]:
        return await asyncio.to_thread(self.store.list)

    async def get_tenant(self, name: str) -> Tenant:
        return await asyncio.to_thread(self.store.get, name)

    async def update_tenant(self, spec: TenantSpec) -> Tenant:
        return await asyncio.to_thread(self.store.update, spec)

    async def rotate_key(self, name: str) -> str:
        return await asyncio.to_thread(self.store.rotate_key, name)

    async def delete_tenant(self, name: str) -> dict[str, Any]:
        await self.get_tenant(name)  # NotFound before touching anything
        if self.kb is not None:
            await self.kb.delete_tenant(name)
        versions = await asyncio.to_thread(self.registry.list, name)
        await self._unload_all([v.id for v in versions])
        await asyncio.to_thread(self.registry.delete_tenant, name)
        await asyncio.to_thread(self.store.delete, name)
        if self.quotas is not None:
            self.quotas.forget(name)
        log.info("deleted tenant %s (%d adapter versions)", name, len(versions))
        return {"name": name, "deleted": True, "adapters_deleted": len({v.name for v in versions})}

    # -- adapters --------------------------------------------------------------------------------
    async def publish_adapter(self, req: PublishAdapterRequest) -> Any:
        _check_names(req.tenant, req.name)
        tenant = await self.get_tenant(req.tenant)
        src = Path(req.path).expanduser()
        if not src.is_dir():
            raise InvalidRequest(f"adapter directory not found on the server: {req.path}", param="path")
        limit = tenant.quotas.max_adapters
        if limit:
            names = {v.name for v in await asyncio.to_thread(self.registry.list, tenant.name)}
            if req.name not in names and len(names) >= limit:
                raise PermissionDenied(
                    f"tenant {tenant.name!r} already has {len(names)} adapters, its max_adapters quota",
                    code="quota_exceeded",
                )
        manifest = _manifest_from(src)
        if req.description:
            manifest["description"] = req.description
        version = await asyncio.to_thread(
            self.registry.publish,
            tenant.name,
            req.name,
            src,
            manifest,
            expected_base_model=self.base_model_id,
        )
        if req.activate:
            await asyncio.to_thread(self.registry.set_active, tenant.name, req.name, version.version)
        return version

    async def list_adapters(self, tenant: str) -> list[Any]:
        await self.get_tenant(tenant)
        return await asyncio.to_thread(self.registry.list, tenant)

    async def delete_adapter(self, tenant: str, name: str) -> dict[str, Any]:
        _check_names(tenant, name)
        versions = [v for v in await asyncio.to_thread(self.registry.list, tenant) if v.name == name]
        if not versions:
            raise NotFound(f"adapter {tenant}/{name} not found")
        await asyncio.to_thread(self.registry.delete, tenant, name)
        # Unload after deleting: a request racing the delete can no longer resolve and reload it.
        await self._unload_all([v.id for v in versions])
        return {"id": f"{tenant}/{name}", "deleted": True, "versions": [v.version for v in versions]}

    async def unload_adapter(self, model_id: str) -> dict[str, Any]:
        """Drop ``tenant/name[@vN]`` from the LLM replicas without touching the registry.

        The operator calls this when an Adapter's active version moves on; without a version,
        every published version of the adapter is unloaded.
        """
        tenant, name, version = parse_adapter_id(model_id)
        if version:
            ids = [f"{tenant}/{name}@{version}"]
        else:
            ids = [v.id for v in await asyncio.to_thread(self.registry.list, tenant) if v.name == name]
        await self._unload_all(ids)
        return {"id": model_id, "unloaded": ids}

    async def _unload_all(self, model_ids: list[str]) -> None:
        if self._unload is not None and model_ids:
            await asyncio.gather(*(self._unload(m) for m in model_ids))


def _manifest_from(src: Path) -> dict[str, Any]:
    """Start from the directory's own manifest.json (training writes one), else from nothing."""
    path = src / "manifest.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        raise InvalidRequest(f"{path}: not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise InvalidRequest(f"{path}: expected a JSON object")
    # Identity fields are the registry's to assign.
    return {k: v for k, v in data.items() if k not in ("tenant", "name", "version")}
