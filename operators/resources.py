"""Pure functions that build what the operator writes: Secrets, Ray job submissions, Adapter objects,
status conditions. No I/O here, so every one of them is unit-tested directly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from adept.finetuning.jobs import MAX_HISTORY, JobRecord
from adept.kube import API_VERSION
from adept.tenancy.kubernetes import LABEL_TENANT, MANAGED_BY

LABEL_FINETUNEJOB = "adept.dev/finetunejob"
TERMINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})


def now_iso() -> str:
    """RFC 3339 UTC timestamp, second precision (what Kubernetes writes)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- conditions ------------------------------------------------------------------------------------
def build_condition(
    type_: str, status: bool | str, reason: str, message: str, *, generation: int | None, now: str
) -> dict[str, Any]:
    """One Kubernetes-style condition."""
    value = status if isinstance(status, str) else ("True" if status else "False")
    cond: dict[str, Any] = {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message[:2000],
        "lastTransitionTime": now,
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def merge_conditions(
    old: Sequence[Mapping[str, Any]] | None, new: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Replace conditions by type; keep ``lastTransitionTime`` when a condition's status did not change."""
    by_type = {c.get("type"): dict(c) for c in (old or [])}
    for cond in new:
        prev = by_type.get(cond["type"])
        if prev is not None and prev.get("status") == cond["status"] and prev.get("lastTransitionTime"):
            cond = {**cond, "lastTransitionTime": prev["lastTransitionTime"]}
        by_type[cond["type"]] = cond
    order = {"Ready": 0, "Progressing": 1, "Failed": 2}
    return sorted(by_type.values(), key=lambda c: (order.get(c.get("type"), 9), str(c.get("type"))))


def build_phase_status(
    phase: str,
    reason: str,
    message: str,
    *,
    generation: int | None,
    old_conditions: Sequence[Mapping[str, Any]] | None = None,
    now: str | None = None,
) -> dict[str, Any]:
    """Status fragment for a phase: ``ready``, ``progressing`` or ``failed``.

    The three conditions are always written together, so exactly one of them is True and a
    client never has to guess from a missing condition.
    """
    if phase not in ("ready", "progressing", "failed"):
        raise ValueError(f"unknown phase {phase!r}")
    now = now or now_iso()
    conds = [
        build_condition("Ready", phase == "ready", reason, message, generation=generation, now=now),
        build_condition(
            "Progressing", phase == "progressing", reason, message, generation=generation, now=now
        ),
        build_condition("Failed", phase == "failed", reason, message, generation=generation, now=now),
    ]
    status: dict[str, Any] = {"conditions": merge_conditions(old_conditions, conds)}
    if generation is not None:
        status["observedGeneration"] = generation
    return status


def condition_status(status: Mapping[str, Any] | None, type_: str) -> str | None:
    """``"True"``/``"False"``/``"Unknown"`` of one condition, or None if absent."""
    for cond in (status or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return cond.get("status")
    return None


# --- FineTuneJob -----------------------------------------------------------------------------------
_STATE_OF = {
    "validating_files": "PENDING",
    "queued": "PENDING",
    "running": "RUNNING",
    "succeeded": "SUCCEEDED",
    "failed": "FAILED",
    "cancelled": "STOPPED",
}


def _iso(t: int | None) -> str | None:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if t else None


def build_job_status(
    record: JobRecord,
    *,
    generation: int | None,
    old_conditions: Sequence[Mapping[str, Any]] | None = None,
    now: str | None = None,
) -> dict[str, Any]:
    """A FineTuneJob's status: the mirror of its job record (the kernel's; never written apart from it)."""
    state = _STATE_OF[record.status]
    message = ""
    if record.status == "failed" and record.error is not None:
        message = record.error.message
    elif record.status == "cancelled":
        message = "cancelled (spec.cancel)"
    elif record.status == "succeeded" and record.adapter_version:
        message = f"adapter {record.tenant}/{record.adapter}@{record.adapter_version} published"
        promotion = next((n for n in reversed(record.notes) if n.key == "promotion"), None)
        if promotion is not None:  # eval-gated promotion: live or kept inactive, and why
            message += f"; {promotion.message}"
    last = record.history[-1] if record.history else None
    progress: dict[str, Any] = {}
    if last is not None:
        progress["step"] = last.step
        if last.train_loss is not None and math.isfinite(last.train_loss):
            progress["loss"] = last.train_loss
    if record.adapter_version:
        progress["adapter_version"] = record.adapter_version
    status = build_finetune_status(
        state,
        message=message,
        progress=progress,
        generation=generation,
        old_conditions=old_conditions,
        now=now,
    )
    history = []
    for h in record.history[-MAX_HISTORY:]:
        entry: dict[str, Any] = {"step": h.step, "at": _iso(h.at)}
        for key, value in (
            ("totalSteps", h.total_steps),
            ("loss", h.train_loss),
            ("evalLoss", h.valid_loss),
            ("tokens", h.tokens),
            ("checkpoint", h.checkpoint),
        ):
            if value is not None and (not isinstance(value, float) or math.isfinite(value)):
                entry[key] = value  # NaN and infinities are not JSON: the API server would refuse them
        history.append(entry)
    status.update(
        jobId=record.run.ref,
        jobRecord=record.id,
        startedAt=_iso(record.started_at),
        finishedAt=_iso(record.finished_at),
        history=history,
        trainedTokens=record.trained_tokens,
        error=record.error.model_dump() if record.error else None,
        evaluation=record.evaluation.model_dump(mode="json") if record.evaluation is not None else None,
    )
    return status


def build_finetune_status(
    state: str,
    *,
    message: str = "",
    progress: Mapping[str, Any] | None = None,
    generation: int | None,
    old_conditions: Sequence[Mapping[str, Any]] | None = None,
    now: str | None = None,
) -> dict[str, Any]:
    """Status for a Ray job state: PENDING/RUNNING progressing, SUCCEEDED ready, FAILED/STOPPED failed."""
    now = now or now_iso()
    state = state.upper()
    phase, reason = {
        "SUCCEEDED": ("ready", "Succeeded"),
        "FAILED": ("failed", "JobFailed"),
        "STOPPED": ("failed", "JobStopped"),
        "RUNNING": ("progressing", "Running"),
    }.get(state, ("progressing", "Pending"))
    text = message or {"ready": "training finished", "progressing": f"Ray job {state.lower()}"}.get(
        phase, state
    )
    status = build_phase_status(
        phase, reason, text, generation=generation, old_conditions=old_conditions, now=now
    )
    status["state"] = state
    status.update({k: v for k, v in (progress or {}).items() if k in ("step", "loss", "adapter_version")})
    if "adapter_version" in status:
        status["adapterVersion"] = status.pop("adapter_version")
    if state in TERMINAL_STATES:
        status["finishedAt"] = now
    return status


def adapter_object_name(tenant: str, adapter: str) -> str:
    """Kubernetes name of the Adapter resource for ``tenant/adapter`` (DNS-1123 subdomain)."""
    return f"{tenant}-{adapter}".replace("_", "-").lower()[:253]


def build_adapter_object(
    *,
    tenant: str,
    adapter: str,
    version: str,
    namespace: str,
    finetunejob: str,
    base_model: str | None = None,
) -> dict[str, Any]:
    """The Adapter resource a finished FineTuneJob creates (or patches to its new version).

    Not owned by the job: deleting a job's record must not delete the adapter it produced.
    """
    spec: dict[str, Any] = {"tenant": tenant, "name": adapter, "version": version}
    if base_model:
        spec["baseModel"] = base_model
    return {
        "apiVersion": API_VERSION,
        "kind": "Adapter",
        "metadata": {
            "name": adapter_object_name(tenant, adapter),
            "namespace": namespace,
            "labels": {**MANAGED_BY, LABEL_TENANT: tenant, LABEL_FINETUNEJOB: finetunejob},
        },
        "spec": spec,
    }


# --- KnowledgeBase ---------------------------------------------------------------------------------
def kb_document_prefix(kb_name: str) -> str:
    """Document ids of one KnowledgeBase resource start with this, so removal finds exactly its own."""
    return f"{kb_name}/"


def build_kb_status(
    *,
    documents: int,
    chunks: int,
    errors: Sequence[Mapping[str, str]],
    generation: int | None,
    old_conditions: Sequence[Mapping[str, Any]] | None = None,
    now: str | None = None,
) -> dict[str, Any]:
    """Status after a sync: Ready even when some files were skipped (they are listed in ``errors``)."""
    now = now or now_iso()
    skipped = f"; {len(errors)} skipped (see status.errors)" if errors else ""
    msg = f"{documents} documents, {chunks} chunks{skipped}"
    reason = "SyncedWithErrors" if errors else "Synced"
    status = build_phase_status(
        "ready", reason, msg, generation=generation, old_conditions=old_conditions, now=now
    )
    status.update(documents=documents, chunks=chunks, lastSync=now, errors=[dict(e) for e in errors][:100])
    return status
