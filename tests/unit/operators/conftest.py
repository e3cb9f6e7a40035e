"""The operator's FineTuneJob handlers as kopf calls them, over kmock's Kubernetes emulator (the one mock)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import kopf
import pytest

from adept.config.finetuning import FineTuningConfig
from adept.config.platform import PlatformConfig
from adept.config.tenant import TenantSpec
from operators import handlers
from operators.settings import OperatorConfig
from tests.unit.kernel.test_job_runner import EVAL_SET, TRAINER

NS = "adept-test"


def emulated_kube(url: str, tmp_path: Path) -> Any:
    """An ``adept.kube.Kube`` on the emulator at ``url``, with a client of its own (``KUBECONFIG`` is read
    once, when the kubernetes package is imported: other tests point it elsewhere)."""
    from kubernetes.config import new_client_from_config

    from adept.kube import Kube

    config = tmp_path / f"kubeconfig-{len(list(tmp_path.glob('kubeconfig-*')))}"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: kmock\n"
        f"clusters: [{{name: kmock, cluster: {{server: '{url}'}}}}]\n"
        "users: [{name: kmock, user: {token: test}}]\n"
        f"contexts: [{{name: kmock, context: {{cluster: kmock, user: kmock, namespace: {NS}}}}}]\n"
    )
    return Kube(api_client=new_client_from_config(config_file=str(config)))


@pytest.fixture
def operator(tmp_path: Path, monkeypatch):
    """The operator's memo over kmock, with the local executor and a version-scoring evaluator."""
    from adept.finetuning.executors import LocalProcess
    from tests.integration.operators.conftest import Emulator
    from tests.unit.gateway.fakes import write_peft_dir

    emulator = Emulator().start()
    kube = emulated_kube(emulator.url, tmp_path)
    platform_config = PlatformConfig(
        data_dir=tmp_path / "data",
        model="bundled:test-base",
        tenant_store="kubernetes",
        kubernetes_namespace=NS,
        training_publish="handoff",
    )
    measured: list[str] = []

    def evaluator(tenant: str, eval_set):
        async def evaluate(model_id: str) -> dict[str, float]:
            measured.append(model_id)
            return {"combined": {"v1": 0.8, "v2": 0.3}[model_id.split("@")[1]], "f1": 0.5}

        return evaluate

    memo = kopf.Memo()
    memo.config = OperatorConfig()
    memo.platform_config = platform_config
    memo.kube = kube
    memo.platforms = {}
    memo.gateway = None
    memo.finetuning = FineTuningConfig()
    memo.evaluator = evaluator
    script = tmp_path / "trainer.py"
    script.write_text(TRAINER)
    seen: list[float] = []

    def executor(memo, ray_address):
        seen.append(memo.platform_config.training_entrypoint_num_cpus)
        return LocalProcess(platform_config, entrypoint=[sys.executable, str(script)])

    monkeypatch.setattr(handlers, "_executor", executor)
    monkeypatch.setenv("TEST_PEFT_DIR", str(write_peft_dir(tmp_path / "peft", "bundled:test-base")))
    platform = handlers._platform(memo, NS)
    asyncio.run(platform.create_tenant(TenantSpec(name="acme")))
    data = tmp_path / "train.jsonl"
    data.write_text("{}\n")
    evals = tmp_path / "eval.jsonl"
    evals.write_bytes(EVAL_SET)
    try:
        yield SimpleNamespace(
            memo=memo, kube=kube, platform=platform, data=data, evals=evals, measured=measured, seen=seen
        )
    finally:
        for p in memo.platforms.values():
            p.close()
        emulator.stop()
