"""Ray Serve deployment owning one ``KnowledgeBase`` (embedding model + Milvus client) per replica.

In embedded mode the Milvus Lite file allows one process, so ``retrieval_app`` pins the
deployment to exactly one replica; with a Milvus server it may autoscale.
"""

from __future__ import annotations

from typing import Any

from ray import serve

from adept.config.platform import PlatformConfig
from adept.config.retrieval import RetrievalConfig
from services.retrieval.knowledge_base import AsyncKnowledgeBase, KnowledgeBase
from services.retrieval.store import is_lite_uri


@serve.deployment(name="retrieval", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=16)
class RetrievalDeployment(AsyncKnowledgeBase):
    """``KnowledgeBase`` methods as async Serve methods (see ``AsyncKnowledgeBase``).

    Args:
        platform: ``PlatformConfig`` (or its dict): Milvus URI, collection, embedding model, device.
        retrieval: ``RetrievalConfig`` (or its dict).
    """

    def __init__(
        self,
        platform: PlatformConfig | dict[str, Any],
        retrieval: RetrievalConfig | dict[str, Any] | None = None,
    ):
        platform = (
            platform if isinstance(platform, PlatformConfig) else PlatformConfig.model_validate(platform)
        )
        if retrieval is not None and not isinstance(retrieval, RetrievalConfig):
            retrieval = RetrievalConfig.model_validate(retrieval)
        super().__init__(KnowledgeBase.from_platform(platform, retrieval))

    async def check_health(self) -> None:
        """Serve calls this periodically; a closed or unreachable Milvus makes the replica unhealthy."""
        self.kb.store.client.has_collection(self.kb.store.collection)


def retrieval_app(
    platform: PlatformConfig,
    retrieval: RetrievalConfig | None = None,
    *,
    num_cpus: float = 0.5,
    num_gpus: float = 0,
    max_replicas: int = 4,
) -> serve.Application:
    """Bind the retrieval deployment: one replica on Milvus Lite (it owns the file), autoscaling on a server."""
    if is_lite_uri(platform.resolved_milvus_uri):
        options: dict[str, Any] = {"num_replicas": 1}
    else:
        options = {
            "autoscaling_config": {
                "min_replicas": 1,
                "max_replicas": max_replicas,
                "target_ongoing_requests": 4,
            }
        }
    options["ray_actor_options"] = {"num_cpus": num_cpus, "num_gpus": num_gpus}
    return RetrievalDeployment.options(**options).bind(
        platform.model_dump(mode="json"), retrieval.model_dump(mode="json") if retrieval else None
    )
