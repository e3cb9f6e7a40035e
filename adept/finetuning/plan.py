"""What a fine-tuning request asks for, and the training job it resolves to.

``JobRequest`` is OpenAI's ``POST /v1/fine_tuning/jobs`` body, flattened; ``resolve_hyperparameters``
turns ``"auto"`` and absent fields into values (from the dataset's size: ``auto_hyperparameters``)
and checks each against the platform's limits; ``training_config`` is the ``python -m
training.finetune`` config the job runs; ``JobPlan`` is all of it before it is stored, what the job
owner's ``_check_plan`` checks. Pure functions of their arguments: the owner
(``adept.finetuning.service.FineTuning``) calls them in its one create order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from adept.config.finetuning import PACKING_FROM, FineTuningConfig, auto_hyperparameters
from adept.config.training import FineTuneJobConfig, WorkersSection
from adept.errors import InvalidRequest
from adept.finetuning.files import FileRecord, FileStore
from adept.finetuning.jobs import AdeptOptions, Hyperparameters

if TYPE_CHECKING:
    from adept.tenancy import Tenant


@dataclass
class JobRequest:
    """What a caller asks for: OpenAI's ``POST /v1/fine_tuning/jobs`` body, flattened (``None``/"auto": defaults)."""

    model: str
    training_file: str
    validation_file: str | None = None
    suffix: str | None = None
    seed: int | None = None
    metadata: dict[str, str] | None = None
    n_epochs: int | Literal["auto"] | None = None
    batch_size: int | Literal["auto"] | None = None
    learning_rate_multiplier: float | Literal["auto"] | None = None
    method: str = "supervised"
    lora_rank: int | None = None
    lora_alpha: float | None = None
    qlora: bool = False
    max_seq_length: int | None = None
    integrations: list[dict[str, Any]] = field(default_factory=list)
    evaluation_file: str | None = (
        None  # an ``evals`` file: the new version goes live only if it measures well
    )


@dataclass
class JobPlan:
    """A job as ``create`` (or ``create_from_config``) has resolved it, before it is stored: what ``_check_plan``
    checks."""

    tenant: Tenant
    training: FileRecord | None  # None: a job made from a config, which names paths (create_from_config)
    validation: FileRecord | None
    base_model: str
    hyperparameters: Hyperparameters
    options: AdeptOptions
    config: dict[str, Any]
    evaluation: tuple[str, bytes] | None = None  # the evaluation file (id, path or URI) and its content


def resolve_hyperparameters(
    settings: FineTuningConfig, req: JobRequest, training: FileRecord
) -> tuple[Hyperparameters, AdeptOptions]:
    """The hyper-parameters and LoRA shape a request resolves to (``"auto"`` from the dataset's size),
    each checked against the platform's limits (InvalidRequest naming the field)."""
    s = settings
    if req.method != "supervised":
        raise InvalidRequest(
            f"method {req.method!r} is not supported: Adept fine-tunes with supervised LoRA/QLoRA",
            param="method.type",
        )
    # "auto" (or absent): chosen from the dataset's size (``auto_hyperparameters``), so that a few
    # dozen examples get enough optimizer steps to learn their format.
    auto = auto_hyperparameters(
        max(1, training.examples), max_n_epochs=s.max_n_epochs, max_batch_size=s.max_batch_size
    )
    epochs = auto.n_epochs if req.n_epochs in (None, "auto") else int(req.n_epochs)
    if epochs > s.max_n_epochs:
        raise InvalidRequest(
            f"n_epochs {epochs} exceeds this platform's limit of {s.max_n_epochs}", param="n_epochs"
        )
    batch = auto.batch_size if req.batch_size in (None, "auto") else int(req.batch_size)
    if batch > s.max_batch_size:
        raise InvalidRequest(
            f"batch_size {batch} exceeds this platform's limit of {s.max_batch_size}", param="batch_size"
        )
    lr = (
        auto.learning_rate_multiplier
        if req.learning_rate_multiplier in (None, "auto")
        else float(req.learning_rate_multiplier)
    )
    if s.base_learning_rate * lr > 1.0:
        raise InvalidRequest(
            f"learning_rate_multiplier {lr} makes the learning rate exceed 1.0",
            param="learning_rate_multiplier",
        )
    rank = req.lora_rank or s.default_lora_rank
    if rank > s.max_lora_rank:
        raise InvalidRequest(
            f"lora_rank {rank} exceeds this platform's limit of {s.max_lora_rank}",
            param="method.adept.lora_rank",
        )
    seq = req.max_seq_length or s.default_max_seq_length
    if seq > s.max_seq_length_limit:
        raise InvalidRequest(
            f"max_seq_length {seq} exceeds this platform's limit of {s.max_seq_length_limit}",
            param="method.adept.max_seq_length",
        )
    if req.qlora and not s.allow_qlora:
        raise InvalidRequest("QLoRA is not enabled on this platform", param="method.adept.qlora")
    alpha = req.lora_alpha or 2.0 * rank
    return (
        Hyperparameters(n_epochs=epochs, batch_size=batch, learning_rate_multiplier=lr),
        AdeptOptions(lora_rank=rank, lora_alpha=alpha, qlora=req.qlora, max_seq_length=seq),
    )


def training_config(
    settings: FineTuningConfig,
    files: FileStore,
    workers: WorkersSection,
    tenant: str,
    adapter: str,
    job_id: str,
    hp: Hyperparameters,
    options: AdeptOptions,
    seed: int,
    training: FileRecord,
    validation: FileRecord | None,
) -> dict[str, Any]:
    """The ``python -m training.finetune`` config the job runs (base model, stores: the platform's), on
    ``workers`` (the settings' where the platform team set them, else the training group's GPUs)."""
    s = settings
    job = FineTuneJobConfig.model_validate(
        {
            "tenant": tenant,
            "adapter": adapter,
            "method": "qlora" if options.qlora else "lora",
            "description": f"fine-tuning job {job_id}",
            "lora": {"rank": options.lora_rank, "alpha": options.lora_alpha},
            "data": {
                "path": files.location(training),
                "validation_path": files.location(validation) if validation else None,
                "validation_split": 0.0,  # OpenAI: validation metrics only with a validation file
                "max_seq_length": options.max_seq_length,
                # Packing folds short examples together: fewer, larger steps than the hyper-parameters
                # count; off until the set is large (``auto_hyperparameters``).
                "packing": training.examples >= PACKING_FROM,
            },
            "train": {
                "epochs": hp.n_epochs,
                "batch_size": hp.batch_size,
                "learning_rate": s.base_learning_rate * hp.learning_rate_multiplier,
                "seed": seed,
                "log_every_steps": 1,  # every step is an event (and a point of the loss curve)
                "eval_every_steps": s.eval_every_steps if validation else 0,
            },
            "workers": workers.model_dump(),
            "checkpoint": {"every_steps": s.checkpoint_every_steps},
            "output": {"run_name": job_id},
        }
    )
    return job.model_dump(mode="json", exclude_none=True)


def starting_shape(path: Any) -> dict[str, Any]:
    """The ``lora`` section of a job that starts from the adapter at ``path``: its own shape and weights."""
    import json

    try:
        peft = json.loads((Path(path) / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InvalidRequest(f"the model to start from cannot be read: {e}", param="model") from None
    targets = peft.get("target_modules")
    return {
        "rank": int(peft.get("r") or 8),
        "alpha": float(peft.get("lora_alpha") or 16),
        "target_modules": sorted(targets) if isinstance(targets, list) else None,
        "init_adapter": str(path),
    }
