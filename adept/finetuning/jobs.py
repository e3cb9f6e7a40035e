"""A fine-tuning job as the platform stores it, and what tenants read from it: events and checkpoints.

One ``JobRecord`` per job holds what the tenant asked for (files, hyper-parameters, suffix),
the training config it runs with, and what has happened since (status, timestamps, reported
steps, error, the model it produced). Events and checkpoints are *derived* from the record by
``job_events`` and ``job_checkpoints``, never stored apart: the embedded SQLite store and the
cluster's ``FineTuneJob`` resources hold the same record and answer the same events, with
stable ids (``ftevent-<job>-<what>``), in OpenAI's order (newest first).

The model a job produces is named the OpenAI way, ``ft:<base>:<tenant>:<suffix>:<8 hex of the job
id>`` (the job's ``fine_tuned_model``; the suffix may be empty). It is stored as an adapter of the
tenant named ``ft-<suffix>-<8 hex>`` (``ft-<8 hex>`` without a suffix; adapter names hold no ``:``),
and ``adapter_of_fine_tuned_model`` maps the one to the other, so every place that takes a model
name takes either.

The one state machine: ``validating_files -> queued -> running -> succeeded | failed | cancelled``
(``advance``); a run that is interrupted goes back from ``running`` to ``queued``. Every status
change of every job goes through ``advance``.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from adept.config.adapter import AdapterEvaluation
from adept.config.base import StoredModel
from adept.errors import InvalidRequest, NotFound

JobStatus = Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]
ACTIVE_STATUSES: frozenset[str] = frozenset({"validating_files", "queued", "running"})
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
MAX_HISTORY = 1000  # reported steps kept per job (events and the loss curve); later ones replace the oldest
MAX_SUFFIX_CHARS = 64  # as OpenAI allows
_ADAPTER_SUFFIX_CHARS = 50  # ft-<suffix>-<8 hex> must stay a 63-character adapter name
SUFFIX_RE = re.compile(r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$")
JOB_ID_RE = re.compile(r"^ftjob-[0-9a-f]{24}$")
FINE_TUNED_PREFIX = "ft-"  # every model a job produces is named ft-...


class Hyperparameters(StoredModel):
    """The resolved hyper-parameters (``"auto"`` already replaced by the value used)."""

    n_epochs: int = Field(description="Passes over the training file.")
    batch_size: int = Field(description="Sequences per optimizer step.")
    learning_rate_multiplier: float = Field(description="Times the platform's base learning rate.")


class AdeptOptions(StoredModel):
    """Adept's extension of ``method`` (resolved): the adapter's shape and the sequence length."""

    lora_rank: int = Field(description="LoRA rank r.")
    lora_alpha: float = Field(description="LoRA alpha.")
    qlora: bool = Field(False, description="Train on a 4-bit (NF4) base: QLoRA.")
    max_seq_length: int = Field(description="Tokens per training sequence.")


class JobError(StoredModel):
    """Why a job failed, as OpenAI reports it."""

    code: str
    message: str
    param: str | None = None


class StepRecord(StoredModel):
    """One reported training step."""

    step: int
    at: int = Field(description="Unix seconds when it was seen.")
    total_steps: int | None = None
    train_loss: float | None = None
    valid_loss: float | None = None
    tokens: int | None = Field(None, description="Training tokens seen so far.")
    learning_rate: float | None = None
    checkpoint: str | None = Field(None, description="The checkpoint written at this step, if one was.")


class Note(StoredModel):
    """A message event of the job (an unsupported integration, a published model)."""

    at: int
    key: str = Field(description="Stable part of the event id.")
    level: Literal["info", "warn", "error"] = "info"
    message: str


class Resume(StoredModel):
    """The run went on from a checkpoint, or was interrupted (platform stop, process died) and starts again."""

    at: int
    from_step: int | None = Field(None, description="The checkpoint's step training went on from.")
    interrupted: bool = Field(False, description="The process ended without a result; it is started again.")


class RunState(StoredModel):
    """The embedded runner's bookkeeping for the process that trains this job."""

    executor: str = Field(
        "local", description="Which executor runs it: `local` (a process) or `ray` (Ray Jobs)."
    )
    ref: str | None = Field(None, description="The executor's id of the run (a Ray Jobs submission id).")
    pid: int | None = None
    create_time: float | None = Field(None, description="The process's start time: tells a reused pid apart.")
    log_path: str = ""
    log_start: int = Field(0, description="Where this attempt's output begins in the log.")
    log_offset: int = Field(0, description="How far the runner has read the log.")
    attempts: int = Field(0, description="Times the process was started.")
    failures: int = Field(0, description="Times it ended without a result (not counting platform stops).")


class JobRecord(StoredModel):
    """A stored fine-tuning job (embedded: a SQLite row; cluster: a ``FineTuneJob`` resource)."""

    id: str
    tenant: str
    created_at: int
    model: str = Field(description="The base model id.")
    training_file: str
    validation_file: str | None = None
    evaluation_file: str | None = Field(
        None, description="The `evals` file the new version is measured on before it goes live (promotion)."
    )
    suffix: str | None = None
    seed: int
    hyperparameters: Hyperparameters
    options: AdeptOptions
    metadata: dict[str, str] | None = None
    adapter: str = Field(description="The adapter the job publishes: the fine-tuned model's name.")
    config: dict[str, Any] = Field(default_factory=dict, description="The training job config it runs.")
    status: JobStatus = "validating_files"
    queued_at: int | None = None
    started_at: int | None = None
    finished_at: int | None = None
    fine_tuned_model: str | None = None
    adapter_version: str | None = Field(None, description="The version of `adapter` the job published.")
    trained_tokens: int | None = None
    error: JobError | None = None
    history: list[StepRecord] = Field(default_factory=list)
    resumes: list[Resume] = Field(default_factory=list)
    notes: list[Note] = Field(default_factory=list, description="Events of the job that are not steps.")
    finetuned_from: str | None = Field(
        None, description="The tenant's adapter version training started from."
    )
    evaluation: AdapterEvaluation | None = Field(
        None,
        description="How the published version measured for eval-gated promotion (jobs with an evaluation file).",
    )
    cancel_requested: bool = False
    run: RunState = Field(default_factory=RunState)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    def tokens_trained(self) -> int:
        """Tokens trained so far: the final count, else the last reported one."""
        if self.trained_tokens is not None:
            return self.trained_tokens
        return max((h.tokens or 0 for h in self.history), default=0)

    def record_step(self, step: StepRecord) -> None:
        """Add (or, for a step re-run after a resume, replace) a reported step."""
        kept = [h for h in self.history if h.step != step.step]
        kept.append(step)
        kept.sort(key=lambda h: h.step)
        self.history = kept[-MAX_HISTORY:]


def new_job_id() -> str:
    return f"ftjob-{uuid.uuid4().hex[:24]}"


def job_not_found(job_id: str) -> NotFound:
    # The same words for "absent" and "another tenant's": a reply must not reveal who owns what.
    return NotFound(
        f"Could not find fine-tuning job {job_id!r}",
        code="fine_tuning_job_not_found",
        param="fine_tuning_job_id",
    )


def check_suffix(suffix: str | None) -> str | None:
    """The suffix, lowercased, if it can be part of a model name; InvalidRequest otherwise."""
    if suffix is None or suffix == "":
        return None
    value = suffix.strip().lower()
    if len(value) > MAX_SUFFIX_CHARS or not SUFFIX_RE.fullmatch(value) or ".." in value:
        raise InvalidRequest(
            f"suffix {suffix!r} cannot be part of a model name: use up to {MAX_SUFFIX_CHARS} letters, digits, "
            "'-', '_' or '.', starting and ending with a letter or digit",
            param="suffix",
        )
    return value


def adapter_name(short_id: str, suffix: str | None) -> str:
    """``ft-<suffix>-<8 hex>`` (or ``ft-<8 hex>``): a valid adapter name, unique per job."""
    if not suffix:
        return f"{FINE_TUNED_PREFIX}{short_id}"
    cut = suffix[:_ADAPTER_SUFFIX_CHARS].rstrip("-_.")
    return f"{FINE_TUNED_PREFIX}{cut}-{short_id}"


def short_job_id(job_id: str) -> str:
    return job_id.removeprefix("ftjob-")[:8]


def fine_tuned_model_name(job_id: str, suffix: str | None) -> str:
    """The adapter a job publishes (see ``adapter_name``)."""
    return adapter_name(short_job_id(job_id), suffix)


def openai_model_name(base: str, tenant: str, suffix: str | None, job_id: str) -> str:
    """``ft:<base>:<tenant>:<suffix>:<8 hex>``: the job's ``fine_tuned_model``, in OpenAI's shape."""
    return f"ft:{base}:{tenant}:{suffix or ''}:{short_job_id(job_id)}"


_SHORT_ID_RE = re.compile(r"^[0-9a-f]{8}$")


def adapter_of_fine_tuned_model(tenant: str, model: str) -> str | None:
    """The adapter name an ``ft:<base>:<owner>:<suffix>:<id>`` model stands for; None when ``model`` is
    not of that shape or not ``tenant``'s (the caller then says "not found", as for anything absent)."""
    if not model.startswith("ft:"):
        return None
    parts = model[3:].rsplit(":", 3)
    if len(parts) != 4:
        return None
    _base, owner, suffix, short = parts
    if owner != tenant or not _SHORT_ID_RE.fullmatch(short):
        return None
    if suffix and (len(suffix) > MAX_SUFFIX_CHARS or not SUFFIX_RE.fullmatch(suffix)):
        return None
    return adapter_name(short, suffix or None)


# -- the state machine -----------------------------------------------------------------------------
_NEXT: dict[str, frozenset[str]] = {
    "validating_files": frozenset({"queued", "failed", "cancelled"}),
    "queued": frozenset({"running", "failed", "cancelled"}),
    "running": frozenset({"queued", "succeeded", "failed", "cancelled"}),  # queued: interrupted, runs again
}


def can_advance(r: JobRecord, status: str) -> bool:
    return status in _NEXT.get(r.status, frozenset())


def advance(r: JobRecord, status: str, *, error: JobError | None = None, at: int | None = None) -> JobRecord:
    """Move ``r`` to ``status`` (the one place a job's status changes), stamping the times OpenAI reports.

    Raises:
        InvalidRequest: not a move the state machine allows (a finished job never changes again).
    """
    if not can_advance(r, status):
        if status == "cancelled":
            raise InvalidRequest(
                f"fine-tuning job {r.id} has already {r.status}; only unfinished jobs can be cancelled",
                code="job_not_cancellable",
                param="fine_tuning_job_id",
            )
        raise InvalidRequest(
            f"fine-tuning job {r.id} is {r.status}; it cannot become {status}",
            code="invalid_job_state",
            param="fine_tuning_job_id",
        )
    t = at or now()
    if status == "queued":
        r.queued_at = r.queued_at or t
        if r.status == "running":
            r.resumes.append(Resume(at=t, interrupted=True))
            r.run.pid, r.run.create_time = None, None
    elif status == "running":
        r.started_at = r.started_at or t
    else:
        r.finished_at = t
        if status == "cancelled":
            r.cancel_requested = True
        if status == "failed":
            r.error = error or JobError(code="training_failed", message="training failed")
    r.status = status  # type: ignore[assignment]
    return r


def now() -> int:
    return int(time.time())


# -- derived views ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class JobEvent:
    """One event of a job (``fine_tuning.job.event``)."""

    id: str
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    type: Literal["message", "metrics"] = "message"
    data: dict[str, Any] | None = None


@dataclass(frozen=True)
class JobCheckpoint:
    """A checkpoint that is a model the tenant can use (``fine_tuning.job.checkpoint``)."""

    id: str
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    step_number: int
    metrics: dict[str, float]


def _metrics_message(h: StepRecord) -> str:
    text = f"Step {h.step}" + (f"/{h.total_steps}" if h.total_steps else "") + ":"
    if h.train_loss is not None:
        text += f" training loss={h.train_loss:.4f}"
    if h.valid_loss is not None:
        text += f", validation loss={h.valid_loss:.4f}"
    return text


def job_events(r: JobRecord) -> list[JobEvent]:
    """The job's events, newest first, each with an id that never changes."""
    key = r.id.removeprefix("ftjob-")
    items: list[tuple[int, int, int, JobEvent]] = []

    def add(at: int | None, order: int, what: str, level: Any, message: str, **kw: Any) -> None:
        if at is not None:
            seq = kw.pop("seq", 0)
            items.append((at, order, seq, JobEvent(f"ftevent-{key}-{what}", at, level, message, **kw)))

    add(r.created_at, 0, "created", "info", f"Created fine-tuning job: {r.id}")
    files = r.training_file + (f" and {r.validation_file}" if r.validation_file else "")
    add(r.queued_at, 1, "validated", "info", f"Validated training files: {files}; job queued")
    add(r.started_at, 2, "started", "info", "Fine-tuning job started")
    for i, resume in enumerate(r.resumes):
        if resume.interrupted:
            message = "Training was interrupted; it starts again from its latest checkpoint"
            add(resume.at, 3, f"interrupted{i}", "warn", message)
        else:
            add(
                resume.at,
                3,
                f"resumed{i}",
                "info",
                f"Training resumed from the checkpoint at step {resume.from_step}",
            )
    for note in r.notes:  # said at create (integrations), or with the result (the published adapter)
        add(note.at, 1 if note.key.startswith("integration") else 5, note.key, note.level, note.message)
    for h in r.history:
        data: dict[str, Any] = {"step": h.step}
        for name in ("total_steps", "train_loss", "valid_loss", "tokens", "learning_rate", "checkpoint"):
            if getattr(h, name) is not None:
                data[name] = getattr(h, name)
        add(h.at, 4, f"step{h.step}", "info", _metrics_message(h), type="metrics", data=data, seq=h.step)
    if r.status == "succeeded":
        add(r.finished_at, 5, "model", "info", f"New fine-tuned model created: {r.fine_tuned_model}")
        add(r.finished_at, 6, "succeeded", "info", "The job has successfully completed")
    elif r.status == "failed":
        message = r.error.message if r.error else "The job failed"
        add(r.finished_at, 5, "failed", "error", f"The job failed: {message}")
    elif r.status == "cancelled":
        add(r.finished_at, 5, "cancelled", "info", "The job was cancelled")
    items.sort(key=lambda t: (t[0], t[1], t[2]))
    return [t[3] for t in reversed(items)]


def job_checkpoints(r: JobRecord) -> list[JobCheckpoint]:
    """Checkpoints that are usable models, newest first: the final one of a succeeded job.

    Intermediate checkpoints exist in training storage for resuming, but only the final one is
    published as a model, so only it is listed (a checkpoint here is always a model to chat with).
    """
    if r.status != "succeeded" or not r.fine_tuned_model:
        return []
    last = r.history[-1] if r.history else None
    metrics: dict[str, float] = {}
    if last is not None:
        metrics["step"] = float(last.step)
        if last.train_loss is not None:
            metrics["train_loss"] = last.train_loss
        if last.valid_loss is not None:
            metrics["valid_loss"] = last.valid_loss
    # Eval-gated promotion's measurements of this model, beside OpenAI's loss metrics (``eval_<metric>``).
    if r.evaluation is not None:
        for name, value in sorted(r.evaluation.metrics.items()):
            metrics[f"eval_{name}"] = float(value)
        if r.evaluation.against_score is not None:
            metrics[f"eval_{r.evaluation.metric}_active"] = float(r.evaluation.against_score)
        metrics["eval_promoted"] = 1.0 if r.evaluation.promoted else 0.0
    return [
        JobCheckpoint(
            id=f"ftckpt-{r.id.removeprefix('ftjob-')}-final",
            created_at=r.finished_at or r.created_at,
            fine_tuned_model_checkpoint=r.fine_tuned_model,
            fine_tuning_job_id=r.id,
            step_number=last.step if last else 0,
            metrics=metrics,
        )
    ]


def page_after(items: list[Any], after: str | None, limit: int, what: str) -> tuple[list[Any], bool]:
    """``limit`` items following the one whose ``id`` is ``after`` (OpenAI cursor paging), and whether more follow."""
    start = 0
    if after:
        ids = [i.id for i in items]
        if after not in ids:
            raise InvalidRequest(f"after: no {what} {after!r} in this list", param="after")
        start = ids.index(after) + 1
    page = items[start : start + limit]
    return page, start + limit < len(items)
