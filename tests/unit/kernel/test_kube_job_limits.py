"""Cluster mode: the fine-tuning limits hold for every gateway replica (``adept.finetuning.kube_store``).

Two replicas are two job owners, each with its own Kubernetes client and ``KubernetesJobStore``, over
one API server: kmock's emulator (the one mock: no kube-apiserver runs here), extended with what a
real API server does and kmock does not, ``resourceVersion``: every write gets a new one, and a
write naming a stale one is refused with 409. The race is forced, not hoped for: each replica's
first admission waits at a barrier until the other has read the same Tenant and counted the same
jobs, so both would pass a check that is not atomic.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import uuid
from pathlib import Path

import pytest

from adept.config.finetuning import FineTuningConfig
from adept.config.platform import PlatformConfig
from adept.config.tenant import TenantQuotas, TenantSpec
from adept.errors import PermissionDenied, RateLimited
from adept.finetuning.kube_store import FILES, KubernetesJobStore
from adept.finetuning.service import JobRequest

NS = "adept-test"
CHAT = b'{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n'


def _versioned_emulator():
    """The operator tests' emulator, with resourceVersion checked and bumped on every write."""
    from kmock._internal import enums
    from kmock._internal.k8s import KubernetesObjectConflictError

    from tests.integration.operators.conftest import Emulator, _emulator_class

    versions = itertools.count(2)
    base = _emulator_class()

    class Versioned(base):  # type: ignore[misc, valid-type]
        async def _handle(self, request):
            writes = (enums.action.CREATE, enums.action.UPDATE)
            if request.resource is None or request.action not in writes or not isinstance(request.data, dict):
                return await super()._handle(request)
            if not hasattr(self, "_rv_lock"):
                self._rv_lock = asyncio.Lock()
            async with self._rv_lock:  # check and write as one step, as the API server's storage does
                meta = request.data.setdefault("metadata", {})
                if request.action == enums.action.UPDATE:
                    key = (request.resource, request.namespace, request.name)
                    stored = self._objects[key] if key in self._objects else None  # noqa: SIM401 (no .get)
                    wanted = meta.get("resourceVersion")
                    live = stored is not None and not stored.deleted
                    if live and wanted not in (None, (stored.get("metadata") or {}).get("resourceVersion")):
                        raise KubernetesObjectConflictError()
                meta["resourceVersion"] = str(next(versions))
                meta.setdefault("uid", str(uuid.uuid4()))
                return await super()._handle(request)

    class VersionedEmulator(Emulator):
        def handler_class(self) -> type:
            return Versioned

    return VersionedEmulator()


@pytest.fixture
def replicas(tmp_path: Path):
    """Two job owners (gateway replicas) over one emulated API server, and a tenant allowed one of each."""
    from adept.finetuning.files import FileStore
    from adept.finetuning.service import FineTuning
    from adept.platform import Platform
    from adept.tenancy.kubernetes import KubernetesTenantStore
    from tests.unit.operators.conftest import emulated_kube

    emulator = _versioned_emulator().start()
    config = PlatformConfig(
        data_dir=tmp_path / "data",
        model="bundled:test-base",
        tenant_store="kubernetes",
        kubernetes_namespace=NS,
    )
    owners, platforms = [], []
    for _ in range(2):
        kube = emulated_kube(emulator.url, tmp_path)
        platform = Platform(config, tenants=KubernetesTenantStore(NS, kube=kube))
        platforms.append(platform)
        store = KubernetesJobStore(NS, kube=kube)
        owners.append(FineTuning(platform, FileStore(str(tmp_path / "files")), store, FineTuningConfig()))
    quotas = TenantQuotas(max_concurrent_finetune_jobs=1, max_files=2)
    asyncio.run(platforms[0].create_tenant(TenantSpec(name="acme", quotas=quotas)))
    try:
        yield owners
    finally:
        for p in platforms:
            p.close()
        emulator.stop()


def race(owners, calls):
    """Run ``calls[i](owners[i])`` at once, each replica's first admission held until both have counted."""
    barrier = threading.Barrier(2, timeout=30)
    for owner in owners:
        store, held = owner.jobs, [True]
        create, reserve_file = store.create, store.reserve_file

        def gate(admit, held=held):
            def gated(*counted):
                if held:
                    held.pop()
                    barrier.wait()  # the other replica has read the Tenant and counted too
                return admit(*counted) if admit is not None else None

            return gated

        store.create = lambda record, admit=None, c=create, g=gate: c(record, g(admit))
        store.reserve_file = lambda t, f, s, admit=None, r=reserve_file, g=gate: r(t, f, s, g(admit))
    results: list = [None, None]

    def run(i: int) -> None:
        try:
            results[i] = asyncio.run(calls[i](owners[i]))
        except Exception as e:  # what each replica answered
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_two_replicas_racing_for_the_last_job_slot_admit_one(replicas) -> None:
    owners = replicas
    tenant = asyncio.run(owners[0].platform.get_tenant("acme"))
    f = asyncio.run(owners[0].upload_file(tenant, "t.jsonl", "fine-tune", CHAT))
    request = JobRequest(model="bundled:test-base", training_file=f.id)
    results = race(owners, [lambda o: o.create("acme", request)] * 2)
    refused = [r for r in results if isinstance(r, Exception)]
    assert len(refused) == 1 and isinstance(refused[0], RateLimited), results
    assert "max_concurrent_finetune_jobs" in refused[0].message
    (made,) = [r for r in results if not isinstance(r, Exception)]
    assert [j.id for j in owners[0].jobs.list("acme")] == [made.id]  # one FineTuneJob, the admitted one
    with pytest.raises(RateLimited):  # and the next one, from either replica, is refused too
        asyncio.run(owners[1].create("acme", request))


def test_two_replicas_racing_for_the_last_file_slot_store_one(replicas) -> None:
    owners = replicas
    tenant = asyncio.run(owners[0].platform.get_tenant("acme"))
    asyncio.run(owners[0].upload_file(tenant, "first.jsonl", "fine-tune", CHAT))
    results = race(owners, [lambda o: o.upload_file(tenant, "t.jsonl", "fine-tune", CHAT)] * 2)
    refused = [r for r in results if isinstance(r, Exception)]
    assert len(refused) == 1 and isinstance(refused[0], PermissionDenied), results
    assert "max_files" in refused[0].message
    assert len(owners[0].files.list("acme")) == 2
    # The ledger on the Tenant counts exactly the stored files; deleting one frees its slot.
    (kept,) = [r for r in results if not isinstance(r, Exception)]
    asyncio.run(owners[1].delete_file(tenant, kept.id))
    ledger = owners[0].jobs.kube.get(NS, "tenants", "acme")["metadata"]["annotations"][FILES]
    assert kept.id not in ledger and len(owners[0].files.list("acme")) == 1
    asyncio.run(owners[0].upload_file(tenant, "again.jsonl", "fine-tune", CHAT))
