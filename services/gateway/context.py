"""Everything the HTTP layer needs, in one object: built from Serve handles in a replica, from fakes in tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from adept.config.retrieval import RetrievalConfig
from adept.config.serving import ServingConfig
from adept.platform import Platform
from adept.tenancy import Tenant
from services.gateway.auth import Authenticator
from services.gateway.chat import CompletionService, ModelCatalog
from services.gateway.embeddings import EmbeddingService
from services.gateway.finetuning import FineTuningService
from services.gateway.metrics import GatewayMetrics
from services.gateway.quotas import QuotaEnforcer, Quotas

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
    platform: Platform
    kb: Any
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)
    quotas: Quotas | None = None
    finetuning: FineTuningService | None = None
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    max_request_bytes: int = 4 * MiB
    max_upload_bytes: int = 100 * MiB
    health: Callable[[], Awaitable[dict[str, str]]] = _always_ready
    # Called before each /metrics scrape to pull state from the LLM replicas (loaded adapters).
    refresh_metrics: Callable[[], Awaitable[None]] | None = None
    # Eval-gated promotion's measuring (``adept.finetuning.promotion.Evaluator``): what
    # ``POST /admin/tenants/{name}/evaluate`` runs for the operator's job owner. None: not offered.
    evaluator: Any = None

    async def admit(self, tenant: Tenant) -> None:
        """Apply the tenant's request quota (429 when over)."""
        if self.quotas is not None:
            await self.quotas.admit(tenant)

    def charge(self, tenant: Tenant, tokens: int) -> None:
        if self.quotas is not None:
            self.quotas.charge_tokens(tenant.name, tokens)


class _Replicas:
    """``AdapterReplicas`` over an ``unload(model_id)`` coroutine function."""

    def __init__(self, unload: Callable[[str], Awaitable[Any]]) -> None:
        self._unload = unload

    async def unload(self, adapter_id: str) -> Any:
        return await self._unload(adapter_id)


def base_model_names(model_ref: str) -> tuple[str, tuple[str, ...]]:
    """The base model's id (as adapter manifests record it) and the other names clients may use for it."""
    from adept.models import canonical_model_id

    model_id = canonical_model_id(model_ref)
    tail = model_ref.rstrip("/").rsplit("/", 1)[-1].removeprefix("bundled:")
    return model_id, tuple(n for n in dict.fromkeys((model_ref, tail)) if n != model_id)


def build_gateway_context(
    cfg: ServingConfig,
    *,
    llm: Any,
    kb: Any,
    admin_key_sha256: str,
    unload: Callable[[str], Awaitable[Any]] | None,
    health: Callable[[], Awaitable[dict[str, str]]] = _always_ready,
    refresh_metrics: Callable[[], Awaitable[None]] | None = None,
    quotas: Quotas | None = None,
    evaluator: Any = None,
) -> GatewayContext:
    """The gateway's services over an LLM and a knowledge base, whatever carries them.

    The Serve ingress passes Serve handles and the quota counter all its replicas share; an
    in-process platform (reliability suite) passes the engine and the ``KnowledgeBase``
    directly, and counts quotas in its one process. Everything else is built the same way.

    ``evaluator(completions, platform)`` (injected by the layer above, ``tools.eval.serve_app``) makes
    the ``Evaluator`` eval-gated promotion measures with, over a completion path of its own that no
    tenant limit counts (a rate-limited question would score as a wrong answer).
    """
    from adept.finetuning.service import open_fine_tuning
    from services.gateway.chat import Limits

    if not cfg.gateway.enforce_quotas:
        quotas = None
    elif quotas is None:
        quotas = QuotaEnforcer()
    platform = Platform(
        cfg.platform, documents=kb, replicas=_Replicas(unload) if unload is not None else None
    )
    base_id, aliases = base_model_names(cfg.platform.model)
    metrics = GatewayMetrics()
    catalog = ModelCatalog(platform.registry, base_id, aliases)
    owner = open_fine_tuning(platform, cfg.finetuning, models=catalog) if cfg.finetuning.enabled else None
    # Jobs and files first (none may publish while its tenant goes), then rate counters.
    platform.state = [s for s in (owner, quotas) if s is not None]
    finetuning = FineTuningService(owner) if owner is not None else None
    limits = Limits(
        max_tokens_limit=cfg.llm.max_tokens_limit,
        default_max_tokens=cfg.llm.default_max_tokens,
        max_choices=cfg.llm.max_choices,
        default_top_k=cfg.retrieval.default_top_k,
        max_top_k=cfg.retrieval.max_top_k,
        timeout_s=cfg.gateway.request_timeout_s,
    )
    measuring = None
    if evaluator is not None:
        unmetered = CompletionService(
            llm=llm, catalog=catalog, kb=kb, limits=limits, metrics=metrics, quotas=None
        )
        measuring = evaluator(unmetered, platform)
    return GatewayContext(
        auth=Authenticator(platform.tenants, admin_key_sha256),
        catalog=catalog,
        completions=CompletionService(
            llm=llm, catalog=catalog, kb=kb, limits=limits, metrics=metrics, quotas=quotas
        ),
        evaluator=measuring,
        embeddings=EmbeddingService(kb, cfg.platform.embedding_model),
        platform=platform,
        kb=kb,
        metrics=metrics,
        quotas=quotas,
        finetuning=finetuning,
        retrieval=cfg.retrieval,
        max_request_bytes=cfg.gateway.max_request_bytes,
        max_upload_bytes=cfg.upload_limit,
        health=health,
        refresh_metrics=refresh_metrics,
    )
