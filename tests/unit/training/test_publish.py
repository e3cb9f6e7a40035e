"""Training's publish step goes through the kernel Platform: quotas and the base-model policy hold for fine-tunes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from adept.config.platform import PlatformConfig
from adept.config.tenant import TenantQuotas, TenantSpec
from adept.config.training import FineTuneJobConfig
from adept.errors import Conflict, PermissionDenied
from adept.platform import Platform
from tests.unit.kernel.test_registry import BASE, make_adapter_dir
from training.publish import publish_adapter
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


def job(adapter: str, base: str) -> FineTuneJobConfig:
    cfg = FineTuneJobConfig.model_validate(
        {"tenant": "acme", "adapter": adapter, "base_model": base, "data": {"path": "x.jsonl"}}
    )
    return cfg.bind(PlatformConfig(model=BASE))


def publish(platform, cfg, ckpt, run_id, base):
    return publish_adapter(
        platform, cfg, ckpt, run_id=run_id, base_model_id=base, dataset_hash="sha256:x", duration_s=1.0
    )


def test_a_fine_tune_is_published_once_per_run_with_its_curve(platform, tmp_path):
    ckpt = checkpoint(tmp_path / "ckpt", base=BASE)
    version = publish(platform, job("style", BASE), ckpt, "run-1", BASE)
    assert version.id == "acme/style@v1"
    assert (version.path / "loss_curve.png").is_file() and version.manifest.base_model == BASE
    assert publish(platform, job("style", BASE), ckpt, "run-1", BASE).id == "acme/style@v1"  # retried: once


def test_an_adapter_trained_on_another_base_is_refused_at_publish(platform, tmp_path):
    """The job may say any base; what serving runs is the platform's, and the registry stays clean."""
    other = "bundled:another-model"
    ckpt = checkpoint(tmp_path / "ckpt", base=other)
    with pytest.raises(Conflict) as err:
        publish(platform, job("style", other), ckpt, "run-1", other)
    assert err.value.code == "base_model_mismatch"
    assert asyncio.run(platform.list_adapters("acme")) == []


def test_max_adapters_holds_for_fine_tunes(platform, tmp_path):
    ckpt = checkpoint(tmp_path / "ckpt", base=BASE)
    publish(platform, job("first", BASE), ckpt, "run-1", BASE)
    with pytest.raises(PermissionDenied, match="max_adapters"):
        publish(platform, job("second", BASE), ckpt, "run-2", BASE)
