"""Fine-tuning through the API (``/v1/fine_tuning/jobs``): defaults, limits, and the embedded runner.

A tenant's job names files and a few hyper-parameters; everything else a training job needs
(LoRA shape defaults, workers, checkpoints) comes from here, so the platform team decides what
tenants' jobs cost. The ``runner_*`` settings apply where the platform trains jobs itself
(``adept up``); in cluster mode the operator submits them to the training Ray cluster.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from adept.config.base import StrictModel
from adept.config.training import WorkersSection


def _workers() -> WorkersSection:
    # One 1-CPU worker fits beside the Serve replicas on a 2-core laptop; the chart sets GPUs.
    return WorkersSection(num_workers=1, resources_per_worker={"CPU": 1})


class FineTuningConfig(StrictModel):
    """How API fine-tuning jobs are turned into training jobs."""

    enabled: bool = Field(True, description="Offer `/v1/files` and `/v1/fine_tuning/jobs` to tenants.")
    default_n_epochs: int = Field(3, ge=1, le=1000, description='Epochs when a job asks for `"auto"`.')
    max_n_epochs: int = Field(50, ge=1, le=1000, description="Most epochs a job may ask for.")
    max_batch_size: int = Field(64, ge=1, le=4096, description="Largest `batch_size` a job may ask for.")
    base_learning_rate: float = Field(
        2e-4, gt=0, le=1, description="Learning rate at `learning_rate_multiplier` 1 (AdamW, LoRA weights)."
    )
    default_lora_rank: int = Field(16, ge=1, le=1024, description="LoRA rank when a job names none.")
    max_lora_rank: int = Field(64, ge=1, le=1024, description="Largest LoRA rank a job may ask for.")
    default_max_seq_length: int = Field(
        1024, ge=16, le=131072, description="Tokens per training sequence when a job names none."
    )
    max_seq_length_limit: int = Field(
        4096, ge=16, le=131072, description="Largest `max_seq_length` a job may ask for."
    )
    allow_qlora: bool = Field(True, description="Let jobs ask for QLoRA (a 4-bit base: needs bitsandbytes).")
    eval_every_steps: int = Field(
        10, ge=1, description="Validation loss every N steps (jobs with a validation file)."
    )
    checkpoint_every_steps: int = Field(
        50, ge=1, description="Resumable checkpoint every N steps: an interrupted job goes on from there."
    )
    workers: WorkersSection = Field(default_factory=_workers, description="Ray Train workers per job.")
    runner_max_running_jobs: int = Field(
        1, ge=1, le=64, description="Embedded: jobs training at once on this machine; the rest wait `queued`."
    )
    runner_poll_interval_s: float = Field(
        2.0, gt=0, le=60, description="Embedded: how often the runner looks at its jobs and their logs."
    )
    retention_days: float = Field(
        30,
        ge=0,
        description="Finished jobs (records, run directories, FineTuneJob resources) are pruned this many days "
        "after they end; 0 = kept forever.",
    )
    runner_max_attempts: int = Field(
        3,
        ge=1,
        le=20,
        description="Embedded: starts of a job whose process ended without a result, before it fails.",
    )

    @model_validator(mode="after")
    def _bounds(self) -> FineTuningConfig:
        problems = []
        if self.default_n_epochs > self.max_n_epochs:
            problems.append(
                f"default_n_epochs ({self.default_n_epochs}) exceeds max_n_epochs ({self.max_n_epochs})"
            )
        if self.default_lora_rank > self.max_lora_rank:
            problems.append(
                f"default_lora_rank ({self.default_lora_rank}) exceeds max_lora_rank ({self.max_lora_rank})"
            )
        if self.default_max_seq_length > self.max_seq_length_limit:
            problems.append(
                f"default_max_seq_length ({self.default_max_seq_length}) exceeds max_seq_length_limit "
                f"({self.max_seq_length_limit})"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self
