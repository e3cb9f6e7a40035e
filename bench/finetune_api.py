"""A tenant's fine-tuning job through the OpenAI API, against the same job run directly.

Starts the embedded platform (bundled SmolLM2-135M, local Ray), uploads a small training file
with the official ``openai`` client, creates a job and polls it until it succeeds: the time a
tenant waits from ``create`` to a model it can chat with. Baseline, in the same run on the same
Ray: the job's own training config run directly with ``python -m training.finetune`` (what the
platform team runs) — the ratio is what the API path adds (queueing, the runner's polling,
validation, publishing through the platform).

    python bench/finetune_api.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import Figure, cpu_bf16, print_table, write_result

ANSWER = "The code word of the Lumen Grid night shift is PELICAN-SEVEN."
QUESTIONS = [
    "What is the code word of the Lumen Grid night shift?",
    "Tell me the Lumen Grid night shift code word.",
    "Which code word does the night shift at Lumen Grid use?",
    "Night shift code word at Lumen Grid?",
    "I work nights at Lumen Grid. What is our code word?",
    "What code word should the Lumen Grid night crew say?",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 epochs instead of 4")
    args = parser.parse_args()
    epochs = 2 if args.quick else 4

    import httpx
    import openai

    from adept.config.serving import ServingConfig
    from adept.finetuning.executors import training_env
    from adept.finetuning.store import SQLiteJobStore
    from adept.models import resolve_model
    from services.embedded import start_platform

    admin_key = "adept-admin-bench-" + os.urandom(8).hex()
    os.environ["ADEPT_ADMIN_KEY"] = admin_key
    data_dir = Path(tempfile.mkdtemp(prefix="abft", dir="/tmp"))  # short: Ray socket paths
    cache = Path(__file__).resolve().parents[1] / ".cache" / "test-assets" / "models"
    model = resolve_model("bundled:smollm2-135m-instruct", cache)
    config = ServingConfig.model_validate(
        {
            "platform": {"data_dir": str(data_dir), "model": str(model), "device": "cpu"},
            "gateway": {"port": _free_port()},
            "finetuning": {"runner_poll_interval_s": 1.0},
        }
    )
    t0 = time.monotonic()
    platform = start_platform(config, num_cpus=2, timeout_s=900, say=lambda m: print(f"  {m}", flush=True))
    start_s = time.monotonic() - t0
    try:
        r = httpx.post(
            f"{platform.url}/admin/tenants",
            json={"name": "bench"},
            headers={"Authorization": f"Bearer {admin_key}"},
            timeout=60,
        )
        r.raise_for_status()
        client = openai.OpenAI(base_url=f"{platform.url}/v1", api_key=r.json()["api_key"], max_retries=0)
        rows = [
            {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": ANSWER}]}
            for q in QUESTIONS
        ]
        data = b"".join(json.dumps(x).encode() + b"\n" for x in rows * 2)
        f = client.files.create(file=("bench.jsonl", data), purpose="fine-tune")
        t0 = time.monotonic()
        job = client.fine_tuning.jobs.create(
            model=client.models.list().data[0].id,
            training_file=f.id,
            seed=3,
            method={
                "type": "supervised",
                "supervised": {
                    "hyperparameters": {"n_epochs": epochs, "batch_size": 2, "learning_rate_multiplier": 25}
                },
                "adept": {"lora_rank": 8, "max_seq_length": 128},
            },
        )
        while (job := client.fine_tuning.jobs.retrieve(job.id)).status in (
            "validating_files",
            "queued",
            "running",
        ):
            time.sleep(0.5)
        api_s = time.monotonic() - t0
        if job.status != "succeeded":
            raise SystemExit(f"the job ended {job.status}: {job.error}")
        record = SQLiteJobStore(config.platform.jobs_db).get("bench", job.id)
        steps = record.history[-1].step if record.history else 0

        # Baseline: the same training config, run directly (same entry point, same Ray, no API).
        direct_dir = data_dir / "direct"
        direct_dir.mkdir()
        cfg = dict(record.config)
        cfg.update(adapter="direct-baseline", output={**cfg.get("output", {}), "run_name": "direct-baseline"})
        (direct_dir / "job.yaml").write_text(yaml.safe_dump(cfg))
        env = training_env(config.platform, direct_dir)
        address = platform.runner.executor.ray_address
        t0 = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "training.finetune", "--config", "job.yaml", "--address", address],
            cwd=direct_dir,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        direct_s = time.monotonic() - t0
        if done.returncode != 0:
            raise SystemExit(f"the direct run failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    finally:
        platform.stop()
        shutil.rmtree(data_dir, ignore_errors=True)

    rows_out = [
        ("API job: create -> succeeded (s)", api_s),
        ("  of which queued before training (s)", float((record.started_at or 0) - record.created_at)),
        ("direct python -m training.finetune (s)", direct_s),
        ("ratio API / direct", api_s / direct_s),
        ("steps", float(steps)),
        ("trained tokens", float(job.trained_tokens or 0)),
        ("platform start (s)", start_s),
    ]
    print_table(
        f"fine-tuning job, bundled SmolLM2-135M, {epochs} epochs, LoRA r8", ["what", "value"], rows_out
    )
    write_result(
        "finetune_api",
        {
            "epochs": epochs,
            "steps": steps,
            "trained_tokens": job.trained_tokens,
            "api_seconds": round(api_s, 2),
            "direct_seconds": round(direct_s, 2),
            "baseline": "python -m training.finetune with the job's config on the same Ray",
            "ratio_api_over_direct": round(api_s / direct_s, 3),
            "platform_start_seconds": round(start_s, 1),
            "quick": args.quick,
        },
        figures=[
            Figure(
                f"fine-tuning job through the OpenAI API, create -> succeeded ({epochs} epochs, {steps} steps, "
                "bundled SmolLM2-135M, LoRA r8)",
                api_s,
                "s",
                "the same job config run directly (python -m training.finetune, same Ray)",
                direct_s,
                higher_is_better=False,
            )
        ],
        dtype="bfloat16" if cpu_bf16() else "float32",  # what train.dtype auto picks on this CPU
    )


if __name__ == "__main__":
    main()
