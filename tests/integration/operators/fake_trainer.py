"""Stand-in for `python -m training.finetune` in operator tests: same CLI, same publish path, instant.

It prints progress the way the real recipe does, can be held at a gate (a file it waits for) so
a test can restart the operator mid-job (or, for a training file saying so, until it is stopped), then publishes a real (tiny) PEFT-format adapter the
way training does — the job bound to the platform's configuration, published through the
kernel's ``Platform`` (quotas, base-model policy) — and prints the JSON summary line. Only the
training itself is skipped (the recipe has its own tests, tests/integration/training).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from safetensors.numpy import save_file

from adept.adapters import AdapterRegistry
from adept.config.platform import load_platform_config
from adept.config.training import FineTuneJobConfig
from adept.models import canonical_model_id
from adept.platform import Platform


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    cfg = yaml.safe_load(Path(p.parse_args().config).read_text())
    print("[adept.train] step 1/4 train_loss 2.5000 lr 2.00e-04 tokens 10", flush=True)
    gate = os.environ.get("ADEPT_FAKE_GATE")
    if gate and cfg.get("description") == "gated":
        while not Path(gate).exists():  # the test opens the gate once the operator has restarted
            time.sleep(0.2)
    data = Path(cfg["data"]["path"])
    if data.is_file() and b"HOLD-UNTIL-STOPPED" in data.read_bytes():
        time.sleep(3600)  # a job a test cancels: only stopping the Ray job ends it
    print("[adept.train] step 4/4 train_loss 1.2500 lr 1.00e-04 tokens 40", flush=True)
    job = FineTuneJobConfig.model_validate(cfg).bind(load_platform_config())
    base = canonical_model_id(job.resolved_base_model)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "adapter_config.json").write_text(
            json.dumps({"peft_type": "LORA", "r": 2, "base_model_name_or_path": base})
        )
        save_file({"w": np.zeros((2, 2), dtype=np.float32)}, str(Path(tmp) / "adapter_model.safetensors"))
        registry = AdapterRegistry(job.resolved_adapter_store)
        platform = Platform(load_platform_config(), registry=registry)
        manifest = {"base_model": base, "steps": 4}
        version = asyncio.run(platform.publish_adapter(job.tenant, job.adapter, tmp, manifest))
    print(json.dumps({"adapter": version.id, "steps": 4}), flush=True)


if __name__ == "__main__":
    main()
