"""Wire models of the files and fine-tuning APIs, both ways, shaped as the ``openai`` package types them.

Responses follow ``openai.types.FileObject``, ``FileDeleted``, ``fine_tuning.FineTuningJob``,
``FineTuningJobEvent`` and ``jobs.FineTuningJobCheckpoint`` field for field (a unit test parses
each with them); lists are OpenAI's cursor pages (``data``, ``has_more``; the next page starts
``after`` the last id). Requests are strict: an unknown field is a 400 naming it, and what
Adept cannot do (DPO, reinforcement) is refused rather than ignored; ``integrations`` (W&B) are
accepted and reported as unsupported in the job's events.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from adept.errors import ErrorInfo
from services.gateway.protocol import WireModel, omitted

# -- files ---------------------------------------------------------------------------------------


class FileObject(BaseModel):
    """``GET /v1/files/{file_id}``: a stored file."""

    id: str
    object: Literal["file"] = "file"
    bytes: int = Field(description="Size in bytes.")
    created_at: int = Field(description="Unix seconds.")
    filename: str
    purpose: Literal["fine-tune", "evals", "fine-tune-results"]
    status: Literal["processed"] = Field(
        "processed", description="Always `processed`: files are validated before they are stored."
    )
    status_details: str | None = omitted("Unused (validation problems are the upload's 400 error).")


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    has_more: bool = False
    first_id: str | None = None
    last_id: str | None = None


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


class LineError(BaseModel):
    """One bad line of an upload."""

    line: int = Field(description="Line number, from 1.")
    reason: str


class FileValidationErrorResponse(BaseModel):
    """A refused upload: the error, and every bad line (up to 1000) in ``errors``."""

    error: ErrorInfo
    errors: list[LineError]


# -- fine-tuning jobs: requests ------------------------------------------------------------------


class HyperparametersRequest(WireModel):
    """What a job may ask for; ``"auto"`` lets the platform choose."""

    n_epochs: Literal["auto"] | int | None = Field(None, description="Passes over the training file.")
    batch_size: Literal["auto"] | int | None = Field(None, description="Sequences per optimizer step.")
    learning_rate_multiplier: Literal["auto"] | float | None = Field(
        None, description="Times the platform's base learning rate."
    )

    @field_validator("n_epochs", "batch_size")
    @classmethod
    def _positive_int(cls, v: Any) -> Any:
        if isinstance(v, bool) or (isinstance(v, int) and v < 1):
            raise ValueError("must be 'auto' or an integer >= 1")
        return v

    @field_validator("learning_rate_multiplier")
    @classmethod
    def _positive_float(cls, v: Any) -> Any:
        if isinstance(v, bool) or (isinstance(v, int | float) and not 0 < v <= 100):
            raise ValueError("must be 'auto' or a number in (0, 100]")
        return v


class SupervisedRequest(WireModel):
    hyperparameters: HyperparametersRequest | None = None


class AdeptMethodRequest(WireModel):
    """Adept's extension of ``method``: the adapter's shape and the training sequence length."""

    lora_rank: int | None = Field(None, ge=1, description="LoRA rank r (default: the platform's).")
    lora_alpha: float | None = Field(None, gt=0, description="LoRA alpha (default: twice the rank).")
    qlora: bool = Field(False, description="Train on a 4-bit (NF4) base: QLoRA.")
    max_seq_length: int | None = Field(None, ge=16, description="Tokens per training sequence.")


class MethodRequest(WireModel):
    type: Literal["supervised", "dpo", "reinforcement"] = Field(description="Only `supervised` is supported.")
    supervised: SupervisedRequest | None = None
    dpo: dict[str, Any] | None = Field(None, description="Not supported.")
    reinforcement: dict[str, Any] | None = Field(None, description="Not supported.")
    adept: AdeptMethodRequest | None = Field(None, description="Adept extension: LoRA rank/alpha, QLoRA.")


class FineTuningJobCreateRequest(WireModel):
    """``POST /v1/fine_tuning/jobs``."""

    model: str = Field(
        min_length=1,
        max_length=256,
        description="The served base model, or one of your fine-tuned models (training starts from its weights).",
    )
    training_file: str = Field(min_length=1, max_length=128, description="Id of a `fine-tune` file.")
    validation_file: str | None = Field(None, max_length=128, description="Id of a `fine-tune` file.")
    suffix: str | None = Field(None, max_length=64, description="Part of the fine-tuned model's name.")
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="Reproducibility seed (random if absent).")
    hyperparameters: HyperparametersRequest | None = Field(
        None, description="Deprecated by OpenAI in favour of `method.supervised.hyperparameters`."
    )
    method: MethodRequest | None = None
    metadata: dict[str, str] | None = Field(None, description="Up to 16 key-value pairs, echoed back.")
    integrations: list[dict[str, Any]] | None = Field(
        None, max_length=16, description="Accepted; not supported: the job's events say so."
    )
    evaluation_file: str | None = Field(
        None,
        max_length=128,
        description="Adept extension: id of an `evals` file (`adept eval` questions). The new adapter "
        "version is published inactive, measured against the live one on it, and made live only if "
        "it is not worse by more than the platform's promotion margin; the job's events say why.",
    )

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is not None and (len(v) > 16 or any(len(k) > 64 or len(val) > 512 for k, val in v.items())):
            raise ValueError("at most 16 keys of up to 64 characters, values of up to 512")
        return v


# -- fine-tuning jobs: responses ------------------------------------------------------------------


class JobErrorWire(BaseModel):
    code: str
    message: str
    param: str | None = None


class HyperparametersWire(BaseModel):
    batch_size: int
    learning_rate_multiplier: float
    n_epochs: int


class AdeptMethodWire(BaseModel):
    lora_rank: int
    lora_alpha: float
    qlora: bool
    max_seq_length: int


class SupervisedWire(BaseModel):
    hyperparameters: HyperparametersWire


class MethodWire(BaseModel):
    type: Literal["supervised"] = "supervised"
    supervised: SupervisedWire
    adept: AdeptMethodWire = Field(description="Adept extension: the adapter's shape.")


class FineTuningJob(BaseModel):
    """``fine_tuning.job``."""

    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobErrorWire | None = Field(None, description="Why a `failed` job failed.")
    fine_tuned_model: str | None = Field(
        None, description="The model to chat with (`/v1/chat/completions` `model`) once succeeded."
    )
    finished_at: int | None = None
    hyperparameters: HyperparametersWire
    model: str = Field(description="The base model.")
    organization_id: str = Field(description="The tenant.")
    result_files: list[str] = Field(default_factory=list)
    seed: int
    status: Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]
    trained_tokens: int | None = None
    training_file: str
    validation_file: str | None = None
    estimated_finish: int | None = None
    integrations: list[dict[str, Any]] | None = None
    metadata: dict[str, str] | None = None
    method: MethodWire
    suffix: str | None = omitted("Adept extension: the suffix the model name carries.")
    evaluation_file: str | None = omitted("Adept extension: the `evals` file promotion is measured on.")


class FineTuningJobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJob]
    has_more: bool = False


class FineTuningJobEvent(BaseModel):
    """``fine_tuning.job.event``."""

    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    type: Literal["message", "metrics"] = "message"
    data: dict[str, Any] | None = None


class FineTuningJobEventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJobEvent]
    has_more: bool = False


class CheckpointMetrics(BaseModel):
    step: float | None = None
    train_loss: float | None = None
    valid_loss: float | None = None


class FineTuningJobCheckpoint(BaseModel):
    """``fine_tuning.job.checkpoint``: a checkpoint that is a usable model."""

    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str = Field(description="The model to chat with.")
    fine_tuning_job_id: str
    metrics: CheckpointMetrics
    step_number: int


class ModelDeleted(BaseModel):
    """``DELETE /v1/models/{model}``: a fine-tuned model is gone."""

    id: str
    object: Literal["model"] = "model"
    deleted: bool = True


class FineTuningJobCheckpointList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJobCheckpoint]
    has_more: bool = False
    first_id: str | None = None
    last_id: str | None = None
