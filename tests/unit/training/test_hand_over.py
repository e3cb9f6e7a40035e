"""A training run that publishes its own result (``training_publish: direct``, a bare ``ray job submit``)
and names an ``evaluation_file`` never makes its version live by itself: it publishes it inactive, the
active version keeps serving, and the run says how to serve it. Under the job owner the owner then
measures it (``adept.finetuning.promotion``): before this, the run published it live first, so the
owner's measurement found the new version already serving and compared it with nothing."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from adept.config.platform import PlatformConfig
from adept.config.tenant import TenantSpec
from adept.config.training import FineTuneJobConfig
from adept.platform import Platform
from tests.unit.gateway.fakes import write_peft_dir
from training.finetune import _hand_over


@pytest.fixture
def kernel(tmp_path: Path):
    platform = Platform(PlatformConfig(data_dir=tmp_path / "data", model="bundled:test-base"))
    asyncio.run(platform.create_tenant(TenantSpec(name="acme")))
    peft = write_peft_dir(tmp_path / "peft", platform.base_model_id)
    asyncio.run(platform.publish_adapter("acme", "style", peft))  # v1 serves
    yield platform, peft, tmp_path
    platform.close()


def staged_run(tmp_path: Path, peft: Path, name: str) -> tuple[str, dict]:
    run_dir = tmp_path / "runs" / name
    shutil.copytree(peft, run_dir / "result")
    manifest = {
        "tenant": "acme",
        "name": "style",
        "base_model": "bundled:test-base",
        "metrics": {"run_id": name},
    }
    (run_dir / "result" / "manifest.json").write_text(json.dumps(manifest))  # as stage_result writes it
    state = {"run_id": name, "tenant": "acme", "adapter": "style", "result": "result"}
    (run_dir / "adept_job.json").write_text(json.dumps(state))
    return str(run_dir), state


def job(evaluation_file: str | None) -> FineTuneJobConfig:
    body = {"tenant": "acme", "adapter": "style", "data": {"path": "/data/train.jsonl"}}
    return FineTuneJobConfig.model_validate({**body, "evaluation_file": evaluation_file})


def test_a_run_with_an_evaluation_file_publishes_inactive(kernel, capsys) -> None:
    platform, peft, tmp_path = kernel
    run_dir, state = staged_run(tmp_path, peft, "run-2")
    out = _hand_over(platform, job("/data/eval.jsonl"), run_dir, state)
    assert out["adapter"] == "acme/style@v2" and out["active_version"] == "v1"
    assert asyncio.run(platform.resolve_adapter("acme", "style")).version == "v1"
    assert "adept adapter activate acme style v2" in capsys.readouterr().out
    # Published all the same, and once: handing over again (a retried job) publishes nothing new.
    assert _hand_over(platform, job("/data/eval.jsonl"), run_dir, state)["adapter"] == "acme/style@v2"
    assert platform.registry.versions("acme", "style") == ["v1", "v2"]


def test_a_run_without_one_goes_live_as_before(kernel) -> None:
    platform, peft, tmp_path = kernel
    run_dir, state = staged_run(tmp_path, peft, "run-3")
    out = _hand_over(platform, job(None), run_dir, state)
    assert out["adapter"] == "acme/style@v2" and "active_version" not in out
    assert asyncio.run(platform.resolve_adapter("acme", "style")).version == "v2"
