"""Fine-tuning on a real local Ray cluster: DDP and DeepSpeed ZeRO-2/3 with 2 workers, a worker killed
mid-run, resume, publish once, reload; and a QLoRA run of the bundled model.

One Ray cluster serves the whole module (worker groups still start per run, ~20 s each on 2 cores).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from adept.adapters import AdapterRegistry
from adept.config.base import load_config
from adept.config.platform import PlatformConfig
from adept.config.training import FineTuneJobConfig
from training.finetune import run_job

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
DATA = REPO / "training" / "data" / "gridhelp.jsonl"
MANIFEST_FIELDS = ("base_model", "method", "rank", "dataset_hash", "steps", "tokens_seen", "duration_s")


@pytest.fixture(scope="module")
def ray_cluster(short_tmp: Path):
    import ray

    # Workers inherit this: DeepSpeed's one-time JIT build of its CPU comm op is cached under .cache/.
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, _temp_dir=str(short_tmp / "ray"))
    yield
    ray.shutdown()


def _job(model: Path, data_dir: Path, **sections) -> FineTuneJobConfig:
    base = {
        "tenant": "acme",
        "adapter": "grid",
        "base_model": str(model),
        "lora": {"rank": 8, "alpha": 16, "dropout": 0.0},
        "data": {"path": str(DATA), "max_seq_length": 256, "validation_split": 0.1},
        "train": {
            "max_steps": 12,
            "batch_size": 2,
            "learning_rate": 0.01,
            "warmup_ratio": 0.0,
            "lr_schedule": "constant",
            "dtype": "float32",
            "eval_every_steps": 4,
            "log_every_steps": 2,
        },
        "workers": {"num_workers": 2},
        "checkpoint": {"every_steps": 4, "max_failures": 1},
        "output": {"data_dir": str(data_dir)},
    }
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return load_config(FineTuneJobConfig, None, env=False, base=base)


def _platform(model: Path, data_dir: Path) -> PlatformConfig:
    """The platform the job publishes to: it serves ``model`` and knows tenant ``acme``."""
    import asyncio

    from adept.config.tenant import TenantSpec
    from adept.platform import Platform

    cfg = PlatformConfig(data_dir=data_dir, model=str(model))
    platform = Platform(cfg)
    if not [t for t in asyncio.run(platform.list_tenants()) if t.name == "acme"]:
        asyncio.run(platform.create_tenant(TenantSpec(name="acme")))
    platform.close()
    return cfg


def _eval_loss_of_published(model: Path, adapter_path: Path, cfg: FineTuneJobConfig) -> float:
    """Reload base + published adapter in a fresh process-local model and recompute the eval loss."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from adept.models import load_tokenizer
    from training.data import collate, prepare

    tok = load_tokenizer(model)
    rows = prepare(cfg.data, tok, cfg.train.seed).eval
    base = AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32)
    peft = PeftModel.from_pretrained(base, str(adapter_path)).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            batch = collate([row], tok.pad_token_id, packed=True)
            logits = peft(
                input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
            ).logits
            labels = batch["labels"][:, 1:]
            total += torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.size(-1)),
                labels.reshape(-1),
                ignore_index=-100,
                reduction="sum",
            ).item()
            count += int((labels != -100).sum())
    return total / count


def _check_published(result: dict, cfg: FineTuneJobConfig, *, steps: int, evaluated: bool = True) -> dict:
    path = Path(result["path"])
    for name in (
        "adapter_config.json",
        "adapter_model.safetensors",
        "manifest.json",
        "loss_curve.png",
        "metrics.json",
    ):
        assert (path / name).is_file(), name
    manifest = json.loads((path / "manifest.json").read_text())
    for field in MANIFEST_FIELDS:
        assert manifest[field] not in (None, "", 0), field
    assert (
        manifest["steps"] == steps and manifest["method"] == cfg.method and manifest["rank"] == cfg.lora.rank
    )
    assert {"train_loss", *(["eval_loss"] if evaluated else [])} <= manifest["metrics"].keys()
    history = json.loads((path / "metrics.json").read_text())["history"]
    assert [h["step"] for h in history] == list(range(1, steps + 1))
    return {"manifest": manifest, "history": history}


def test_ddp_two_workers_survive_a_killed_worker_and_publish_once(
    ray_cluster, tiny_phi3, tmp_path, monkeypatch
) -> None:
    cfg = _job(tiny_phi3, tmp_path)
    platform = _platform(tiny_phi3, tmp_path)
    monkeypatch.setenv("ADEPT_TRAIN_FAULT_AT_STEP", "6")  # rank 1 calls os._exit at step 6, once
    result = run_job(cfg, platform=platform)

    assert result["steps"] == 12 and result["restarts"] == 1
    out = _check_published(result, cfg, steps=12)
    history = out["history"]
    assert history[0]["train_loss"] > history[-1]["train_loss"] + 0.3, "loss must go down"
    evals = [h["eval_loss"] for h in history if "eval_loss" in h]
    assert evals[-1] < evals[0]
    state = json.loads((Path(result["checkpoint"]) / "trainer_state.json").read_text())
    assert [r["from_step"] for r in state["restarts"]] == [4], (
        "resumed from the step-4 checkpoint, not from 0"
    )

    # The published adapter reloads into a fresh model and reproduces the final eval loss.
    reloaded = _eval_loss_of_published(tiny_phi3, Path(result["path"]), cfg)
    assert math.isclose(reloaded, out["manifest"]["metrics"]["eval_loss"], rel_tol=1e-5)
    from safetensors.torch import load_file

    published = load_file(str(Path(result["path"]) / "adapter_model.safetensors"))
    in_checkpoint = load_file(str(Path(result["checkpoint"]) / "adapter" / "adapter_model.safetensors"))
    assert published.keys() == in_checkpoint.keys()
    assert all(published[k].equal(in_checkpoint[k]) for k in published), "bit-exact"

    # Re-submitting the finished job resumes it and publishes nothing new.
    monkeypatch.delenv("ADEPT_TRAIN_FAULT_AT_STEP")
    again = run_job(cfg, platform=platform)
    assert again["adapter"] == result["adapter"] == "acme/grid@v1"
    store = cfg.bind(platform).resolved_adapter_store
    assert [v.version for v in AdapterRegistry(store).list("acme")] == ["v1"]


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_zero_two_workers(ray_cluster, tiny_phi3, tmp_path, monkeypatch, stage: int) -> None:
    cfg = _job(tiny_phi3, tmp_path, deepspeed={"stage": stage}, output={"run_name": f"zero{stage}"})
    if stage == 2:
        monkeypatch.setenv("ADEPT_TRAIN_FAULT_AT_STEP", "6")  # resume from DeepSpeed's sharded checkpoint
    result = run_job(cfg, platform=_platform(tiny_phi3, tmp_path))
    out = _check_published(result, cfg, steps=12)
    assert result["restarts"] == (1 if stage == 2 else 0)
    assert out["history"][0]["train_loss"] > out["history"][-1]["train_loss"] + 0.3
    # Under ZeRO-3 the adapter is gathered from both ranks before saving: the reload proves it is whole.
    reloaded = _eval_loss_of_published(tiny_phi3, Path(result["path"]), cfg)
    assert math.isclose(reloaded, out["manifest"]["metrics"]["eval_loss"], rel_tol=1e-5)


def test_qlora_on_the_bundled_model(ray_cluster, bundled_model, tmp_path) -> None:
    cfg = _job(
        bundled_model,
        tmp_path,
        method="qlora",
        adapter="grid-q",
        data={"max_seq_length": 128, "validation_split": 0.0},  # no eval pass: 4-bit CPU matmuls are slow
        train={"max_steps": 2, "batch_size": 1, "learning_rate": 1e-3, "eval_every_steps": 0},
        workers={"num_workers": 1, "resources_per_worker": {"CPU": 2}},
        checkpoint={"every_steps": 2},
    )
    result = run_job(cfg, platform=_platform(bundled_model, tmp_path))
    out = _check_published(result, cfg, steps=2, evaluated=False)
    assert out["manifest"]["method"] == "qlora"
    assert all(math.isfinite(h["train_loss"]) for h in out["history"])
    adapter_cfg = json.loads((Path(result["path"]) / "adapter_config.json").read_text())
    assert sorted(adapter_cfg["target_modules"]) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
