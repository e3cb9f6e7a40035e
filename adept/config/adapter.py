"""Adapter manifests: what we store next to a PEFT adapter, and adapter names."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from pydantic import Field

from adept.config.base import StoredModel

ADAPTER_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9_.]{0,61}[a-z0-9])?$")
VERSION_RE = re.compile(r"^v[0-9]{1,9}$")


def check_adapter_name(name: str) -> str:
    if not isinstance(name, str) or not ADAPTER_NAME_RE.fullmatch(name) or ".." in name:
        raise ValueError(
            f"invalid adapter name {name!r}: use 1-63 lowercase letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return name


class AdapterEvaluation(StoredModel):
    """How a version measured when it was considered for promotion (stored in its manifest)."""

    metric: str = Field(description="The metric promotion compares (`combined`, `f1`, ...).")
    score: float | None = Field(description="This version's mean of `metric` on the evaluation file.")
    metrics: dict[str, float] = Field(
        default_factory=dict, description="Every metric's mean for this version."
    )
    against: str | None = Field(None, description="The version that served when this one was evaluated.")
    against_score: float | None = Field(None, description="That version's `metric` on the same file.")
    margin: float = Field(
        0.0, description="How much worse than `against` this version could be and still go live."
    )
    promoted: bool = Field(description="Whether this version went live.")
    reason: str = Field(description="Why it went live or stayed inactive, in one sentence.")
    evaluation_file: str | None = Field(None, description="The evaluation set (a file id or path).")
    evaluated_at: str = Field(
        default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"), description="ISO-8601 UTC."
    )


class AdapterManifest(StoredModel):
    """``manifest.json`` beside ``adapter_config.json`` / ``adapter_model.safetensors``.

    Stored data: unknown keys are tolerated (with a warning) so older readers keep working.
    """

    tenant: str = Field(description="Owning tenant.")
    name: str = Field(description="Adapter name, unique within the tenant.")
    version: str = Field("", description="Version label `v<N>`, assigned by the registry at publish.")
    base_model: str = Field(
        description="Base model id the adapter was trained on (as in the adapter_config)."
    )
    method: str = Field("lora", description="`lora` or `qlora`.")
    rank: int | None = Field(None, description="LoRA rank r.")
    alpha: float | None = Field(None, description="LoRA alpha.")
    target_modules: list[str] = Field(default_factory=list, description="Modules the adapter wraps.")
    dataset_hash: str | None = Field(None, description="sha256 of the training data file(s).")
    steps: int | None = Field(None, description="Optimizer steps taken.")
    tokens_seen: int | None = Field(None, description="Training tokens processed.")
    duration_s: float | None = Field(None, description="Wall-clock training time.")
    metrics: dict[str, Any] = Field(
        default_factory=dict, description="Final train/eval loss, perplexity, ..."
    )
    created_at: str = Field(
        default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"), description="ISO-8601 UTC."
    )
    description: str = Field("", description="Free text.")
    evaluation: AdapterEvaluation | None = Field(
        None, description="How this version measured against the live one when it was published (promotion)."
    )
    source: str | None = Field(
        None,
        description="What this version was published from (an Adapter resource's source); publishing the same "
        "source again returns this version instead of a new one.",
    )
