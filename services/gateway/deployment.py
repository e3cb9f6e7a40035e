"""``GatewayDeployment``: the Serve ingress. Builds the gateway's services from handles, then its FastAPI app."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ray import serve

from adept.adapters import open_adapter_registry
from adept.config.serving import ServingConfig
from adept.tenancy import open_tenant_store
from services.gateway.admin import PlatformAdmin
from services.gateway.auth import Authenticator
from services.gateway.backends import ServeKnowledgeBase, ServeLLM
from services.gateway.chat import CompletionService, Limits, ModelCatalog
from services.gateway.context import GatewayContext
from services.gateway.embeddings import EmbeddingService
from services.gateway.metrics import GatewayMetrics
from services.gateway.quotas import QuotaEnforcer

log = logging.getLogger(__name__)


def base_model_names(model_ref: str) -> tuple[str, tuple[str, ...]]:
    """The base model's id (as adapter manifests record it) and the other names clients may use for it."""
    from adept.models import canonical_model_id

    model_id = canonical_model_id(model_ref)
    tail = model_ref.rstrip("/").rsplit("/", 1)[-1].removeprefix("bundled:")
    return model_id, tuple(n for n in dict.fromkeys((model_ref, tail)) if n != model_id)


@serve.deployment(name="gateway", max_ongoing_requests=1000, ray_actor_options={"num_cpus": 0.1})
@serve.ingress()
class GatewayDeployment:
    """HTTP ingress: auth, quotas, OpenAI API, admin API, ``/v1/kb``, health and metrics.

    Args:
        config: ``ServingConfig`` as a dict.
        llm: Handle of the LLM deployment.
        retrieval: Handle of the retrieval deployment.
        admin_key_sha256: Hash of the admin key (the key itself never passes through Ray).
    """

    def __init__(self, config: dict[str, Any], llm: Any, retrieval: Any, admin_key_sha256: str) -> None:
        cfg = ServingConfig.model_validate(config)
        self.cfg = cfg
        self.llm = ServeLLM(llm)
        self.kb = ServeKnowledgeBase(retrieval)
        store = open_tenant_store(cfg.platform)
        registry = open_adapter_registry(cfg.platform)
        base_id, aliases = base_model_names(cfg.platform.model)
        metrics = GatewayMetrics()
        quotas = QuotaEnforcer() if cfg.gateway.enforce_quotas else None
        catalog = ModelCatalog(registry, base_id, aliases)
        limits = Limits(
            max_tokens_limit=cfg.llm.max_tokens_limit,
            default_max_tokens=cfg.llm.default_max_tokens,
            default_top_k=cfg.retrieval.default_top_k,
            max_top_k=cfg.retrieval.max_top_k,
            timeout_s=cfg.gateway.request_timeout_s,
        )
        replicas = cfg.deployments.llm.max_replicas

        async def unload(model_id: str) -> int:
            return await self.llm.unload(model_id, attempts=replicas)

        self.ctx = GatewayContext(
            auth=Authenticator(store, admin_key_sha256),
            catalog=catalog,
            completions=CompletionService(
                llm=self.llm, catalog=catalog, kb=self.kb, limits=limits, metrics=metrics, quotas=quotas
            ),
            embeddings=EmbeddingService(self.kb, cfg.platform.embedding_model),
            admin=PlatformAdmin(
                store=store,
                registry=registry,
                kb=self.kb,
                unload=unload,
                base_model_id=base_id,
                quotas=quotas,
            ),
            kb=self.kb,
            metrics=metrics,
            quotas=quotas,
            retrieval=cfg.retrieval,
            max_request_bytes=cfg.gateway.max_request_bytes,
            max_upload_bytes=cfg.upload_limit,
            health=self.health,
            refresh_metrics=self.refresh_metrics,
        )

    def __serve_build_asgi_app__(self) -> Any:
        from services.gateway.http_app import build_http_app

        return build_http_app(self.ctx)

    async def refresh_metrics(self) -> None:
        """Ask the LLM replicas which adapters they hold; a few calls reach every replica with high odds."""
        calls = min(16, 2 * self.cfg.deployments.llm.max_replicas)
        results = await asyncio.gather(
            *(asyncio.wait_for(self.llm.info(), self.cfg.gateway.health_timeout_s) for _ in range(calls)),
            return_exceptions=True,
        )
        loaded = {r["replica_id"]: list(r.get("loaded_adapters", [])) for r in results if isinstance(r, dict)}
        if loaded:
            self.ctx.metrics.observe_replicas(loaded)

    async def health(self) -> dict[str, str]:
        """``{deployment: "ready" | <why not>}`` for every deployment of this application."""
        try:
            app_name = serve.get_replica_context().app_name
            status = await asyncio.wait_for(
                asyncio.to_thread(serve.status), self.cfg.gateway.health_timeout_s
            )
            app = status.applications.get(app_name)
            if app is None:
                return {"application": f"{app_name} not found"}
            return {
                name: "ready"
                if str(d.status.value if hasattr(d.status, "value") else d.status) == "HEALTHY"
                else str(d.status)
                for name, d in app.deployments.items()
            }
        except Exception as e:  # the controller is busy or gone: not ready, and say why
            return {"controller": f"unreachable: {type(e).__name__}"}
