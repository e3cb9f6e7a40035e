"""The one builder of Adept's Serve application: gateway (ingress) -> LLM replicas, retrieval.

``adept up`` calls ``build_app(config)``; the chart's RayService uses it as an application
builder through ``tools.eval.serve_app:build_app`` (which adds eval-gated promotion's measuring),
with ``args:`` validated as ``ServingConfig``.
"""

from __future__ import annotations

from typing import Any

from ray import serve

from adept.config.base import deep_merge, env_overrides, validate
from adept.config.serving import ServingConfig


def load_serving_config(args: dict[str, Any] | ServingConfig | None) -> ServingConfig:
    """``args`` as a ``ServingConfig``; a bad one is one ``ConfigError`` listing every problem.

    ``ADEPT_*`` environment overrides apply on top of dict args: the chart injects secrets that
    way (``ADEPT_PLATFORM__MILVUS_TOKEN`` from a Secret) instead of writing them into ``args``.
    """
    if isinstance(args, ServingConfig):
        return args
    data = deep_merge(dict(args or {}), env_overrides(ServingConfig))
    return validate(ServingConfig, data, source="serving config (build_app args)")


def build_app(
    args: dict[str, Any] | ServingConfig | None = None, *, evaluator: Any = None
) -> serve.Application:
    """Bind the three deployments with their options (replicas, resources, autoscaling) from the config.

    ``evaluator``: eval-gated promotion's measuring, injected by the layer above (``tools.eval.serve_app``,
    the chart's import path), which the gateway offers the operator on ``/admin/tenants/{name}/evaluate``.
    """
    from services.gateway.auth import admin_key_sha256
    from services.gateway.deployment import GatewayDeployment
    from services.llm.deployment import LLMDeployment
    from services.retrieval.deployment import RetrievalDeployment

    cfg = load_serving_config(args)
    admin_hash = admin_key_sha256(cfg.admin_key_path, cfg.gateway.admin_key_env)
    platform = cfg.platform.model_dump(mode="json")
    d, timeout = cfg.deployments, cfg.gateway.request_timeout_s
    llm_options = d.llm.to_serve_options(
        batch_capacity=cfg.llm.max_batch_size,
        queue_capacity=cfg.llm.max_queued_requests,
        request_timeout_s=timeout,
    )
    llm = LLMDeployment.options(**llm_options).bind(platform, cfg.llm.model_dump(mode="json"))
    retrieval = RetrievalDeployment.options(**d.retrieval.to_serve_options(request_timeout_s=timeout)).bind(
        platform, cfg.retrieval.model_dump(mode="json")
    )
    return GatewayDeployment.options(**d.gateway.to_serve_options(request_timeout_s=timeout)).bind(
        cfg.model_dump(mode="json"), llm, retrieval, admin_hash, evaluator
    )
