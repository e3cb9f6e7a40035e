"""``GatewayDeployment``: the Serve ingress. Builds the gateway's services from handles, then its FastAPI app."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ray import serve

from adept.config.serving import ServingConfig
from services.gateway.backends import ServeKnowledgeBase, ServeLLM
from services.gateway.context import build_gateway_context

log = logging.getLogger(__name__)


@serve.deployment(name="gateway", max_ongoing_requests=1000, ray_actor_options={"num_cpus": 0.1})
@serve.ingress()
class GatewayDeployment:
    """HTTP ingress: auth, quotas, OpenAI API, admin API, ``/v1/kb``, health and metrics.

    Args:
        config: ``ServingConfig`` as a dict.
        llm: Handle of the LLM deployment.
        retrieval: Handle of the retrieval deployment.
        admin_key_sha256: Hash of the admin key (the key itself never passes through Ray).
        evaluator: Eval-gated promotion's measuring, ``evaluator(completions, platform)`` (see
            ``build_gateway_context``); None: ``/admin/tenants/{name}/evaluate`` answers 503.
    """

    def __init__(
        self, config: dict[str, Any], llm: Any, retrieval: Any, admin_key_sha256: str, evaluator: Any = None
    ) -> None:
        cfg = ServingConfig.model_validate(config)
        self.cfg = cfg
        self.llm = ServeLLM(llm)
        self.kb = ServeKnowledgeBase(retrieval)
        replicas = cfg.deployments.llm.max_replicas

        async def unload(model_id: str) -> int:
            return await self.llm.unload(model_id, attempts=replicas)

        from services.gateway.quota_shards import SharedQuotas

        self.ctx = build_gateway_context(
            cfg,
            llm=self.llm,
            kb=self.kb,
            admin_key_sha256=admin_key_sha256,
            unload=unload,
            health=self.health,
            refresh_metrics=self.refresh_metrics,
            # One count per tenant for all gateway replicas (not one per replica).
            quotas=SharedQuotas(cfg.app_name, cfg.gateway.quota_shards),
            evaluator=evaluator,
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
