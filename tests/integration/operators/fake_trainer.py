"""Stand-in for `python -m training.finetune` in operator tests: same CLI, same hand-off, instant.

It reports progress with the real structured events (``adept.finetuning.events``), can be held at a gate (a file it waits for) so
a test can restart the operator mid-job (or, for a training file saying so, until it is stopped),
then leaves a real (tiny) PEFT-format adapter in its run directory the way training does on a
cluster (``training_publish: handoff``: the job holds no platform credentials; the operator
publishes the result when the job succeeds), and reports its result event. Only the training
itself is skipped (the recipe has its own tests, tests/integration/training). It also records the
names of the environment variables it got, so a test can check that no platform secret reached the job.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import yaml
from safetensors.numpy import save_file

from adept.config.platform import load_platform_config
from adept.config.training import FineTuneJobConfig
from adept.finetuning.events import emit
from adept.models import canonical_model_id
from adept.training_runs import JOB_STATE_FILE, RESULT_DIR


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--address")  # the local executor's (which Ray to join): nothing to join here
    cfg = yaml.safe_load(Path(p.parse_args().config).read_text())
    emit("step", step=1, total_steps=4, train_loss=2.5, lr=2e-4, tokens=10)
    gate = os.environ.get("ADEPT_FAKE_GATE")
    if gate:
        Path(gate).with_name("job-env-names.json").write_text(json.dumps(sorted(os.environ)))
    if gate and cfg.get("description") == "gated":
        while not Path(gate).exists():  # the test opens the gate once the operator has restarted
            time.sleep(0.2)
    data = Path(cfg["data"]["path"])
    if data.is_file() and b"HOLD-UNTIL-STOPPED" in data.read_bytes():
        time.sleep(3600)  # a job a test cancels: only stopping the Ray job ends it
    emit("step", step=4, total_steps=4, train_loss=1.25, lr=1e-4, tokens=40)
    platform = load_platform_config()
    job = FineTuneJobConfig.model_validate(cfg)
    job.check_publisher(platform)
    job = job.bind(platform)
    assert not job.output.publish, "the operator tests run training as on a cluster: hand-off"
    base = canonical_model_id(job.resolved_base_model)
    run_dir = Path(job.resolved_run_dir)
    result = run_dir / RESULT_DIR
    result.mkdir(parents=True, exist_ok=True)
    (result / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 2, "base_model_name_or_path": base})
    )
    save_file({"w": np.zeros((2, 2), dtype=np.float32)}, str(result / "adapter_model.safetensors"))
    run_id = f"{job.resolved_run_name}-{os.getpid()}"
    manifest = {"base_model": base, "steps": 4, "metrics": {"run_id": run_id}}
    (result / "manifest.json").write_text(json.dumps(manifest))
    state = {"tenant": job.tenant, "adapter": job.adapter, "run_id": run_id, "result": RESULT_DIR}
    (run_dir / JOB_STATE_FILE).write_text(json.dumps(state))
    emit("result", run_dir=str(run_dir), steps=4, tokens_seen=40)


if __name__ == "__main__":
    main()
