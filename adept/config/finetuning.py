"""Fine-tuning through the API (``/v1/fine_tuning/jobs``): defaults, limits, and the embedded runner.

A tenant's job names files and a few hyper-parameters; everything else a training job needs
(LoRA shape defaults, workers, checkpoints) comes from here, so the platform team decides what
tenants' jobs cost. The ``runner_*`` settings apply where the platform trains jobs itself
(``adept up``); in cluster mode the operator submits them to the training Ray cluster.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from pydantic import Field, model_validator

from adept.config.base import StrictModel
from adept.config.training import WorkersSection

log = logging.getLogger(__name__)

# Why not wire it instead: "auto" is chosen from the dataset's size (issue 24: a fixed 3 epochs over 48
# examples never taught their format); a platform-wide fixed default would override that for every job.
DEFAULT_N_EPOCHS_IGNORED = (
    'finetuning.default_n_epochs ({}) is deprecated and ignored: jobs that ask for "auto" epochs get a '
    "number chosen from their dataset's size (auto_hyperparameters), and a job that wants a fixed number "
    "names n_epochs; remove the setting (max_n_epochs still caps what jobs ask for)"
)


def _workers() -> WorkersSection:
    # One 1-CPU worker fits beside the Serve replicas on a 2-core laptop; the chart sets GPUs.
    return WorkersSection(num_workers=1, resources_per_worker={"CPU": 1})


class FineTuningConfig(StrictModel):
    """How API fine-tuning jobs are turned into training jobs."""

    enabled: bool = Field(True, description="Offer `/v1/files` and `/v1/fine_tuning/jobs` to tenants.")
    default_n_epochs: int = Field(
        3,
        ge=1,
        le=1000,
        description='Deprecated, ignored (a warning says so when it is set): `"auto"` epochs follow the '
        "dataset's size (`auto_hyperparameters`), so a few dozen examples get the steps they need; a job "
        "that wants a fixed number asks for `n_epochs`. Kept so existing configs load; to be removed.",
    )
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

    promotion_metric: str = Field(
        "combined",
        min_length=1,
        max_length=64,
        description="Eval-gated promotion: the `adept eval` metric a job's new adapter version must not lose "
        "on (jobs naming an `evaluation_file`); `combined` weighs facts, format and vocabulary.",
    )
    promotion_margin: float = Field(
        0.02,
        ge=0.0,
        le=1.0,
        description="Eval-gated promotion: how much lower than the live version's score a new version may "
        "measure and still go live; below that it stays published and inactive.",
    )

    @model_validator(mode="after")
    def _bounds(self) -> FineTuningConfig:
        problems = []
        if "default_n_epochs" in self.model_fields_set:
            log.warning(DEFAULT_N_EPOCHS_IGNORED.format(self.default_n_epochs))
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


# -- "auto" hyper-parameters -----------------------------------------------------------------------
# A few dozen examples must be enough to teach a format: what matters is the number of optimizer
# steps and their size, not the number of epochs. Like OpenAI's fine-tuning, epochs scale with the
# dataset's size: small sets get more passes (at least MIN_STEPS steps), large ones fewer (at most
# MAX_EXAMPLES_SEEN examples in all).
MIN_STEPS = 60
MAX_EXAMPLES_SEEN = 25_000
MIN_EPOCHS = 3
MAX_AUTO_EPOCHS = 25
PACKING_FROM = 2000


@dataclass(frozen=True)
class AutoHyperparameters:
    """What ``"auto"`` means for one dataset."""

    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    # Packing folds many short examples into one sequence: a few dozen chat examples became 3
    # sequences, so "3 epochs" meant 9 optimizer steps and the format was never learned. Steps are
    # counted in examples, so auto turns packing off until the set is large enough not to need it.
    packing: bool


def auto_hyperparameters(
    n_examples: int, *, max_n_epochs: int = MAX_AUTO_EPOCHS, max_batch_size: int = 64
) -> AutoHyperparameters:
    """Epochs, batch size and learning-rate multiplier for a dataset of ``n_examples`` (a pure function).

    - batch: a power of two near ``n / 16`` (1 to 8): small sets take small steps, and more of them;
    - epochs: enough for ``MIN_STEPS`` optimizer steps, at least ``MIN_EPOCHS``, at most
      ``MAX_AUTO_EPOCHS`` (and ``max_n_epochs``), and no more than ``MAX_EXAMPLES_SEEN`` examples;
    - learning rate: LoRA on a small set needs larger steps to pick up a format in few of them
      (x5 below 100 examples, x2.5 below 1,000, x1 above; the base rate is the platform's);
    - packing: off below ``PACKING_FROM`` examples, so the steps counted here are the steps taken.

    Raises:
        ValueError: ``n_examples`` is not positive.
    """
    if n_examples < 1:
        raise ValueError(f"n_examples must be positive, not {n_examples}")
    batch = 2 ** max(0, math.floor(math.log2(max(1.0, n_examples / 16))))
    batch = max(1, min(8, max_batch_size, batch))
    steps_per_epoch = math.ceil(n_examples / batch)
    epochs = max(MIN_EPOCHS, math.ceil(MIN_STEPS / steps_per_epoch))
    epochs = min(epochs, max(1, MAX_EXAMPLES_SEEN // n_examples), max_n_epochs, MAX_AUTO_EPOCHS)
    multiplier = 5.0 if n_examples < 100 else 2.5 if n_examples < 1000 else 1.0
    return AutoHyperparameters(
        n_epochs=max(1, epochs),
        batch_size=batch,
        learning_rate_multiplier=multiplier,
        packing=n_examples >= PACKING_FROM,
    )
