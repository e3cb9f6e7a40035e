"""Stand-in for `python -m training.finetune` in operator tests: same CLI, same registry, instant.

It prints progress the way the real recipe does, can be held at a gate (a file it waits for) so
a test can restart the operator mid-job, then publishes a real (tiny) PEFT-format adapter to the
registry named in the config and prints the JSON summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from safetensors.numpy import save_file

from adept.adapters import AdapterRegistry


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    cfg = yaml.safe_load(Path(p.parse_args().config).read_text())
    print("[adept.train] step 1/4 train_loss 2.5000 lr 2.00e-04 tokens 10", flush=True)
    gate = os.environ.get("ADEPT_FAKE_GATE")
    if gate and cfg.get("description") == "gated":
        while not Path(gate).exists():  # the test opens the gate once the operator has restarted
            time.sleep(0.2)
    print("[adept.train] step 4/4 train_loss 1.2500 lr 1.00e-04 tokens 40", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "adapter_config.json").write_text(
            json.dumps({"peft_type": "LORA", "r": 2, "base_model_name_or_path": cfg["base_model"]})
        )
        save_file({"w": np.zeros((2, 2), dtype=np.float32)}, str(Path(tmp) / "adapter_model.safetensors"))
        registry = AdapterRegistry(cfg["output"]["adapter_store_uri"])
        manifest = {
            "tenant": cfg["tenant"],
            "name": cfg["adapter"],
            "base_model": cfg["base_model"],
            "steps": 4,
        }
        version = registry.publish(
            cfg["tenant"], cfg["adapter"], tmp, manifest, expected_base_model=cfg["base_model"]
        )
    print(json.dumps({"adapter": version.id, "steps": 4}), flush=True)


if __name__ == "__main__":
    main()
