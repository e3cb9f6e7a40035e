"""Training's result reaches the registry through the kernel Platform, once per run, from either publisher.

``stage_result`` leaves the adapter in the run directory; ``Platform.publish_run`` publishes it —
called by the job itself on one machine, by the operator on a cluster — with every rule of
``publish_adapter`` (quotas, the base-model policy).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from adept.config.platform import PlatformConfig
from adept.config.tenant import TenantQuotas, TenantSpec
from adept.config.training import FineTuneJobConfig
from adept.errors import Conflict, InvalidRequest, NotFound, PermissionDenied
from adept.platform import Platform
from adept.training_runs import JOB_STATE_FILE, RESULT_DIR
from tests.unit.kernel.test_registry import BASE, make_adapter_dir
from training.publish import stage_result
from training.recipes.lora_finetune import ADAPTER_DIR, STATE_FILE


def checkpoint(path: Path, *, base: str) -> Path:
    """A final checkpoint as the recipe leaves it: the PEFT adapter plus the trainer state."""
    make_adapter_dir(path / ADAPTER_DIR, base=base)
    history = [{"step": 1, "train_loss": 2.0}, {"step": 2, "train_loss": 1.5, "eval_loss": 1.7}]
    (path / STATE_FILE).write_text(json.dumps({"step": 2, "tokens_seen": 100, "history": history}))
    return path


@pytest.fixture
def platform(tmp_path):
    p = Platform(PlatformConfig(data_dir=tmp_path / "data", model=BASE))
    asyncio.run(p.create_tenant(TenantSpec(name="acme", quotas=TenantQuotas(max_adapters=1))))
    yield p
    p.close()


def job(adapter: str, base: str, **platform) -> FineTuneJobConfig:
    cfg = FineTuneJobConfig.model_validate(
        {"tenant": "acme", "adapter": adapter, "base_model": base, "data": {"path": "x.jsonl"}}
    )
    return cfg.bind(PlatformConfig(model=BASE, **platform))


def finished_run(tmp_path: Path, cfg, run_id: str, base: str) -> Path:
    """A run directory as training leaves it: the staged result, then the state that says it is complete."""
    run_dir = tmp_path / "training" / run_id
    ckpt = checkpoint(tmp_path / f"ckpt-{run_id}", base=base)
    uri = stage_result(
        cfg, ckpt, str(run_dir), run_id=run_id, base_model_id=base, dataset_hash="sha256:x", duration_s=1.0
    )
    assert uri == f"{run_dir}/{RESULT_DIR}"
    state = {"tenant": cfg.tenant, "adapter": cfg.adapter, "run_id": run_id, "result": RESULT_DIR}
    (run_dir / JOB_STATE_FILE).write_text(json.dumps(state))
    return run_dir


def publish(platform, run_dir, cfg):
    return asyncio.run(platform.publish_run(run_dir, cfg.tenant, cfg.adapter))


def test_a_fine_tune_is_published_once_per_run_with_its_curve(platform, tmp_path):
    cfg = job("style", BASE)
    run_dir = finished_run(tmp_path, cfg, "run-1", BASE)
    result = run_dir / RESULT_DIR
    assert {p.name for p in result.iterdir()} >= {
        "adapter_config.json",
        "manifest.json",
        "loss_curve.png",
        "metrics.json",
    }
    version = publish(platform, run_dir, cfg)
    assert version.id == "acme/style@v1"
    assert (version.path / "loss_curve.png").is_file() and (version.path / "metrics.json").is_file()
    assert version.manifest.base_model == BASE and version.manifest.metrics["run_id"] == "run-1"
    assert publish(platform, run_dir, cfg).id == "acme/style@v1"  # the other publisher, or a retry: once


def test_an_adapter_trained_on_another_base_is_refused_at_publish(platform, tmp_path):
    """The job may say any base; what serving runs is the platform's, and the registry stays clean."""
    other = "bundled:another-model"
    cfg = job("style", other)
    with pytest.raises(Conflict) as err:
        publish(platform, finished_run(tmp_path, cfg, "run-1", other), cfg)
    assert err.value.code == "base_model_mismatch"
    assert asyncio.run(platform.list_adapters("acme")) == []


def test_max_adapters_holds_for_fine_tunes(platform, tmp_path):
    publish(platform, finished_run(tmp_path, job("first", BASE), "run-1", BASE), job("first", BASE))
    with pytest.raises(PermissionDenied, match="max_adapters"):
        publish(platform, finished_run(tmp_path, job("second", BASE), "run-2", BASE), job("second", BASE))


def test_a_run_is_published_only_as_its_own_tenant_and_adapter(platform, tmp_path):
    """The publisher names the FineTuneJob's tenant/adapter; a run of another one is refused."""
    run_dir = finished_run(tmp_path, job("style", BASE), "run-1", BASE)
    with pytest.raises(InvalidRequest, match="acme/style's, not acme/other's"):
        publish(platform, run_dir, job("other", BASE))


def test_an_unfinished_run_has_nothing_to_publish(platform, tmp_path):
    cfg = job("style", BASE)
    run_dir = finished_run(tmp_path, cfg, "run-1", BASE)
    state = json.loads((run_dir / JOB_STATE_FILE).read_text())
    (run_dir / JOB_STATE_FILE).write_text(json.dumps({k: v for k, v in state.items() if k != "result"}))
    with pytest.raises(NotFound, match="no result yet"):
        publish(platform, run_dir, cfg)
    with pytest.raises(NotFound, match="no training run"):
        publish(platform, tmp_path / "never-ran", cfg)


def test_the_platform_decides_who_publishes():
    assert job("a", BASE).output.publish is True  # one machine: the job publishes
    assert job("a", BASE, training_publish="handoff").output.publish is False  # a cluster: the operator
    explicit = FineTuneJobConfig.model_validate(
        {"tenant": "acme", "adapter": "a", "data": {"path": "x.jsonl"}, "output": {"publish": True}}
    )
    explicit.check_publisher(PlatformConfig(model=BASE))  # one machine: fine
    with pytest.raises(InvalidRequest, match="training_publish: handoff") as err:
        explicit.check_publisher(PlatformConfig(model=BASE, training_publish="handoff"))
    assert err.value.param == "output.publish"
