"""Tenant specification: name rules and quotas."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from adept.config.base import StrictModel

# Kubernetes DNS-1123 label: tenants become resource names, Milvus partition-key values, paths.
TENANT_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
RESERVED_TENANT_NAMES = frozenset({"admin", "system", "default", "base", "__base__", "all"})


def check_tenant_name(name: str) -> str:
    """Return ``name`` if it is a valid tenant name, else raise ``ValueError`` saying why."""
    if not isinstance(name, str) or not TENANT_NAME_RE.fullmatch(name):
        raise ValueError(
            f"invalid tenant name {name!r}: use 1-63 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit"
        )
    if name in RESERVED_TENANT_NAMES:
        raise ValueError(f"tenant name {name!r} is reserved")
    return name


class TenantQuotas(StrictModel):
    """Per-tenant limits enforced by the gateway and the stores. 0 means unlimited."""

    requests_per_minute: int = Field(
        600, ge=0, description="Requests per minute across all endpoints; 0 = unlimited."
    )
    tokens_per_minute: int = Field(
        200_000, ge=0, description="Prompt + completion tokens per minute; 0 = unlimited."
    )
    max_adapters: int = Field(
        10, ge=0, description="Adapters (names, not versions) the tenant may own; 0 = unlimited."
    )
    max_documents: int = Field(
        10_000, ge=0, description="Documents in the tenant's knowledge base; 0 = unlimited."
    )
    max_files: int = Field(
        100, ge=0, description="Files uploaded for fine-tuning (`/v1/files`) kept at once; 0 = unlimited."
    )
    max_file_storage_bytes: int = Field(
        1024**3, ge=0, description="Total bytes of the tenant's uploaded files; 0 = unlimited."
    )
    max_concurrent_finetune_jobs: int = Field(
        2, ge=0, description="Fine-tuning jobs not yet finished at once (HTTP 429 above); 0 = unlimited."
    )
    max_finetune_jobs_per_day: int = Field(
        20, ge=0, description="Fine-tuning jobs created in any 24 hours (HTTP 429 above); 0 = unlimited."
    )
    max_trained_tokens_per_day: int = Field(
        10_000_000,
        ge=0,
        description="Tokens fine-tuning jobs may train on in any 24 hours (HTTP 429 above); 0 = unlimited.",
    )


class TenantSpec(StrictModel):
    """What a platform team declares about a tenant (CLI, admin API, `Tenant` resource)."""

    name: str = Field(description="Tenant id: a DNS label (lowercase letters, digits, '-'; at most 63).")
    display_name: str = Field("", max_length=200, description="Human-readable name shown in the console.")
    quotas: TenantQuotas = Field(default_factory=TenantQuotas, description="Rate and size limits.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_tenant_name(v)
