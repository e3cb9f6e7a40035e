"""Admin API wire models: what ``/admin/...`` accepts and returns.

The operations themselves are the kernel's (``adept.platform.Platform``); the admin routes only
parse these models, call the platform and serialize its answers.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from adept.config.base import StrictModel


class PublishAdapterRequest(StrictModel):
    """``POST /admin/adapters``: publish a PEFT directory readable by the gateway as a tenant's adapter."""

    tenant: str = Field(description="Owning tenant.")
    name: str = Field(description="Adapter name (what the tenant passes as `model`).")
    path: str = Field(
        min_length=1, description="Directory with adapter_config.json and adapter_model.safetensors."
    )
    description: str = Field("", max_length=2000, description="Free text stored in the manifest.")
    base_model: str | None = Field(
        None,
        max_length=500,
        description="Base model it was trained on, when neither manifest.json nor adapter_config.json says.",
    )
    activate: bool = Field(False, description="Pin the new version as the active one (default: latest wins).")


class UnloadAdapterRequest(StrictModel):
    """``POST /admin/adapters/unload``: drop an adapter from the LLM replicas (the registry is untouched)."""

    model: str = Field(min_length=3, max_length=200, description="Adapter id `<tenant>/<name>[@v<N>]`.")


class EvaluateRequest(StrictModel):
    """``POST /admin/tenants/{name}/evaluate``: measure a model as the tenant (eval-gated promotion)."""

    model: str = Field(min_length=1, max_length=300, description="The model, as the tenant names it.")
    evaluation: str = Field(
        min_length=1,
        max_length=8 * 1024 * 1024,
        description="The evaluation set: `adept eval` JSONL (question, answer, expect), one question a line.",
    )


class ActivateAdapterRequest(StrictModel):
    """``POST /admin/adapters/{tenant}/{name}/activate``: pin the version requests get."""

    version: str | None = Field(None, description="Version to pin (`v<N>`); null follows the latest.")


class AdapterView(BaseModel):
    """One adapter version as the admin API shows it."""

    id: str = Field(description="`<tenant>/<name>@<version>`.")
    tenant: str
    name: str
    version: str
    base_model: str
    method: str
    rank: int | None = None
    created_at: str
    description: str = ""
    active: bool | None = Field(None, description="Whether requests naming the adapter get this version.")
    uri: str = Field("", description="Where the version lives in the adapter store.")
    manifest: dict[str, Any] = Field(default_factory=dict, description="The version's full manifest.")

    @classmethod
    def of(cls, v: Any, served: dict[str, str] | None = None) -> AdapterView:
        """From an ``adept.adapters.AdapterVersion``; ``served`` (name -> version) sets ``active``."""
        m = v.manifest
        return cls(
            active=None if served is None else served.get(v.name) == v.version,
            uri=v.uri,
            manifest=m.model_dump(mode="json"),
            id=v.id,
            tenant=v.tenant,
            name=v.name,
            version=v.version,
            base_model=m.base_model,
            method=m.method,
            rank=m.rank,
            created_at=m.created_at,
            description=m.description,
        )


class AdapterDeleted(BaseModel):
    id: str = Field(description="`<tenant>/<name>`.")
    deleted: bool = True
    versions: list[str] = Field(description="Versions removed from the registry and the replicas.")


class AdapterUnloaded(BaseModel):
    id: str = Field(description="The id as requested.")
    unloaded: list[str] = Field(description="Exact ids dropped from the replicas.")


class TenantDeleted(BaseModel):
    name: str
    deleted: bool = True
    adapters_deleted: int = Field(description="Adapters (names) removed with the tenant.")


class KeyRotated(BaseModel):
    name: str
    api_key: str = Field(description="The new key, shown this once; the old one no longer works.")
