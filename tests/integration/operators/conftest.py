"""Harness: kmock's Kubernetes emulator as the API server (the one mock: no kube-apiserver runs here),
the real operator (kopf) in a thread, a real local Ray head with its Jobs API, and the gateway's real
HTTP app in cluster mode (Kubernetes tenant store on the emulator; real KnowledgeBase on Milvus Lite;
the tiny Phi-3) on loopback, which the operator reaches through the admin API as it does in a cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

NS = "adept-test"
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
PLURALS = {
    "Tenant": "tenants",
    "KnowledgeBase": "knowledgebases",
    "FineTuneJob": "finetunejobs",
    "Adapter": "adapters",
}


def _emulator_class() -> Any:
    import kmock
    from kmock._internal import enums

    class AdeptEmulator(kmock.KubernetesEmulator):
        """Assigns the fields a real API server sets on create (kopf relies on resourceVersion)."""

        async def _handle(self, request: Any) -> Any:
            if (
                request.resource is not None
                and request.action == enums.action.CREATE
                and isinstance(request.data, dict)
            ):
                meta = request.data.setdefault("metadata", {})
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("resourceVersion", "1")
                meta.setdefault("generation", 1)
                meta.setdefault("creationTimestamp", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
            return await super()._handle(request)

    return AdeptEmulator


class Emulator:
    """kmock's KubernetesEmulator served over HTTP from its own event-loop thread."""

    def __init__(self) -> None:
        self.url = ""
        self.handler: Any = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        import kmock

        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with self.handler_class()() as handler, kmock.Server(handler) as server:
            for kind, plural in PLURALS.items():
                handler.resources[f"adept.dev/v1alpha1/{plural}"] = kmock.ResourceInfo(
                    kind=kind,
                    singular=kind.lower(),
                    namespaced=True,
                    subresources={"status"},
                    verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
                )
            for kind, plural in (("Secret", "secrets"), ("Event", "events")):
                handler.resources[f"v1/{plural}"] = kmock.ResourceInfo(
                    kind=kind,
                    namespaced=True,
                    verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
                )
            # kopf waits for namespaces to be discoverable even when it does not list them.
            handler.resources["v1/namespaces"] = kmock.ResourceInfo(
                kind="Namespace", namespaced=False, verbs={"get", "list", "watch"}
            )
            self.handler, self.url = handler, str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def handler_class(self) -> type:
        """kmock's emulator class; a subclass may serve a stricter one (tests/unit/kernel/test_kube_job_limits.py)."""
        return _emulator_class()

    def start(self) -> Emulator:
        self._thread.start()
        assert self._ready.wait(10), "kmock did not start"
        return self

    def stop(self) -> None:
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


class Cluster:
    """What a test does with kubectl: apply, get, patch, delete, wait."""

    def __init__(self, kube: Any) -> None:
        self.kube = kube
        self.last: Any = None

    def apply(self, doc: dict[str, Any]) -> dict[str, Any]:
        # kmock stores what it gets; the API server's own fields (uid, generation) are set here.
        meta = doc.setdefault("metadata", {})
        meta.setdefault("namespace", NS)
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("generation", 1)
        meta.setdefault("resourceVersion", "1")  # kopf guards its finalizer patch with a test on it
        meta.setdefault("creationTimestamp", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        return self.kube.create(NS, PLURALS[doc["kind"]], doc)

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        self.last = self.kube.get(NS, PLURALS[kind], name)
        return self.last

    def update_spec(self, kind: str, name: str, spec: dict[str, Any]) -> None:
        obj = self.get(kind, name)
        self.kube.patch(
            NS,
            PLURALS[kind],
            name,
            {"spec": spec, "metadata": {"generation": obj["metadata"]["generation"] + 1}},
        )

    def delete(self, kind: str, name: str) -> None:
        self.kube.delete(NS, PLURALS[kind], name)

    def list(self, kind: str) -> list[dict[str, Any]]:
        return self.kube.list(NS, PLURALS[kind])

    def wait(self, what: str, fn: Callable[[], Any], timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = fn()
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; last: {self.last}")

    def wait_condition(
        self, kind: str, name: str, type_: str = "Ready", timeout: float = 60
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            obj = self.get(kind, name)
            conds = ((obj or {}).get("status") or {}).get("conditions") or []
            return obj if any(c["type"] == type_ and c["status"] == "True" for c in conds) else None

        try:
            return self.wait(f"{kind}/{name} {type_}", check, timeout)
        except AssertionError:
            raise AssertionError(
                f"{kind}/{name} never {type_}: {(self.get(kind, name) or {}).get('status')}"
            ) from None

    def wait_gone(self, kind: str, name: str, timeout: float = 60) -> None:
        self.wait(f"{kind}/{name} deleted", lambda: self.get(kind, name) is None, timeout)


class Operator:
    """The real operator (`kopf run -m operators.handlers`) via kopf.testing.KopfRunner; restartable."""

    def __init__(self) -> None:
        self.runner: Any = None
        self.outputs: list[str] = []

    def start(self) -> None:
        from kopf.testing import KopfRunner

        self.runner = KopfRunner(
            ["run", "--standalone", "--namespace", NS, "-m", "operators.handlers"], timeout=60
        )
        self.runner.__enter__()

    def stop(self) -> None:
        if self.runner is not None:
            self.runner.__exit__(None, None, None)
            self.outputs.append(self.runner.output)
            self.runner = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="package")
def ray_head() -> Iterator[Any]:
    """The training cluster: a local Ray head with token auth and its Jobs API, in its own process."""
    from tests.ray_head import start_head

    head = start_head(Path(tempfile.mkdtemp(prefix="adop-", dir="/tmp")))
    try:
        yield head
    finally:
        head.stop()
        shutil.rmtree(head.temp_dir, ignore_errors=True)


ADMIN_KEY = "adept-admin-operator-test-key"


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory, ray_head: Any, tiny_phi3: Path
) -> Iterator[dict[str, Path]]:
    data = tmp_path_factory.mktemp("data")
    shared = tmp_path_factory.mktemp("shared")
    kubeconfig = tmp_path_factory.mktemp("kube") / "config"
    gate = shared / "gate-open"
    values = {
        "ADEPT_DATA_DIR": str(data),
        "ADEPT_MODEL": str(tiny_phi3),
        "ADEPT_SHARED_DIR": str(shared),
        "ADEPT_RAY_ADDRESS": ray_head.address,
        # The operator's only way into the training cluster: this process runs with Ray auth off.
        "ADEPT_RAY_TOKEN": ray_head.token,
        "RAY_AUTH_MODE": "disabled",
        "RAY_AUTH_TOKEN": None,
        "RAY_AUTH_TOKEN_PATH": None,
        "ADEPT_RETRY_DELAY": "1",
        "ADEPT_POLL_INTERVAL": "1",
        "ADEPT_RESYNC_CHECK_INTERVAL": "1",
        "ADEPT_GATEWAY_ADMIN_KEY": ADMIN_KEY,
        "KUBECONFIG": str(kubeconfig),
        # The job's shell would find whichever `python` is first on PATH; the image has one, tests name it.
        "ADEPT_JOB_ENTRYPOINT": f"{sys.executable} {HERE / 'fake_trainer.py'} --config finetune.yaml",
        # The installation hands training results to the operator (cluster mode).
        "ADEPT_TRAINING_PUBLISH": "handoff",
        # What a training pod's environment carries in cluster mode: the platform's settings, and no
        # credentials (no KUBECONFIG, admin key, Ray token or registry keys).
        "ADEPT_JOB_ENV": json.dumps(
            {
                "PYTHONPATH": str(REPO),
                "ADEPT_FAKE_GATE": str(gate),
                "ADEPT_DATA_DIR": str(data),
                "ADEPT_MODEL": str(tiny_phi3),
                "ADEPT_TRAINING_PUBLISH": "handoff",
            }
        ),
    }
    from adept.ray_auth import restore_env

    old = {k: os.environ.get(k) for k in values}
    restore_env(values)  # sets the values, drops the None ones, makes Ray re-read its auth mode
    # The kubernetes client reads KUBECONFIG once, at its import (kopf's login and adept.kube call
    # load_kube_config() without a path): a module that imported it earlier in the session would leave
    # them on another kubeconfig.
    from kubernetes.config import kube_config

    old_default = kube_config.KUBE_CONFIG_DEFAULT_LOCATION
    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = str(kubeconfig)
    try:
        yield {"data": data, "shared": shared, "gate": gate, "kubeconfig": kubeconfig}
    finally:
        kube_config.KUBE_CONFIG_DEFAULT_LOCATION = old_default
        restore_env(old)


@pytest.fixture(scope="module")
def k8s(env: dict[str, Path]) -> Iterator[Emulator]:
    emulator = Emulator().start()
    env["kubeconfig"].write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: kmock\n"
        f"clusters: [{{name: kmock, cluster: {{server: '{emulator.url}'}}}}]\n"
        "users: [{name: kmock, user: {token: test}}]\n"
        f"contexts: [{{name: kmock, context: {{cluster: kmock, user: kmock, namespace: {NS}}}}}]\n"
    )
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="module")
def cluster(k8s: Emulator) -> Cluster:
    from adept.kube import Kube

    return Cluster(Kube())


@pytest.fixture(scope="module")
def gateway(k8s: Emulator, env: dict[str, Path], tiny_phi3: Path) -> Iterator[Any]:
    """The gateway's real HTTP app in cluster mode: tenants are the emulator's Tenant resources."""
    from bench.reliability.inproc import serving_config, start_inprocess

    cfg = serving_config(
        env["data"], tiny_phi3, platform={"tenant_store": "kubernetes", "kubernetes_namespace": NS}
    )
    platform = start_inprocess(cfg, ADMIN_KEY)
    os.environ["ADEPT_GATEWAY_URL"] = platform.url
    try:
        yield platform
    finally:
        platform.stop()
        os.environ.pop("ADEPT_GATEWAY_URL", None)


@pytest.fixture(scope="module")
def operator(k8s: Emulator, gateway: Any) -> Iterator[Operator]:
    op = Operator()
    op.start()
    try:
        yield op
    finally:
        with contextlib.suppress(Exception):
            op.stop()
