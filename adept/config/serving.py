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


# A replica aims to keep this share of its engine's batch busy: scaling starts while requests still
# decode together, before they queue behind a full batch (TTFT is what queueing costs).
BATCH_FILL = 0.75
SERVE_DEFAULT_TARGET = 2.0  # Ray Serve's own default, for deployments without a batch (gateway, retrieval)
# Time for a drain past the longest request: the replica's last stream ends, then it shuts down.
DRAIN_MARGIN_S = 15.0
# How often Serve's replicas and handles push the ongoing-requests metric: `AutoscalingConfig.metrics_interval_s`,
# 10 s. In Ray 2.60 the `RAY_SERVE_*_AUTOSCALING_METRIC_PUSH_INTERVAL_S` variables meant to replace it are
# declared but read nowhere, and setting the deprecated field itself warns: 10 s is the interval.
SERVE_METRICS_INTERVAL_S = 10.0
DEFAULT_MAX_ONGOING = 100


class AutoscalingOptions(StrictModel):
    """Ray Serve ``autoscaling_config``: replicas follow the number of ongoing requests.

    Serve's default policy: ``desired = ceil(ongoing requests averaged over look_back_period_s /
    target_ongoing_requests)``, clamped to ``[min_replicas, max_replicas]``; a change applies only
    once the decision has held for ``upscale_delay_s`` (up) or ``downscale_delay_s`` (down). The
    averaging window and the asymmetric delays are what keep a bursty LLM load from flapping:
    a replica costs a model load to add, so adding one is quick and taking it away is slow.
    """

    min_replicas: int = Field(
        1, ge=0, le=1000, description="Fewest replicas (0 lets an idle deployment scale to zero)."
    )
    max_replicas: int = Field(1, ge=1, le=1000, description="Most replicas.")
    initial_replicas: int | None = Field(
        None, ge=0, le=1000, description="Replicas at start; default: min_replicas."
    )
    target_ongoing_requests: float | None = Field(
        None,
        gt=0,
        le=10_000,
        description="Ongoing requests (running + queued) per replica the autoscaler aims for. Default for the "
        "LLM deployment: 0.75 x `llm.max_batch_size`, the engine's batch capacity, so replicas are added "
        "before requests queue behind a full batch; for the others, Serve's default 2.",
    )
    look_back_period_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Window the ongoing-requests count is averaged over: longer smooths bursts (less "
        "flapping), shorter reacts sooner. Must exceed Serve's metric push interval (10 s): a shorter "
        "window than one push averages nothing and Serve refuses it in a future release.",
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
        if self.look_back_period_s <= SERVE_METRICS_INTERVAL_S:
            raise ValueError(
                f"look_back_period_s ({self.look_back_period_s:g}) must exceed Serve's metric push interval "
                f"({SERVE_METRICS_INTERVAL_S:g} s): replicas report their ongoing requests that often, so a "
                "shorter window averages fewer than one report"
            )
        if self.downscale_delay_s < self.upscale_delay_s:
            raise ValueError(
                f"downscale_delay_s ({self.downscale_delay_s:g}) is shorter than upscale_delay_s "
                f"({self.upscale_delay_s:g}): replicas would be given back faster than they are added (flapping)"
            )
        return self

    def target(self, batch_capacity: int | None = None) -> float:
        """``target_ongoing_requests``, else derived from ``batch_capacity`` (``BATCH_FILL`` of it), else 2."""
        if self.target_ongoing_requests is not None:
            return self.target_ongoing_requests
        if batch_capacity:
            return max(1.0, BATCH_FILL * batch_capacity)
        return SERVE_DEFAULT_TARGET

    def to_serve(self, batch_capacity: int | None = None) -> dict[str, Any]:
        """Ray Serve's ``autoscaling_config`` dict, with the target resolved."""
        return {**self.model_dump(exclude_none=True), "target_ongoing_requests": self.target(batch_capacity)}


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
    max_ongoing_requests: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="Requests one replica takes at once; more wait in the caller's (Serve's router) queue, "
        "and the router sends a multiplexed adapter's requests elsewhere only once the replicas holding it "
        "are this full. Default for the LLM: with one replica, its batch plus its queue plus 20 % "
        "(`llm.max_batch_size + llm.max_queued_requests`), so requests wait in the replica's fair per-tenant "
        "queue; when it autoscales past one replica, twice its batch, so load spreads over the replicas "
        "once a batch is full. Gateway 1000, retrieval 32, otherwise 100.",
    )
    graceful_shutdown_timeout_s: float | None = Field(
        None,
        gt=0,
        le=86_400,
        description="How long a replica being stopped (scale-down, upgrade) waits for its ongoing requests "
        "and streams to finish before it is killed; default: `gateway.request_timeout_s` + 15 s, so no "
        "request the gateway still waits for is cut.",
    )
    graceful_shutdown_wait_loop_s: float = Field(
        1.0, gt=0, le=60, description="How often a stopping replica checks whether its requests are done."
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

    def ongoing_limit(self, batch_capacity: int | None = None, queue_capacity: int = 0) -> int:
        """``max_ongoing_requests``, else derived from the engine's batch and queue (see the field), else 100."""
        if self.max_ongoing_requests is not None:
            return self.max_ongoing_requests
        if not batch_capacity:
            return DEFAULT_MAX_ONGOING
        if self.max_replicas > 1:
            return 2 * batch_capacity
        return int((batch_capacity + queue_capacity) * 1.2)

    def to_serve_options(
        self,
        *,
        batch_capacity: int | None = None,
        queue_capacity: int = 0,
        request_timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Keyword arguments for ``Deployment.options(...)``.

        Args:
            batch_capacity: Requests the deployment's engine decodes together (the LLM's
                ``max_batch_size``): the autoscaling target and the ongoing-requests limit derive
                from it when they are not given.
            queue_capacity: Requests the engine keeps waiting beyond its batch (``max_queued_requests``).
            request_timeout_s: The longest a request may run (the gateway's): a stopping replica
                drains for that long plus a margin unless ``graceful_shutdown_timeout_s`` says otherwise.
        """
        res = self.ray_actor_options
        actor: dict[str, Any] = {"num_cpus": res.num_cpus, "num_gpus": res.num_gpus}
        if res.memory is not None:
            actor["memory"] = res.memory
        if res.resources:
            actor["resources"] = dict(res.resources)
        out: dict[str, Any] = {
            "ray_actor_options": actor,
            "max_ongoing_requests": self.ongoing_limit(batch_capacity, queue_capacity),
            "graceful_shutdown_wait_loop_s": self.graceful_shutdown_wait_loop_s,
        }
        drain_s = self.graceful_shutdown_timeout_s
        if drain_s is None and request_timeout_s is not None:
            drain_s = request_timeout_s + DRAIN_MARGIN_S
        if drain_s is not None:
            out["graceful_shutdown_timeout_s"] = drain_s
        if self.autoscaling_config is not None:
            out["autoscaling_config"] = self.autoscaling_config.to_serve(batch_capacity)
        else:
            out["num_replicas"] = self.num_replicas or 1
        return out


def _gateway_deployment() -> DeploymentOptions:
    # The gateway only awaits other deployments: little CPU, many concurrent requests.
    return DeploymentOptions(ray_actor_options=ActorResources(num_cpus=0.1), max_ongoing_requests=1000)


def _llm_deployment() -> DeploymentOptions:
    # max_ongoing_requests derives from the engine (see DeploymentOptions.ongoing_limit): with one replica,
    # requests beyond the batch wait in the replica's fair, bounded queue (llm.max_queued_requests), not in
    # Serve's first-come-first-served router queue.
    return DeploymentOptions(ray_actor_options=ActorResources(num_cpus=0.5))


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
