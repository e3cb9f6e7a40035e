"""Serving settings: the Serve application's deployments, the gateway's HTTP limits and the admin key.

One ``ServingConfig`` drives ``adept up`` (embedded) and the chart's RayService (``args:`` of
``services.app:build_app``). The defaults fit a 2-core laptop: fractional CPU reservations so
three deployments schedule on ``ray.init(num_cpus=2)`` (ENVIRONMENT.md); the chart overrides
them with real CPU/GPU requests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from adept.config.base import StrictModel
from adept.config.finetuning import FineTuningConfig
from adept.config.llm import LLMConfig
from adept.config.platform import PlatformConfig
from adept.config.retrieval import RetrievalConfig

MiB = 1024 * 1024


class AutoscalingOptions(StrictModel):
    """Ray Serve ``autoscaling_config``: replicas follow the number of ongoing requests."""

    min_replicas: int = Field(
        1, ge=0, le=1000, description="Fewest replicas (0 lets an idle deployment scale to zero)."
    )
    max_replicas: int = Field(1, ge=1, le=1000, description="Most replicas.")
    initial_replicas: int | None = Field(
        None, ge=0, le=1000, description="Replicas at start; default: min_replicas."
    )
    target_ongoing_requests: float = Field(
        2.0, gt=0, le=10_000, description="Ongoing requests per replica the autoscaler aims for."
    )
    upscale_delay_s: float = Field(
        30.0, ge=0, le=3600, description="Load must persist this long before scaling up."
    )
    downscale_delay_s: float = Field(
        600.0, ge=0, le=86_400, description="Idle this long before scaling down."
    )

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingOptions:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) exceeds max_replicas ({self.max_replicas})")
        if (
            self.initial_replicas is not None
            and not self.min_replicas <= self.initial_replicas <= self.max_replicas
        ):
            raise ValueError(
                f"initial_replicas ({self.initial_replicas}) must lie in [min_replicas, max_replicas] "
                f"= [{self.min_replicas}, {self.max_replicas}]"
            )
        return self


class ActorResources(StrictModel):
    """Ray resources reserved by each replica (Ray's ``ray_actor_options``)."""

    num_cpus: float = Field(0.25, ge=0, le=512, description="CPUs reserved per replica (fractions allowed).")
    num_gpus: float = Field(
        0.0, ge=0, le=16, description="GPUs per replica; Ray hides GPUs from replicas with 0."
    )
    memory: int | None = Field(
        None, ge=0, description="Memory reserved per replica in bytes (scheduling only)."
    )
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources per replica, e.g. `{adept_cpu_replicas: 1}`, which the chart adds to "
        "CPU-only replicas so that they run only where the CPU worker group advertises it.",
    )


class DeploymentOptions(StrictModel):
    """Replicas and resources of one Serve deployment: a fixed ``num_replicas`` or an ``autoscaling_config``."""

    num_replicas: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="Fixed replica count (default 1); exclusive with `autoscaling_config`.",
    )
    autoscaling_config: AutoscalingOptions | None = Field(
        None, description="Scale replicas with load; exclusive with `num_replicas`."
    )
    ray_actor_options: ActorResources = Field(
        default_factory=ActorResources, description="Resources per replica."
    )
    max_ongoing_requests: int = Field(
        100,
        ge=1,
        le=100_000,
        description="Requests one replica handles at once; more wait in the caller's queue.",
    )

    @model_validator(mode="after")
    def _exclusive(self) -> DeploymentOptions:
        if self.num_replicas is not None and self.autoscaling_config is not None:
            raise ValueError("give num_replicas or autoscaling_config, not both")
        return self

    @property
    def max_replicas(self) -> int:
        """The most replicas this deployment can have."""
        if self.autoscaling_config is not None:
            return self.autoscaling_config.max_replicas
        return self.num_replicas or 1

    def to_serve_options(self) -> dict[str, Any]:
        """Keyword arguments for ``Deployment.options(...)``."""
        res = self.ray_actor_options
        actor: dict[str, Any] = {"num_cpus": res.num_cpus, "num_gpus": res.num_gpus}
        if res.memory is not None:
            actor["memory"] = res.memory
        if res.resources:
            actor["resources"] = dict(res.resources)
        out: dict[str, Any] = {"ray_actor_options": actor, "max_ongoing_requests": self.max_ongoing_requests}
        if self.autoscaling_config is not None:
            out["autoscaling_config"] = self.autoscaling_config.model_dump(exclude_none=True)
        else:
            out["num_replicas"] = self.num_replicas or 1
        return out


def _gateway_deployment() -> DeploymentOptions:
    # The gateway only awaits other deployments: little CPU, many concurrent requests.
    return DeploymentOptions(ray_actor_options=ActorResources(num_cpus=0.1), max_ongoing_requests=1000)


def _llm_deployment() -> DeploymentOptions:
    # Many ongoing requests per replica is what lets the replica batch them together; beyond the batch,
    # requests should wait in the replica's fair, bounded queue (llm.max_queued_requests), not in
    # Serve's first-come-first-served router queue: max_batch_size 16 + max_queued_requests 256 + slack.
    return DeploymentOptions(ray_actor_options=ActorResources(num_cpus=0.5), max_ongoing_requests=320)


def _retrieval_deployment() -> DeploymentOptions:
    return DeploymentOptions(ray_actor_options=ActorResources(num_cpus=0.25), max_ongoing_requests=32)


class DeploymentsConfig(StrictModel):
    """Options of the three deployments of the Serve application."""

    gateway: DeploymentOptions = Field(
        default_factory=_gateway_deployment, description="HTTP ingress (FastAPI)."
    )
    llm: DeploymentOptions = Field(
        default_factory=_llm_deployment, description="Base model + tenant adapters."
    )
    retrieval: DeploymentOptions = Field(
        default_factory=_retrieval_deployment,
        description="Embeddings and Milvus; keep 1 replica with Milvus Lite (one process per file).",
    )


class GatewayConfig(StrictModel):
    """The HTTP side: where it listens, how big requests may be, where the admin key comes from."""

    host: str = Field(
        "127.0.0.1", min_length=1, description="Address the HTTP proxy binds (`0.0.0.0` for all)."
    )
    port: int = Field(8000, ge=1, le=65535, description="HTTP port.")
    max_request_bytes: int = Field(
        4 * MiB,
        ge=1024,
        description="Largest JSON request body in bytes (HTTP 413 above); uploads have their own limit.",
    )
    max_upload_bytes: int | None = Field(
        None,
        ge=1024,
        description="Largest upload body (`/v1/kb/documents` multipart, adapter upload) in bytes; "
        "default: `retrieval.max_request_bytes`.",
    )
    admin_key_env: str = Field(
        "ADEPT_ADMIN_KEY",
        pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="Environment variable that may hold the admin key (takes precedence over the file).",
    )
    admin_key_file: Path | None = Field(
        None,
        description="File holding the admin key (created, mode 0600, if missing); default `<data_dir>/admin.key`.",
    )
    enforce_quotas: bool = Field(
        True, description="Apply tenants' requests/min and tokens/min limits (HTTP 429)."
    )
    quota_shards: int = Field(
        4,
        ge=1,
        le=256,
        description="Named Ray actors the tenants' quota counters are spread over; every gateway replica "
        "calls the one holding its tenant, so a quota counts once for all replicas.",
    )
    request_timeout_s: float = Field(
        300.0,
        gt=0,
        le=3600,
        description="Longest a generation may run before the gateway gives up (HTTP 503).",
    )
    health_timeout_s: float = Field(
        5.0, gt=0, le=300, description="How long /healthz waits for each deployment."
    )

    @field_validator("admin_key_file")
    @classmethod
    def _expand(cls, v: Path | None) -> Path | None:
        return None if v is None else Path(v).expanduser().absolute()


class ServingConfig(StrictModel):
    """Everything the Serve application needs: ``build_app(ServingConfig)``."""

    platform: PlatformConfig = Field(
        default_factory=PlatformConfig, description="Data dir, model, device, stores."
    )
    llm: LLMConfig = Field(default_factory=LLMConfig, description="LLM replicas: batching, adapters, limits.")
    retrieval: RetrievalConfig = Field(
        default_factory=RetrievalConfig, description="Chunking, embedding, search."
    )
    gateway: GatewayConfig = Field(
        default_factory=GatewayConfig, description="HTTP host/port, limits, admin key."
    )
    deployments: DeploymentsConfig = Field(
        default_factory=DeploymentsConfig,
        description="Replicas, resources and autoscaling of each deployment.",
    )
    finetuning: FineTuningConfig = Field(
        default_factory=FineTuningConfig,
        description="Fine-tuning through the API: defaults and limits of tenants' jobs, the embedded runner.",
    )
    app_name: str = Field(
        "adept",
        pattern=r"^[a-z][a-z0-9-]{0,62}$",
        description="Ray Serve application name (deployment handles use it).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ServingConfig:
        uri = self.platform.resolved_milvus_uri
        lite = "://" not in uri
        if lite and self.deployments.retrieval.max_replicas > 1:
            raise ValueError(
                f"deployments.retrieval allows {self.deployments.retrieval.max_replicas} replicas, but Milvus Lite "
                f"({uri}) can be opened by one process only: use 1 replica or a Milvus server (platform.milvus_uri)"
            )
        if self.platform.device == "cuda" and self.deployments.llm.ray_actor_options.num_gpus == 0:
            raise ValueError(
                "platform.device is 'cuda' but deployments.llm.ray_actor_options.num_gpus is 0: "
                "Ray hides GPUs from replicas that reserve none"
            )
        return self

    @property
    def upload_limit(self) -> int:
        """Body limit for upload routes."""
        return self.gateway.max_upload_bytes or self.retrieval.max_request_bytes

    @property
    def admin_key_path(self) -> Path:
        return self.gateway.admin_key_file or self.platform.data_dir / "admin.key"
