"""Cluster mode: each job is a ``FineTuneJob`` resource; its record rides in one annotation.

``metadata.name`` is the job id, labelled with its tenant, so ``kubectl get ftj`` and
``GET /v1/fine_tuning/jobs`` show the same jobs. The spec carries what ``kubectl`` users write
(tenant, adapter, the training config, ``cancel``); the whole ``JobRecord`` (status, steps,
error, the run's handle) is the ``adept.dev/job`` annotation, written only through ``modify``
(optimistic concurrency on ``resourceVersion``: a gateway cancelling and the operator reporting
never overwrite each other). The operator mirrors the record into ``status`` for ``kubectl``.
A resource made with ``kubectl`` has no record until the operator adopts it
(``FineTuning.create_from_config``-style: ``adopt``).

Limits hold across gateway replicas (and the operator) through the tenant's ``Tenant`` resource,
written with optimistic concurrency (``resourceVersion``): a new job is admitted by reading the
Tenant, counting the tenant's jobs plus those reserved on it but not yet created, and writing its
own reservation with the ``resourceVersion`` it read — a replica that raced it gets a conflict and
counts again, now seeing the winner's reservation. The job's resource is created only after its
reservation is written. Uploaded files are counted the same way: a ledger of ``{file id: bytes}``
on the Tenant, changed only by a write that names the ``resourceVersion`` it read.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

from adept.errors import Conflict, NotFound, StorageError
from adept.finetuning.jobs import JobRecord, job_not_found
from adept.finetuning.store import Admit, FileAdmit, check_job_id
from adept.kube import API_VERSION, Kube

PLURAL = "finetunejobs"
LABEL_TENANT = "adept.dev/tenant"  # as adept.tenancy.kubernetes labels a tenant's objects
LABEL_SOURCE = "adept.dev/source"
ANNOTATION = "adept.dev/job"
_RETRIES = 8
TENANTS = "tenants"
RESERVATIONS = "adept.dev/finetuning-reservations"  # on the Tenant: {job id: unix time} of jobs being created
FILES = "adept.dev/finetuning-files"  # on the Tenant: {file id: bytes}, what the file limits count
# A reservation whose resource never appeared (its replica died between the two writes) stops
# counting after this long; a created job is counted from its resource instead.
RESERVATION_S = 300
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

    def __init__(self, namespace: str, *, kube: Kube | None = None, clock: Any = time.time) -> None:
        self.namespace = namespace
        self.kube = kube or Kube()
        self.clock = clock

    def _record(self, obj: dict[str, Any]) -> JobRecord | None:
        return record_of(obj)

    # -- the tenant's ledger (optimistic concurrency on its Tenant resource) -------------------------
    def _update_tenant(self, tenant: str, change: Callable[[dict[str, str]], dict[str, str]]) -> None:
        """Read the Tenant, ``change(annotations)`` -> the annotations to write (or raise to refuse), and
        write them naming the ``resourceVersion`` read; on a conflict, all of it again."""
        for _ in range(_RETRIES):
            obj = self.kube.get(self.namespace, TENANTS, tenant)
            if obj is None or (obj.get("metadata") or {}).get("deletionTimestamp"):
                raise NotFound(f"tenant {tenant!r} does not exist", code="tenant_not_found")
            meta = obj["metadata"]
            notes = change(dict(meta.get("annotations") or {}))
            body = {"metadata": {"resourceVersion": meta.get("resourceVersion"), "annotations": notes}}
            try:
                self.kube.patch(self.namespace, TENANTS, tenant, body)
            except Conflict:
                continue  # another replica (or anyone) wrote the Tenant meanwhile: count again
            return
        raise StorageError(
            f"tenant {tenant}: its Tenant resource kept changing under {_RETRIES} updates; try again"
        )

    def _reserve(self, record: JobRecord, admit: Admit | None) -> None:
        """Admit ``record`` against the tenant's jobs and reservations, and reserve its slot, atomically."""

        def change(notes: dict[str, str]) -> dict[str, str]:
            now = int(self.clock())
            jobs = self.list(record.tenant)  # read after the Tenant: every earlier reservation is known
            known = {j.id for j in jobs}
            pending = {
                k: int(v)
                for k, v in _ledger(notes.get(RESERVATIONS)).items()
                if k not in known and k != record.id and now - int(v) < RESERVATION_S
            }
            if admit is not None:
                admit(jobs + [_placeholder(record, k, v) for k, v in pending.items()])
            return {RESERVATIONS: json.dumps({**pending, record.id: now}, sort_keys=True)}

        self._update_tenant(record.tenant, change)

    def create(self, record: JobRecord, admit: Admit | None = None) -> JobRecord:
        self._reserve(record, admit)  # the limits hold for every replica: see the module docstring
        self.kube.create(self.namespace, PLURAL, job_resource(record, self.namespace))
        return record

    def reserve_file(self, tenant: str, file_id: str, size: int, admit: FileAdmit | None = None) -> None:
        """Count a file for ``tenant`` (before its bytes are stored), ``admit(files, bytes)`` first, atomically."""

        def change(notes: dict[str, str]) -> dict[str, str]:
            files = _ledger(notes.get(FILES))
            if admit is not None:
                admit(len(files), sum(int(v) for v in files.values()))
            return {FILES: json.dumps({**files, file_id: int(size)}, sort_keys=True)}

        self._update_tenant(tenant, change)

    def release_file(self, file_id: str, tenant: str | None = None) -> None:
        if tenant is None:
            return  # every caller names the tenant; a ledger entry without one cannot be found

        def change(notes: dict[str, str]) -> dict[str, str]:
            files = _ledger(notes.get(FILES))
            files.pop(file_id, None)
            return {FILES: json.dumps(files, sort_keys=True)}

        try:
            self._update_tenant(tenant, change)
        except NotFound:
            pass  # the tenant went, and its ledger with it

    def release_tenant_files(self, tenant: str) -> None:
        try:
            self._update_tenant(tenant, lambda notes: {FILES: "{}"})
        except NotFound:
            pass

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
        """Give a resource made with ``kubectl`` its record (once: an adopted resource keeps its own),
        counted against the tenant's limits as a created job is."""
        self._reserve(record, admit)
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


def _ledger(raw: str | None) -> dict[str, Any]:
    """A ledger annotation (a JSON object); an unreadable one counts as empty rather than blocking the tenant."""
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _placeholder(record: JobRecord, job_id: str, at: int) -> JobRecord:
    """A reserved job whose resource is not there yet, as the limits count it: unfinished, created at ``at``."""
    return record.model_copy(
        update={
            "id": job_id,
            "created_at": at,
            "status": "validating_files",
            "history": [],
            "trained_tokens": None,
        }
    )
