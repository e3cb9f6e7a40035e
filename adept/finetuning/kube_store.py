"""Cluster mode: each API job is a ``FineTuneJob`` resource, which the operator drives.

Creating a job creates the resource (``metadata.name`` = the job id; labelled with its tenant),
so ``kubectl get ftj`` and ``GET /v1/fine_tuning/jobs`` show the same thing. The request's
fields that have no place in the spec (files, suffix, hyper-parameters as asked) ride in one
annotation; the spec carries the training config the operator submits to the Ray cluster; the
status the operator writes (state, per-step losses, error, trained tokens) is what the API
reports. Cancelling sets ``spec.cancel``; the operator stops the Ray job. Resources created
with ``kubectl`` (no annotation) are the platform team's, never a tenant's.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any

from adept.errors import NotFound
from adept.finetuning.jobs import JobError, JobRecord, StepRecord, job_not_found
from adept.finetuning.store import check_job_id, finished_error
from adept.kube import API_VERSION, Kube

PLURAL = "finetunejobs"
LABEL_TENANT = "adept.dev/tenant"  # as adept.tenancy.kubernetes labels a tenant's objects
LABEL_SOURCE = "adept.dev/source"
ANNOTATION = "adept.dev/api-job"
# What the annotation keeps: the record's fields the spec and status do not carry.
_REQUEST_FIELDS = (
    "id",
    "created_at",
    "model",
    "training_file",
    "validation_file",
    "suffix",
    "seed",
    "hyperparameters",
    "options",
    "metadata",
)


def _epoch(stamp: Any) -> int | None:
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return None


def job_resource(record: JobRecord, namespace: str) -> dict[str, Any]:
    """The ``FineTuneJob`` resource for a new API job."""
    config = {k: v for k, v in record.config.items() if k not in ("tenant", "adapter")}
    request = record.model_dump(mode="json", include=set(_REQUEST_FIELDS))
    return {
        "apiVersion": API_VERSION,
        "kind": "FineTuneJob",
        "metadata": {
            "name": record.id,
            "namespace": namespace,
            "labels": {LABEL_TENANT: record.tenant, LABEL_SOURCE: "api"},
            "annotations": {ANNOTATION: json.dumps(request, separators=(",", ":"))},
        },
        "spec": {"tenant": record.tenant, "adapter": record.adapter, "config": config},
    }


def record_of(obj: dict[str, Any]) -> JobRecord | None:
    """The job record a ``FineTuneJob`` resource stands for; None for resources not made by the API."""
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    raw = (meta.get("annotations") or {}).get(ANNOTATION)
    if not raw:
        return None
    try:
        request = json.loads(raw)
    except ValueError:
        return None
    status = obj.get("status") or {}
    record = JobRecord.model_validate(
        {
            **request,
            "tenant": spec.get("tenant"),
            "adapter": spec.get("adapter"),
            "config": {
                **(spec.get("config") or {}),
                "tenant": spec.get("tenant"),
                "adapter": spec.get("adapter"),
            },
            "cancel_requested": bool(spec.get("cancel")),
        }
    )
    started, finished = _epoch(status.get("startedAt")), _epoch(status.get("finishedAt"))
    for h in status.get("history") or []:
        if isinstance(h, dict) and isinstance(h.get("step"), int):
            record.record_step(
                StepRecord(
                    step=h["step"],
                    at=_epoch(h.get("at")) or started or record.created_at,
                    total_steps=h.get("totalSteps"),
                    train_loss=h.get("loss"),
                    valid_loss=h.get("evalLoss"),
                    tokens=h.get("tokens"),
                )
            )
    state = status.get("state")
    invalid = _failed_condition(status)
    if state in ("PENDING", "RUNNING", "SUCCEEDED", "FAILED", "STOPPED"):
        record.queued_at = started
    if state in ("RUNNING", "SUCCEEDED", "FAILED", "STOPPED") and record.history:
        record.started_at = record.history[0].at
    elif state == "RUNNING":
        record.started_at = started
    if state == "SUCCEEDED":
        record.status, record.finished_at = "succeeded", finished
        record.fine_tuned_model = record.adapter if status.get("adapterVersion") else None
        record.trained_tokens = status.get("trainedTokens") or record.tokens_trained()
    elif state == "FAILED" or (state is None and invalid is not None):
        record.status, record.finished_at = "failed", finished or _epoch(_condition_time(status))
        error = status.get("error") or {}
        record.error = JobError(
            code=str(error.get("code") or ("invalid_job" if invalid is not None else "training_failed")),
            message=str(error.get("message") or invalid or "training failed"),
            param=error.get("param"),
        )
    elif state == "STOPPED" or record.cancel_requested:
        record.status = "cancelled"
        record.finished_at = finished or _epoch(_condition_time(status)) or record.created_at
    elif state == "RUNNING":
        record.status = "running"
    elif state == "PENDING":
        record.status = "queued"
    return record


def _failed_condition(status: dict[str, Any]) -> str | None:
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Failed" and cond.get("status") == "True":
            return str(cond.get("message") or "invalid job")
    return None


def _condition_time(status: dict[str, Any]) -> str | None:
    times = [c.get("lastTransitionTime") for c in status.get("conditions") or [] if c.get("status") == "True"]
    return max((t for t in times if t), default=None)


class KubernetesJobStore:
    """API jobs as ``FineTuneJob`` resources in one namespace (every gateway replica sees the same)."""

    def __init__(self, namespace: str, *, kube: Kube | None = None) -> None:
        self.namespace = namespace
        self.kube = kube or Kube()

    def create(self, record: JobRecord) -> JobRecord:
        self.kube.create(self.namespace, PLURAL, job_resource(record, self.namespace))
        return record

    def _object(self, tenant: str, job_id: str) -> dict[str, Any]:
        obj = self.kube.get(self.namespace, PLURAL, check_job_id(job_id))
        labels = ((obj or {}).get("metadata") or {}).get("labels") or {}
        if (
            obj is None
            or labels.get(LABEL_TENANT) != tenant
            or (obj.get("spec") or {}).get("tenant") != tenant
        ):
            raise job_not_found(job_id)
        return obj

    def get(self, tenant: str, job_id: str) -> JobRecord:
        record = record_of(self._object(tenant, job_id))
        if record is None:
            raise job_not_found(job_id)
        return record

    def list(self, tenant: str) -> list[JobRecord]:
        objects, _ = self.kube.list_versioned(self.namespace, PLURAL, f"{LABEL_TENANT}={tenant}")
        records = [r for r in map(record_of, objects) if r is not None and r.tenant == tenant]
        return sorted(records, key=lambda r: (r.created_at, r.id), reverse=True)

    def cancel(self, tenant: str, job_id: str) -> JobRecord:
        record = self.get(tenant, job_id)
        if not record.active:
            raise finished_error(record)
        obj = self.kube.patch(self.namespace, PLURAL, job_id, {"spec": {"cancel": True}})
        return record_of(obj) or record

    async def purge_tenant(self, tenant: str) -> int:
        return await asyncio.to_thread(self._purge, tenant)

    def _purge(self, tenant: str) -> int:
        objects, _ = self.kube.list_versioned(self.namespace, PLURAL, f"{LABEL_TENANT}={tenant}")
        count = 0
        for obj in objects:
            if (obj.get("spec") or {}).get("tenant") == tenant:
                try:
                    self.kube.delete(
                        self.namespace, PLURAL, obj["metadata"]["name"]
                    )  # its finalizer stops Ray
                    count += 1
                except NotFound:
                    continue  # deleted meanwhile
        return count
