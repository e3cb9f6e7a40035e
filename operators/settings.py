"""Operator configuration (what it talks to) and kopf settings (how it behaves).

Each kopf setting that differs from kopf's default says why on the line above it.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from pydantic import Field, SecretStr

from adept.config.base import StrictModel, load_config
from adept.config.finetuning import FineTuningConfig
from adept.config.platform import PlatformConfig


class OperatorConfig(StrictModel):
    """Where the operator finds Ray, the shared volume and the gateway. Env: ``ADEPT_<FIELD>``."""

    ray_address: str = Field(
        "http://127.0.0.1:8265",
        description="Default Ray dashboard address for FineTuneJobs (`rayAddress` overrides).",
    )
    ray_token: SecretStr | None = Field(
        None,
        description="Token of the training Ray cluster (token auth): every Ray Jobs API call sends it. "
        "The chart sets it from the cluster's token Secret.",
    )
    shared_dir: str = Field(
        "/data/shared", description="Mount point of the shared volume KnowledgeBase paths live on."
    )
    gateway_url: str | None = Field(
        None,
        description="Gateway base URL: the operator syncs KnowledgeBases, purges deleted tenants and unloads "
        "adapters through its admin API.",
    )
    gateway_admin_key: str | None = Field(None, description="Admin API key for `gateway_url`.")
    poll_interval: float = Field(10.0, gt=0, le=3600, description="Seconds between Ray job status polls.")
    retry_delay: float = Field(15.0, gt=0, le=3600, description="Seconds to wait after a transient failure.")
    job_entrypoint: str = Field(
        "python -m training.finetune --config finetune.yaml",
        description="Command a FineTuneJob runs; the job config is `finetune.yaml` in its working dir.",
    )
    training_cluster: str | None = Field(
        None,
        description="Name of the training RayCluster in the operator's namespace (`POD_NAMESPACE`): checked at "
        "start-up for a KubeRay that keeps `authOptions.secretName` (>= 1.6.0). The chart sets it.",
    )
    job_env: dict[str, str] = Field(
        default_factory=dict,
        description="Extra environment variables for training jobs (e.g. ADEPT_DATA_DIR).",
    )


def _read(path: str | None) -> dict[str, Any]:
    path = path or os.environ.get("ADEPT_OPERATOR_CONFIG") or None
    if not path:
        return {}
    from adept.config.base import read_yaml

    return read_yaml(path)


def load_operator_config(path: str | None = None) -> tuple[OperatorConfig, PlatformConfig]:
    """Operator and platform config from an optional YAML file (``ADEPT_OPERATOR_CONFIG``) plus env."""
    data = _read(path)
    platform = load_config(PlatformConfig, base=data.pop("platform", None) or {})
    data.pop("finetuning", None)  # load_finetuning_config's
    return load_config(OperatorConfig, base=data), platform


FINETUNING_ENV = "ADEPT_FINETUNING_JSON"


def load_finetuning_config(path: str | None = None) -> FineTuningConfig:
    """The platform's fine-tuning settings (retention, promotion metric and margin, limits), the ones the
    gateway's ``finetuning`` section holds: the file's ``finetuning`` section, then ``$ADEPT_FINETUNING_JSON``
    (the chart sets it from ``serving.args.finetuning``, so gateway and operator read one set)."""
    import json

    from adept.config.base import deep_merge
    from adept.errors import ConfigError

    data = _read(path).get("finetuning") or {}
    raw = os.environ.get(FINETUNING_ENV)
    if raw:
        try:
            extra = json.loads(raw)
        except ValueError as e:
            raise ConfigError(f"${FINETUNING_ENV} is not JSON: {e}") from None
        data = deep_merge(data, extra if isinstance(extra, dict) else {})
    return load_config(FineTuningConfig, base=data, env=False)


def configure(settings: Any) -> None:
    """Apply Adept's choices to a ``kopf.OperatorSettings`` (called from the startup handler)."""
    import kopf

    # Our own finalizer name, so `kubectl get -o yaml` says whose it is and what removing it skips.
    settings.persistence.finalizer = "adept.dev/cleanup"
    # Bookkeeping in annotations under our prefix: status has a strict schema that would prune kopf's fields.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="adept.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="adept.dev", key="last-handled-configuration"
    )
    # Warnings and errors become Kubernetes events (kubectl describe), not every info line.
    settings.posting.level = logging.WARNING
    # An unexpected exception is retried after 30 s, not kopf's 60 s: most are Ray/Milvus hiccups.
    settings.execution.default_backoff = 30
    # Handlers are sync (Ray SDK, Milvus, embeddings) and run in threads: a bounded pool keeps memory flat.
    settings.execution.max_workers = 8
    # Reconnect watches faster than the default 0.1 s would hammer, slower than never: 1 s.
    settings.watching.reconnect_backoff = 1.0
    # API calls time out after 60 s instead of 5 min, so a dead API server is noticed and retried.
    settings.networking.request_timeout = 60
    # Server-side watch timeout: re-list every 10 min so missed events self-heal.
    settings.watching.server_timeout = 600
    # No namespace/CRD scanning: we watch exact namespaces (or all), and the chart installs CRDs first, so
    # the operator needs no cluster-wide list/watch on namespaces and CRDs (a namespaced Role suffices).
    settings.scanning.disabled = True
    # Peering: a replica that stops heartbeating is considered gone after 60 s (kopf default) — unchanged.
    # Two replicas: the one with higher priority acts; both run with the same priority by default.
    settings.peering.priority = int(os.environ.get("ADEPT_OPERATOR_PRIORITY", "0"))
