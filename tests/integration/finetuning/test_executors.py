"""One job model, two executors: the same job runs as a local process and as a Ray job, with the same
events, the same checkpoints, the same publish step and the same result.

The jobs are created the way the API creates them (``FineTuning.create`` over an uploaded file) and
driven by the one driver (``JobRunner``); the only difference is the executor: ``LocalProcess`` or
``RayJobs`` on a local Ray head with token auth (tests/ray_head.py). The trained program is the
operator tests' stand-in for ``python -m training.finetune`` (same command line, the real structured
events, a real PEFT result handed off to the platform's publisher): what is under test is the job
path, not the recipe (tests/integration/training trains for real).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

from adept.config.finetuning import FineTuningConfig
from adept.config.platform import PlatformConfig
from adept.config.tenant import TenantSpec
from adept.finetuning.executors import LocalProcess, RayJobs
from adept.finetuning.files import FileStore
from adept.finetuning.jobs import job_checkpoints, job_events
from adept.finetuning.runner import JobRunner
from adept.finetuning.service import FineTuning, JobRequest
from adept.finetuning.store import SQLiteJobStore
from adept.platform import Platform

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
TRAINER = REPO / "tests" / "integration" / "operators" / "fake_trainer.py"
LINE = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
SEEN: dict[str, dict] = {}
HOLD = {
    "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "HOLD-UNTIL-STOPPED"}]
}


@pytest.fixture(scope="module")
def ray_head():
    from tests.ray_head import start_head

    head = start_head(Path(tempfile.mkdtemp(prefix="aex-", dir="/tmp")))
    try:
        yield head
    finally:
        head.stop()
        shutil.rmtree(head.temp_dir, ignore_errors=True)


class Recording:
    """The real Jobs SDK client, noting what each ``submit_job`` asked for (Ray's job details omit the
    entrypoint's resources)."""

    def __init__(self, client) -> None:
        self.client, self.submitted = client, []

    def submit_job(self, **kwargs):
        self.submitted.append(kwargs)
        return self.client.submit_job(**kwargs)

    def __getattr__(self, name: str):
        return getattr(self.client, name)


def owner(tmp_path: Path, executor_kind: str, ray_head=None) -> FineTuning:
    platform = PlatformConfig(
        data_dir=tmp_path / "data", model="bundled:test-base", training_publish="handoff"
    )
    kernel = Platform(platform)
    asyncio.run(kernel.create_tenant(TenantSpec(name="acme")))
    if executor_kind == "local":
        executor = LocalProcess(platform, entrypoint=[sys.executable, str(TRAINER)])
    else:
        env = {
            "PYTHONPATH": str(REPO),
            "ADEPT_DATA_DIR": str(platform.data_dir),
            "ADEPT_MODEL": platform.model,
            "ADEPT_TRAINING_PUBLISH": "handoff",
        }
        executor = RayJobs(
            Recording(ray_head.client()), entrypoint=f"{sys.executable} {TRAINER} --config job.yaml", env=env
        )
    settings = FineTuningConfig(runner_poll_interval_s=0.2)
    return FineTuning(
        kernel,
        FileStore(str(tmp_path / "files")),
        SQLiteJobStore(platform.jobs_db),
        settings,
        executor=executor,
    )


def run(ft: FineTuning, rows: list, *, until, timeout: float = 180):
    tenant = asyncio.run(ft.platform.get_tenant("acme"))
    data = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    f = asyncio.run(ft.upload_file(tenant, "t.jsonl", "fine-tune", data))
    job = asyncio.run(
        ft.create(tenant, JobRequest(model="bundled:test-base", training_file=f.id, suffix="same"))
    )
    runner = JobRunner(ft)
    deadline = time.monotonic() + timeout
    while True:
        runner.reconcile()
        record = ft.jobs.get("acme", job.id)
        if until(record):
            return record
        assert time.monotonic() < deadline, record.model_dump_json(exclude={"config"})
        time.sleep(0.5)


def outcome(record) -> dict:
    """What a tenant sees of a finished job, minus its ids and times."""

    def plain(text: str) -> str:
        return (
            text.replace(record.id, "<job>")
            .replace(record.training_file, "<file>")
            .replace(record.id[6:14], "<id>")
        )

    return {
        "status": record.status,
        "steps": [(h.step, h.total_steps, h.train_loss, h.tokens) for h in record.history],
        "events": sorted(  # (the order of events within one second may differ)
            (e.level, e.type, json.dumps(e.data), plain(e.message)) for e in job_events(record)
        ),
        "checkpoints": [(c.step_number, c.metrics) for c in job_checkpoints(record)],
        "model": record.fine_tuned_model.replace(record.id[6:14], "<id>"),
        "version": record.adapter_version,
        "tokens": record.trained_tokens,
    }


@pytest.mark.parametrize("kind", ["local", "ray"])
def test_the_same_job_gives_the_same_result_on_both_executors(kind, tmp_path, ray_head) -> None:
    ft = owner(tmp_path, kind, ray_head)
    record = run(ft, [LINE], until=lambda r: not r.active)
    assert record.status == "succeeded", record.error
    assert record.run.executor == kind and (record.run.ref is not None) == (kind == "ray")
    if kind == "ray":  # the driver reserved a CPU: on a cluster it runs on a worker, never on the head
        assert ft.executor.client.submitted[0]["entrypoint_num_cpus"] == 1
    got = outcome(record)
    assert got["model"] == "ft:bundled:test-base:acme:same:<id>" and got["version"] == "v1"
    assert got["steps"] == [(1, 4, 2.5, 10), (4, 4, 1.25, 40)] and got["tokens"] == 40
    assert [v.id for v in ft.platform.registry.list("acme")] == [f"acme/{record.adapter}@v1"]
    SEEN[kind] = got
    if len(SEEN) == 2:  # the second executor: everything the tenant sees is the same
        assert SEEN["local"] == SEEN["ray"]


@pytest.mark.parametrize("kind", ["local", "ray"])
def test_cancel_stops_the_run_on_both_executors(kind, tmp_path, ray_head) -> None:
    ft = owner(tmp_path, kind, ray_head)
    record = run(ft, [HOLD], until=lambda r: r.status == "running" and r.history)
    cancelled = asyncio.run(ft.cancel("acme", record.id))
    assert cancelled.status == "cancelled"
    if kind == "ray":
        client = ray_head.client()
        deadline = time.monotonic() + 60
        while str(client.get_job_status(record.run.ref).value) != "STOPPED":
            assert time.monotonic() < deadline
            time.sleep(0.5)
    else:
        from adept.finetuning import process

        assert not process.alive(record.run)
    JobRunner(ft).reconcile()
    assert ft.jobs.get("acme", record.id).status == "cancelled"
