"""Platform-wide settings: where data lives, which model, which device, which stores."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from adept.config.base import StrictModel
from adept.config.cluster_shape import ClusterShape

BUNDLED_MODEL = "bundled:smollm2-135m-instruct"
BUNDLED_EMBEDDING = "bundled:all-minilm-l6-v2"
PHI3_MINI = "microsoft/Phi-3-mini-4k-instruct"


_SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def default_data_dir() -> Path:
    return Path(os.environ.get("ADEPT_DATA_DIR") or Path.home() / ".adept").expanduser()


class PlatformConfig(StrictModel):
    """Settings shared by every component of one Adept installation."""

    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Directory for all local state: tenant store, Milvus Lite file, adapters, model cache, Ray temp.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where models run. `auto` picks CUDA when a GPU is visible, else CPU."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="Model weights dtype. `auto`: bfloat16 on CUDA (and on CPUs with bf16 support), else float32.",
    )
    model: str = Field(
        BUNDLED_MODEL,
        description="Base model reference: `bundled:smollm2-135m-instruct`, a local directory, or a hub id "
        "(e.g. `microsoft/Phi-3-mini-4k-instruct`) already in the local Hugging Face cache.",
    )
    embedding_model: str = Field(
        BUNDLED_EMBEDDING,
        description="sentence-transformers model: `bundled:all-minilm-l6-v2`, a local directory, or a cached hub id.",
    )
    milvus_uri: str | None = Field(
        None,
        description="Milvus URI. A file path means Milvus Lite; `http://host:19530` a Milvus server or cluster. "
        "Default: `<data_dir>/milvus.db`.",
    )
    milvus_token: str | None = Field(None, description="Milvus token (`user:password`) for a secured server.")
    milvus_tls_ca_file: Path | None = Field(
        None,
        description="PEM file of the CA that signed the Milvus server's certificate (`https://` URI): the "
        "client verifies the server with it. Default: verify against the system's CAs.",
    )
    milvus_tls_server_name: str | None = Field(
        None,
        description="Name expected in the Milvus server's certificate, when it differs from the URI's host.",
    )
    collection: str = Field(
        "adept_chunks",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,254}$",
        description="Milvus collection holding all tenants' chunks.",
    )
    adapter_store_uri: str | None = Field(
        None,
        description="Adapter store: a local directory or an fsspec URI (`s3://bucket/prefix`). Default: `<data_dir>/adapters`.",
    )
    files_store_uri: str | None = Field(
        None,
        description="Where tenants' fine-tuning files (`/v1/files`) live: a local directory or an fsspec URI "
        "(`s3://bucket/files`); training jobs read them there. Default: `<data_dir>/files`.",
    )
    max_lora_rank: int = Field(
        64,
        description="Largest LoRA rank an adapter may have: publishing refuses larger ones, and the vLLM "
        "engine reserves room for this rank (one of vLLM's sizes: 1, 8, 16, 32, 64, 128, 256, 320, 512).",
    )
    tenant_store: Literal["sqlite", "kubernetes"] = Field(
        "sqlite",
        description="Where tenants and their key hashes live: `sqlite` (`<data_dir>/tenants.sqlite`, one "
        "machine) or `kubernetes` (`Tenant` resources and key-hash Secrets, watched; cluster mode).",
    )
    training_publish: Literal["direct", "handoff"] = Field(
        "direct",
        description="How a fine-tune's adapter reaches the registry. `direct`: the training job publishes it "
        "(one machine, no trust boundary). `handoff`: the job leaves it in its run directory and the "
        "platform's publisher (the operator, when the FineTuneJob succeeds) publishes it, so training "
        "pods, where tenants' data is processed, hold no tenant-store, registry or admin credentials.",
    )
    training_shape: ClusterShape | None = Field(
        None,
        description="Shape of the training Ray cluster (cluster mode; the chart sets it from the training "
        "RayCluster's groups): fine-tuning jobs that name no workers train on its GPU group "
        "(`adept.placement.default_job_resources`), and a job it can never hold is refused when created.",
    )
    training_entrypoint_num_cpus: float = Field(
        1.0,
        ge=0,
        le=64,
        description="CPUs the driver of every job submitted to the training Ray cluster reserves "
        "(`--entrypoint-num-cpus`): the one number the operator's Ray Jobs executor submits with and the job "
        "owner (gateway and operator) counts when it places a job on `training_shape`. The training head offers "
        "none (`num-cpus: 0`), so drivers run on workers, never beside the autoscaler's token.",
    )
    kubernetes_namespace: str | None = Field(
        None,
        pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
        description="Namespace of the `Tenant` resources (tenant_store: kubernetes). Default: the pod's own "
        "namespace ($POD_NAMESPACE, else the service account's namespace file).",
    )

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return Path(v).expanduser().absolute()

    @model_validator(mode="after")
    def _tls_needs_https(self) -> PlatformConfig:
        if (self.milvus_tls_ca_file or self.milvus_tls_server_name) and not (
            self.milvus_uri or ""
        ).startswith("https://"):
            raise ValueError("milvus_tls_ca_file / milvus_tls_server_name need an https:// milvus_uri")
        return self

    def milvus_client_options(self) -> dict[str, object]:
        """Keyword arguments for ``pymilvus.MilvusClient`` beyond URI and token: TLS verification."""
        if not (self.milvus_uri or "").startswith("https://"):
            return {}
        options: dict[str, object] = {"secure": True}
        if self.milvus_tls_ca_file:
            options["server_pem_path"] = str(self.milvus_tls_ca_file)
        if self.milvus_tls_server_name:
            options["server_name"] = self.milvus_tls_server_name
        return options

    @field_validator("max_lora_rank")
    @classmethod
    def _rank(cls, v: int) -> int:
        from adept.adapter_compat import VLLM_LORA_RANKS

        if v not in VLLM_LORA_RANKS:
            raise ValueError(f"max_lora_rank ({v}) must be one of {list(VLLM_LORA_RANKS)}")
        return v

    @property
    def resolved_milvus_uri(self) -> str:
        return self.milvus_uri or str(self.data_dir / "milvus.db")

    @property
    def resolved_adapter_store(self) -> str:
        return self.adapter_store_uri or str(self.data_dir / "adapters")

    @property
    def resolved_files_store(self) -> str:
        return self.files_store_uri or str(self.data_dir / "files")

    @property
    def resolved_kubernetes_namespace(self) -> str:
        """The configured namespace, else this pod's (``$POD_NAMESPACE``, the service account's file)."""
        if self.kubernetes_namespace:
            return self.kubernetes_namespace
        if os.environ.get("POD_NAMESPACE"):
            return os.environ["POD_NAMESPACE"]
        try:
            return _SA_NAMESPACE.read_text(encoding="utf-8").strip()
        except OSError:
            return "default"

    @property
    def tenants_db(self) -> Path:
        return self.data_dir / "tenants.sqlite"

    @property
    def jobs_db(self) -> Path:
        """Fine-tuning jobs of the embedded platform (``tenant_store: sqlite``)."""
        return self.data_dir / "finetuning.sqlite"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def ray_temp_dir(self) -> Path:
        # Ray's unix socket paths must stay under ~107 chars; callers may fall back to /tmp.
        return self.data_dir / "ray"

    def resolved_device(self) -> str:
        """``cpu`` or ``cuda`` (imports torch only when ``auto`` must look)."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


def load_platform_config(
    data_dir: str | Path | None = None, overrides: list[str] | None = None
) -> PlatformConfig:
    """The effective ``PlatformConfig``: defaults < ``$ADEPT_CONFIG`` file < ``ADEPT_*`` env < ``data_dir`` < overrides."""
    from adept.config.base import load_config

    ov = list(overrides or [])
    if data_dir:
        ov.insert(0, f"data_dir={data_dir}")
    return load_config(PlatformConfig, os.environ.get("ADEPT_CONFIG") or None, ov)
