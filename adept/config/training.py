"""Fine-tuning job configuration: what `python -m training.finetune --config job.yaml` reads.

One YAML file describes one job: whose adapter (tenant, adapter name), trained how (LoRA or
QLoRA on a base model, hyper-parameters), on what data, on which workers (Ray Train, optional
DeepSpeed ZeRO), and where checkpoints and the result go. QLoRA is LoRA with a 4-bit base
(``method: qlora`` sets ``quantize_base``); there is no second code path.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from adept.config.adapter import check_adapter_name
from adept.config.base import StrictModel
from adept.config.platform import PlatformConfig
from adept.config.tenant import check_tenant_name

# LoRA targets per architecture (config.json `model_type`): every attention and MLP projection,
# which is what the LoRA/QLoRA papers found best for quality at a given rank.
DEFAULT_TARGET_MODULES: dict[str, list[str]] = {
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}


def default_target_modules(model_type: str) -> list[str] | str:
    """LoRA target modules for a ``model_type``; PEFT's ``"all-linear"`` for unknown architectures."""
    return list(DEFAULT_TARGET_MODULES.get(model_type, [])) or "all-linear"


class LoraSection(StrictModel):
    """Low-rank adapter shape."""

    rank: int = Field(16, ge=1, le=1024, description="LoRA rank r (adapter size grows linearly with it).")
    alpha: float = Field(32.0, gt=0, description="LoRA alpha; the update is scaled by alpha / rank.")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the adapter input during training.")
    target_modules: list[str] | None = Field(
        None,
        description="Module names to wrap. Default: per architecture (phi3: qkv_proj, o_proj, gate_up_proj, "
        "down_proj; llama-style: q/k/v/o_proj, gate/up/down_proj; others: all linear layers).",
    )

    init_adapter: str | None = Field(
        None,
        description="A PEFT adapter directory whose weights training starts from (fine-tuning a fine-tuned "
        "model); its rank and target modules must match `rank` and `target_modules`.",
    )

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (not v or any(not isinstance(m, str) or not m.strip() for m in v)):
            raise ValueError(
                "target_modules must be a non-empty list of module names (or omitted for defaults)"
            )
        return v


class QLoraSection(StrictModel):
    """How the frozen base is quantized when ``method: qlora`` (bitsandbytes 4-bit)."""

    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type; NF4 is what QLoRA uses.")
    double_quant: bool = Field(
        True, description="Quantize the quantization constants too (~0.4 bit/param saved)."
    )
    compute_dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="dtype of the de-quantized matmuls; auto: bfloat16 where supported, else float32."
    )


class DataSection(StrictModel):
    """Training examples and how they become token sequences."""

    path: str = Field(description="JSONL file (local path or fsspec URI such as s3://bucket/train.jsonl).")
    format: Literal["auto", "chat", "sharegpt", "prompt_completion"] = Field(
        "auto",
        description='Line format: chat {"messages": [{"role","content"}]} (OpenAI fine-tuning), sharegpt '
        '{"conversations": [{"from","value"}]}, prompt_completion {"prompt","completion"}; auto detects per line.',
    )
    validation_path: str | None = Field(
        None, description="Separate validation JSONL; default: split off `path`."
    )
    validation_split: float = Field(
        0.1,
        ge=0.0,
        lt=0.5,
        description="Fraction of examples held out for eval loss when no validation_path.",
    )
    max_seq_length: int = Field(
        1024, ge=16, le=131072, description="Tokens per sequence; longer examples are truncated."
    )
    packing: bool = Field(
        True,
        description="Pack several short examples into one sequence (no padding waste); attention never crosses "
        "example boundaries (position ids restart per example).",
    )
    skip_invalid: bool = Field(
        False,
        description="Skip malformed lines with a warning instead of failing (an all-invalid file still fails).",
    )


class TrainSection(StrictModel):
    """Optimization hyper-parameters."""

    epochs: int = Field(
        1, ge=1, le=1000, description="Passes over the training data (ignored when max_steps is set)."
    )
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimizer steps (overrides epochs)."
    )
    batch_size: int = Field(4, ge=1, le=4096, description="Sequences per micro-batch per worker.")
    grad_accum_steps: int = Field(
        1, ge=1, le=1024, description="Micro-batches accumulated per optimizer step."
    )
    learning_rate: float = Field(2e-4, gt=0.0, le=1.0, description="Peak learning rate (AdamW).")
    lr_schedule: Literal["cosine", "linear", "constant"] = Field("cosine", description="Decay after warm-up.")
    warmup_ratio: float = Field(
        0.03, ge=0.0, le=0.5, description="Fraction of steps spent warming up linearly."
    )
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="AdamW weight decay on adapter weights.")
    max_grad_norm: float = Field(1.0, ge=0.0, description="Gradient clipping norm; 0 disables clipping.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in backward (less memory, ~30% slower)."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Base weights / activations dtype; auto: bfloat16 on GPUs and bf16-capable CPUs."
    )
    seed: int = Field(42, ge=0, description="Seed for data shuffling, the validation split and adapter init.")
    eval_every_steps: int = Field(50, ge=0, description="Evaluate every N steps (0: only at the end).")
    log_every_steps: int = Field(10, ge=1, description="Report metrics every N steps.")


class WorkersSection(StrictModel):
    """Ray Train scaling."""

    num_workers: int = Field(1, ge=1, le=1024, description="Training processes (one per GPU when use_gpu).")
    use_gpu: bool = Field(False, description="One GPU per worker; CPU workers use gloo, GPU workers NCCL.")
    resources_per_worker: dict[str, float] | None = Field(
        None, description='Ray resources per worker, e.g. {"CPU": 4, "GPU": 1}; default: 1 CPU (plus 1 GPU).'
    )

    @field_validator("resources_per_worker")
    @classmethod
    def _resources(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is not None and any(x < 0 for x in v.values()):
            raise ValueError("resources_per_worker values must be >= 0")
        return v

    def cpus_per_worker(self) -> int:
        """Threads each worker may use (its CPU reservation, at least 1)."""
        return max(1, int((self.resources_per_worker or {}).get("CPU", 1)))


class DeepSpeedSection(StrictModel):
    """DeepSpeed ZeRO; stage 0 is plain DDP."""

    stage: Literal[0, 2, 3] = Field(
        0, description="0: DDP; 2: shard optimizer state and gradients; 3: also parameters."
    )
    offload_optimizer: bool = Field(False, description="Keep optimizer state in CPU memory (ZeRO-2/3).")
    offload_params: bool = Field(False, description="Keep parameters in CPU memory (ZeRO-3 only).")


class CheckpointSection(StrictModel):
    """Checkpoints, retention and fault tolerance."""

    every_steps: int = Field(
        50, ge=1, description="Save a resumable checkpoint every N optimizer steps (and at the end)."
    )
    keep: int = Field(2, ge=1, description="Checkpoints kept in storage (oldest deleted).")
    max_failures: int = Field(
        2, ge=0, description="Worker-group restarts from the latest checkpoint before giving up."
    )


class OutputSection(StrictModel):
    """Where the run lives and where the adapter is published."""

    data_dir: Path | None = Field(
        None,
        description="Adept data directory (models cache, default storage, Ray temp). Default: the platform's "
        "(`ADEPT_DATA_DIR`, else ~/.adept).",
    )
    storage_path: str | None = Field(
        None,
        description="Ray Train storage (local dir or s3://...); shared by all nodes. Default: <data_dir>/training.",
    )
    run_name: str | None = Field(
        None,
        description="Run name in storage; re-submitting the same name resumes. Default: <tenant>-<adapter>.",
    )
    adapter_store_uri: str | None = Field(
        None,
        description="Adapter registry URI. Default: the platform's adapter store (what serving reads).",
    )
    publish: bool | None = Field(
        None,
        description="Publish the trained adapter to the registry from this job (one version per run). "
        "Default: as the platform says (`training_publish`: `direct` publishes here; `handoff` leaves the "
        "result in the run directory for the operator to publish). `false`: the result stays in the run "
        "directory, published by nobody.",
    )

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, v: Path | None) -> Path | None:
        return None if v is None else Path(v).expanduser().absolute()

    @field_validator("run_name")
    @classmethod
    def _run_name(cls, v: str | None) -> str | None:
        if v is not None:
            check_adapter_name(v)
        return v


class FineTuneJobConfig(StrictModel):
    """One fine-tuning job: a tenant's examples -> a LoRA/QLoRA adapter in the registry."""

    tenant: str = Field(description="Tenant that owns the adapter (DNS label).")
    adapter: str = Field(description="Adapter name within the tenant; each run publishes its next version.")
    base_model: str | None = Field(
        None,
        description="Base model: bundled:NAME, a local model directory, or a cached hub id. Default: the model "
        "the platform serves (an adapter trained on another base is refused when published).",
    )
    method: Literal["lora", "qlora"] = Field("lora", description="lora, or qlora (LoRA on a 4-bit NF4 base).")
    description: str = Field("", max_length=500, description="Free text stored in the adapter manifest.")
    lora: LoraSection = Field(default_factory=LoraSection, description="Adapter shape.")
    qlora: QLoraSection = Field(
        default_factory=QLoraSection, description="4-bit base options (method: qlora)."
    )
    data: DataSection = Field(description="Training data.")
    train: TrainSection = Field(default_factory=TrainSection, description="Optimization.")
    workers: WorkersSection = Field(default_factory=WorkersSection, description="Ray Train scaling.")
    deepspeed: DeepSpeedSection = Field(default_factory=DeepSpeedSection, description="DeepSpeed ZeRO.")
    checkpoint: CheckpointSection = Field(
        default_factory=CheckpointSection, description="Checkpoints and retries."
    )
    output: OutputSection = Field(default_factory=OutputSection, description="Storage and publishing.")
    evaluation_file: str | None = Field(
        None,
        min_length=1,
        max_length=1024,
        description="Eval-gated promotion: an evaluation set (`adept eval` JSONL: question, answer, expect) the "
        "new version is measured on against the tenant's active version of this adapter before it goes live: "
        "one of the tenant's `evals` files (`file-...`), a path, or an fsspec URI. The version is published "
        "inactive and activated only if it is not worse than the active one by more than the platform's "
        "`finetuning.promotion_margin` on `finetuning.promotion_metric`; otherwise it stays published and "
        "inactive, with the reason in the job's events and the Adapter's status.",
    )

    @field_validator("tenant")
    @classmethod
    def _tenant(cls, v: str) -> str:
        return check_tenant_name(v)

    @field_validator("adapter")
    @classmethod
    def _adapter(cls, v: str) -> str:
        return check_adapter_name(v)

    @model_validator(mode="after")
    def _combinations(self) -> FineTuneJobConfig:
        problems = []
        ds = self.deepspeed
        if self.method == "qlora" and ds.stage == 3:
            problems.append("deepspeed.stage: ZeRO-3 cannot shard a 4-bit (qlora) base; use stage 0 or 2")
        if ds.offload_optimizer and ds.stage == 0:
            problems.append("deepspeed.offload_optimizer needs deepspeed.stage 2 or 3")
        if ds.offload_params and ds.stage != 3:
            problems.append("deepspeed.offload_params needs deepspeed.stage 3")
        if self.method == "qlora" and self.train.dtype == "float16":
            problems.append("train.dtype: float16 is not supported with qlora; use auto or bfloat16")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def quantize_base(self) -> bool:
        """QLoRA is LoRA whose frozen base is 4-bit."""
        return self.method == "qlora"

    def bind(self, platform: PlatformConfig) -> FineTuneJobConfig:
        """This job with what it leaves unset taken from the platform: base model, data dir, adapter store.

        Each is taken independently: a job that names its own data dir still publishes where
        serving reads, unless it names an adapter store too.
        """
        direct = platform.training_publish == "direct"
        output = self.output.model_copy(
            update={
                "data_dir": self.output.data_dir or platform.data_dir,
                "adapter_store_uri": self.output.adapter_store_uri or platform.resolved_adapter_store,
                "publish": direct if self.output.publish is None else self.output.publish,
            }
        )
        return self.model_copy(update={"base_model": self.base_model or platform.model, "output": output})

    def check_publisher(self, platform: PlatformConfig) -> None:
        """Refuse ``output.publish: true`` where training jobs hold no credentials to publish (``handoff``).

        Raises:
            InvalidRequest: naming ``output.publish``.
        """
        if self.output.publish and platform.training_publish == "handoff":
            from adept.errors import InvalidRequest

            raise InvalidRequest(
                "output.publish is true, but this platform's training jobs hand their result to its publisher "
                "(training_publish: handoff) and hold no credentials to publish: leave output.publish unset",
                param="output.publish",
            )

    def _bound(self) -> tuple[str, Path]:
        if self.base_model is None or self.output.data_dir is None:
            raise ValueError("job config is not bound to a platform: call bind(PlatformConfig) first")
        return self.base_model, self.output.data_dir

    @property
    def resolved_base_model(self) -> str:
        return self._bound()[0]

    @property
    def resolved_data_dir(self) -> Path:
        return self._bound()[1]

    @property
    def resolved_run_name(self) -> str:
        return self.output.run_name or f"{self.tenant}-{self.adapter}"

    @property
    def resolved_storage_path(self) -> str:
        return self.output.storage_path or str(self.resolved_data_dir / "training")

    @property
    def resolved_run_dir(self) -> str:
        """``<storage>/<run name>``: checkpoints, job state and the result handed to the publisher."""
        return f"{self.resolved_storage_path.rstrip('/')}/{self.resolved_run_name}"

    @property
    def resolved_adapter_store(self) -> str:
        return self.output.adapter_store_uri or str(self.resolved_data_dir / "adapters")

    def fingerprint(self) -> str:
        """Hash of what determines the trained weights; a re-submission must match it to resume."""
        keep = self.model_dump(
            mode="json", include={"base_model", "method", "lora", "qlora", "data", "train"}
        )
        for k in ("eval_every_steps", "log_every_steps"):
            keep["train"].pop(k, None)
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]
