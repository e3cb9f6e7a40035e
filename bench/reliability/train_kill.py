"""A Ray Train worker SIGKILLed mid-epoch, from outside, after the first checkpoint.

Reuses the training engineer's job runner (``training.finetune.run_job``) and test config shape;
the kill is external (the worker process gets SIGKILL), not the recipe's own fault hook.
Pass: the job finishes, resumed from a checkpoint at step > 0, and the registry holds exactly one
version of the adapter.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from bench.reliability.report import Outcome

REPO = Path(__file__).resolve().parents[2]


def _train_workers() -> list[int]:
    import psutil

    me = psutil.Process()
    pids = []
    for p in me.children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(p.cmdline()):
                pids.append(p.pid)
        except psutil.Error:
            continue
    return pids


def kill_train_worker(model: Path, workdir: Path, *, ray_temp: Path) -> Outcome:
    import ray

    from adept.adapters import AdapterRegistry
    from adept.config.base import load_config
    from adept.config.platform import PlatformConfig
    from adept.config.tenant import TenantSpec
    from adept.config.training import FineTuneJobConfig
    from adept.platform import Platform
    from training.finetune import run_job

    out = Outcome("Ray Train worker SIGKILLed mid-epoch", faults=1)
    started = time.monotonic()
    cfg = load_config(
        FineTuneJobConfig,
        None,
        env=False,
        base={
            "tenant": "acme",
            "adapter": "grid",
            "base_model": str(model),
            "lora": {"rank": 8, "alpha": 16, "dropout": 0.0},
            "data": {"path": str(REPO / "training/data/gridhelp.jsonl"), "max_seq_length": 256},
            "train": {
                "max_steps": 16,
                "batch_size": 2,
                "learning_rate": 0.02,
                "dtype": "float32",
                "eval_every_steps": 8,
                "log_every_steps": 2,
            },
            "workers": {"num_workers": 2},
            "checkpoint": {"every_steps": 4, "max_failures": 2},
            "output": {"data_dir": str(workdir)},
        },
    )
    os.environ.pop("ADEPT_TRAIN_FAULT_AT_STEP", None)
    platform = PlatformConfig(data_dir=workdir, model=str(model))  # serves the model, knows tenant acme
    asyncio.run(Platform(platform).create_tenant(TenantSpec(name="acme")))
    cfg = cfg.bind(platform)
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, _temp_dir=str(ray_temp))
    result: dict[str, Any] = {}
    try:
        t = threading.Thread(target=lambda: result.update(run_job(cfg, platform=platform)), daemon=True)
        t.start()
        run_dir = Path(cfg.resolved_storage_path) / cfg.resolved_run_name
        killed = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and t.is_alive() and killed is None:
            if list(run_dir.glob("checkpoint_*")) or list(run_dir.rglob("checkpoint-0000004")):
                workers = _train_workers()
                if workers:
                    killed = workers[-1]
                    os.kill(killed, signal.SIGKILL)
                    break
            time.sleep(0.2)
        out.check(killed is not None, "never saw a checkpoint and a worker to kill")
        t.join(timeout=900)
        out.check(not t.is_alive(), "the training job did not finish after the kill")
        out.check("adapter" in result, f"the job did not publish: {result}")
        if "checkpoint" in result:
            state = json.loads((Path(result["checkpoint"]) / "trainer_state.json").read_text())
            restarts = [r["from_step"] for r in state.get("restarts", [])]
            out.check(bool(restarts) and restarts[0] > 0, f"did not resume from a checkpoint > 0: {restarts}")
            out.details["resumed_from_steps"] = restarts
        versions = [v.version for v in AdapterRegistry(cfg.resolved_adapter_store).list("acme")]
        out.check(versions == ["v1"], f"published versions: {versions} (expected exactly one)")
        if len(versions) > 1:
            out.data_lost += len(versions) - 1
        out.details |= {"killed_pid": killed, "versions": versions, "steps": result.get("steps")}
    finally:
        ray.shutdown()
    out.load = "2 workers x 16 steps"
    out.seconds = time.monotonic() - started
    return out
