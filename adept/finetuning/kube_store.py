"""Cluster mode: each job is a ``FineTuneJob`` resource; its record rides in one annotation.

``metadata.name`` is the job id, labelled with its tenant, so ``kubectl get ftj`` and
``GET /v1/fine_tuning/jobs`` show the same jobs. The spec carries what ``kubectl`` users write
(tenant, adapter, the training config, ``cancel``); the whole ``JobRecord`` (status, steps,
error, the run's handle) is the ``adept.dev/job`` annotation, written only through ``modify``
(optimistic concurrency on ``resourceVersion``: a gateway cancelling and the operator reporting
never overwrite each other). The operator mirrors the record into ``status`` for ``kubectl``.
A resource made with ``kubectl`` has no record until the operator adopts it
(``FineTuning.create_from_config``-style: ``adopt``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from adept.errors import Conflict, NotFound, StorageError
from adept.finetuning.jobs import JobRecord, job_not_found
from adept.finetuning.store import Admit, check_job_id
from adept.kube import API_VERSION, Kube

PLURAL = "finetunejobs"
LABEL_TENANT = "adept.dev/tenant"  # as adept.tenancy.kubernetes labels a tenant's objects
LABEL_SOURCE = "adept.dev/source"
ANNOTATION = "adept.dev/job"
_RETRIES = 8
_RESOURCE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def job_resource(record: JobRecord, namespace: str) -> dict[str, Any]:
    """The ``FineTuneJob`` resource for a new job."""
    config = {k: v for k, v in record.config.items() if k not in ("tenant", "adapter")}
    return {
        "apiVersion": API_VERSION,
        "kind": "FineTuneJob",
        "metadata": {
            "name": record.id,
            "namespace": namespace,
            "labels": {LABEL_TENANT: record.tenant, LABEL_SOURCE: "api"},
            "annotations": {ANNOTATION: _dump(record)},
        },
        "spec": {"tenant": record.tenant, "adapter": record.adapter, "config": config},
    }


def record_of(obj: dict[str, Any]) -> JobRecord | None:
    """The job record a ``FineTuneJob`` resource holds; None for one not (yet) adopted."""
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    raw = (meta.get("annotations") or {}).get(ANNOTATION)
    if not raw:
        return None
    try:
        record = JobRecord.model_validate_json(raw)
    except ValueError:
        return None
    if spec.get("cancel") and record.active:
        record.cancel_requested = True  # `kubectl patch ... spec.cancel`: the driver cancels it
    # The spec's config is the one the job runs (a kubectl user may have written it).
    record.config = {**(spec.get("config") or {}), "tenant": record.tenant, "adapter": record.adapter}
    return record


def _dump(record: JobRecord) -> str:
    return record.model_dump_json(exclude={"config"})


class KubernetesJobStore:
    """Jobs as ``FineTuneJob`` resources in one namespace (every gateway replica sees the same)."""

    def __init__(self, namespace: str, *, kube: Kube | None = None) -> None:
        self.namespace = namespace
        self.kube = kube or Kube()

    def _record(self, obj: dict[str, Any]) -> JobRecord | None:
        return record_of(obj)

    def create(self, record: JobRecord, admit: Admit | None = None) -> JobRecord:
        # Counted from the resources: replicas racing the last slot may both pass (no transaction
        # spans a list and a create on the API server).
        if admit is not None:
            admit(self.list(record.tenant))
        self.kube.create(self.namespace, PLURAL, job_resource(record, self.namespace))
        return record

    def _object(self, job_id: str) -> dict[str, Any]:
        # Not check_job_id: a resource made with kubectl keeps the name it was given.
        obj = self.kube.get(self.namespace, PLURAL, job_id)
        if obj is None:
            raise job_not_found(job_id)
        return obj

    def get(self, tenant: str, job_id: str) -> JobRecord:
        # A FineTuneJob made with kubectl is the job named as its resource (listed by the API: retrievable too).
        if not (isinstance(job_id, str) and _RESOURCE_NAME.fullmatch(job_id)):
            check_job_id(job_id)
        obj = self._object(job_id)
        labels = (obj.get("metadata") or {}).get("labels") or {}
        record = self._record(obj)
        if record is None or labels.get(LABEL_TENANT) != tenant or record.tenant != tenant:
            raise job_not_found(job_id)
        return record

    def _all(self, selector: str | None = None) -> list[JobRecord]:
        objects, _ = self.kube.list_versioned(self.namespace, PLURAL, selector)
        return [r for r in map(self._record, objects) if r is not None]

    def list(self, tenant: str) -> list[JobRecord]:
        records = [r for r in self._all(f"{LABEL_TENANT}={tenant}") if r.tenant == tenant]
        return sorted(records, key=lambda r: (r.created_at, r.id), reverse=True)

    def active(self) -> list[JobRecord]:
        return sorted((r for r in self._all() if r.active), key=lambda r: (r.created_at, r.id))

    def recent(self, limit: int) -> list[JobRecord]:
        return sorted(self._all(), key=lambda r: (r.created_at, r.id), reverse=True)[:limit]

    def finished_before(self, t: int) -> list[JobRecord]:
        return [r for r in self._all() if not r.active and (r.finished_at or r.created_at) < t]

    def modify(self, job_id: str, change: Callable[[JobRecord], None]) -> JobRecord:
        for _ in range(_RETRIES):
            obj = self._object(job_id)
            record = self._record(obj)
            if record is None:
                raise job_not_found(job_id)
            change(record)
            body: dict[str, Any] = {
                "metadata": {
                    "resourceVersion": obj["metadata"].get("resourceVersion"),
                    "annotations": {ANNOTATION: _dump(record)},
                }
            }
            if record.cancel_requested:
                body["spec"] = {"cancel": True}
            try:
                self.kube.patch(self.namespace, PLURAL, job_id, body)
            except Conflict:
                continue  # changed meanwhile: apply the change to the new version
            return record
        raise StorageError(f"FineTuneJob {job_id}: kept changing under {_RETRIES} updates; try again")

    def adopt(self, obj: dict[str, Any], record: JobRecord, admit: Admit | None = None) -> JobRecord:
        """Give a resource made with ``kubectl`` its record (once: an adopted resource keeps its own)."""
        if admit is not None:
            admit(self.list(record.tenant))
        body = {
            "metadata": {
                "resourceVersion": obj["metadata"].get("resourceVersion"),
                "labels": {LABEL_TENANT: record.tenant, LABEL_SOURCE: "kubectl"},
                "annotations": {ANNOTATION: _dump(record)},
            }
        }
        self.kube.patch(self.namespace, PLURAL, obj["metadata"]["name"], body)
        return record

    def delete(self, job_id: str) -> None:
        try:
            self.kube.delete(self.namespace, PLURAL, job_id)
        except NotFound:
            pass  # deleted meanwhile: gone either way

    def delete_tenant(self, tenant: str) -> list[JobRecord]:
        records = self.list(tenant)
        for r in records:
            self.delete(r.id)  # its finalizer stops the Ray job
        return records

    def close(self) -> None:
        pass
