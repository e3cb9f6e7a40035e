"""Everything the HTTP layer needs, in one object: built from Serve handles in a replica, from fakes in tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from adept.config.retrieval import RetrievalConfig
from adept.tenancy import Tenant
from services.gateway.admin import PlatformAdmin
from services.gateway.auth import Authenticator
from services.gateway.chat import CompletionService, ModelCatalog
from services.gateway.embeddings import EmbeddingService
from services.gateway.metrics import GatewayMetrics
from services.gateway.quotas import QuotaEnforcer

MiB = 1024 * 1024


async def _always_ready() -> dict[str, str]:
    return {}


@dataclass
class GatewayContext:
    """The gateway's services.

    ``health`` returns ``{deployment: status}``; every value must be ``"ready"`` for /healthz to be 200.
    ``kb`` is the async knowledge base ``build_kb_router`` and RAG use.
    """

    auth: Authenticator
    catalog: ModelCatalog
    completions: CompletionService
    embeddings: EmbeddingService
    admin: PlatformAdmin
    kb: Any
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)
    quotas: QuotaEnforcer | None = None
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    max_request_bytes: int = 4 * MiB
    max_upload_bytes: int = 100 * MiB
    health: Callable[[], Awaitable[dict[str, str]]] = _always_ready
    # Called before each /metrics scrape to pull state from the LLM replicas (loaded adapters).
    refresh_metrics: Callable[[], Awaitable[None]] | None = None

    def admit(self, tenant: Tenant) -> None:
        """Apply the tenant's request quota (429 when over)."""
        if self.quotas is not None:
            self.quotas.admit(tenant)

    def charge(self, tenant: Tenant, tokens: int) -> None:
        if self.quotas is not None:
            self.quotas.charge_tokens(tenant.name, tokens)
