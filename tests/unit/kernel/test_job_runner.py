"""The embedded job runner's supervision: start, follow, settle, cancel, adopt after a restart, resume.

Real processes, real SQLite store, the real kernel publishing. The trained program is a stand-in
with the training entry point's command line and structured events (``--config job.yaml --address
...``, ``{"adept": "step", ...}``, the result or error event), because what is under test here is
the supervision; real training through the runner runs in tests/integration/finetuning.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest

from adept.config.finetuning import FineTuningConfig
from adept.config.platform import PlatformConfig
from adept.errors import Unavailable
from adept.finetuning import process
from adept.finetuning.jobs import AdeptOptions, Hyperparameters, JobRecord, new_job_id
from adept.finetuning.runner import JobRunner
from adept.finetuning.store import SQLiteJobStore

TRAINER = r"""
import json, os, shutil, sys, time, yaml
cfg = yaml.safe_load(open("job.yaml"))
mode = cfg["description"]
with open("starts", "a") as f:
    f.write(f"{os.getpid()}\n")
assert os.environ["ADEPT_CONFIG"].endswith("platform.yaml") and "ADEPT_ADMIN_KEY" not in os.environ
platform = yaml.safe_load(open(os.environ["ADEPT_CONFIG"]))

def emit(kind, **kw):
    print("(RayTrainWorker pid=1) " + json.dumps({"adept": kind, **kw}), flush=True)

print("[adept.train] step 9/9 train_loss 0.1 (free text: never read)", flush=True)
emit("step", step=1, total_steps=2, train_loss=2.5, lr=1e-3, tokens=10)
if mode == "crash":
    sys.exit(3)
if mode == "bad-data":
    emit("error", code="invalid_dataset", message="train.jsonl:2: not valid JSON")
    sys.exit(2)
if mode.startswith("gated:"):
    while not os.path.exists(mode[6:]):
        time.sleep(0.05)
if mode == "forever":
    time.sleep(600)
run_dir = os.path.join(platform["data_dir"], "training", cfg["output"]["run_name"])
shutil.copytree(os.environ["TEST_PEFT_DIR"], os.path.join(run_dir, "result"), dirs_exist_ok=True)
state = {"run_id": cfg["output"]["run_name"], "tenant": cfg["tenant"], "adapter": cfg["adapter"], "result": "result"}
open(os.path.join(run_dir, "adept_job.json"), "w").write(json.dumps(state))
emit("step", step=2, total_steps=2, train_loss=1.25, lr=1e-3, tokens=20, checkpoint=run_dir + "/checkpoint-0000002")
emit("result", run_dir=run_dir, steps=2, tokens_seen=20)
"""


@pytest.fixture
def env(tmp_path: Path, monkeypatch):
    import asyncio

    from adept.config.tenant import TenantSpec
    from adept.finetuning.executors import LocalProcess
    from adept.finetuning.files import FileStore
    from adept.finetuning.service import FineTuning
    from adept.platform import Platform
    from tests.unit.gateway.fakes import write_peft_dir

    monkeypatch.setenv("ADEPT_ADMIN_KEY", "adept-admin-must-not-reach-jobs")
    script = tmp_path / "trainer.py"
    script.write_text(TRAINER)
    data = tmp_path / "train.jsonl"
    data.write_text("{}\n")
    platform = PlatformConfig(data_dir=tmp_path / "data", model="bundled:test-base")
    kernel = Platform(platform)
    asyncio.run(kernel.create_tenant(TenantSpec(name="acme")))
    monkeypatch.setenv("TEST_PEFT_DIR", str(write_peft_dir(tmp_path / "peft", kernel.base_model_id)))
    store = SQLiteJobStore(platform.jobs_db)
    settings = FineTuningConfig(runner_poll_interval_s=0.1, runner_max_attempts=2)
    runners: list[JobRunner] = []

    def owner() -> FineTuning:
        executor = LocalProcess(platform, entrypoint=[sys.executable, str(script)])
        return FineTuning(kernel, FileStore(str(tmp_path / "files")), store, settings, executor=executor)

    def runner() -> JobRunner:
        r = JobRunner(owner())
        runners.append(r)
        return r

    yield {"store": store, "data": data, "runner": runner, "platform": platform, "owner": owner}
    for r in runners:
        r.stop(interrupt_jobs=False)
    for rec in store.active():
        process.stop(rec.run, grace_s=1)
    kernel.close()


def job(env, mode: str) -> JobRecord:
    job_id = new_job_id()
    return env[
        "store"
    ].create(
        JobRecord(
            id=job_id,
            tenant="acme",
            created_at=int(time.time()),
            model="base",
            training_file=str(env["data"]),  # a config's path (as `adept finetune` makes)
            seed=1,
            hyperparameters=Hyperparameters(n_epochs=1, batch_size=1, learning_rate_multiplier=1),
            options=AdeptOptions(lora_rank=4, lora_alpha=8, max_seq_length=64),
            adapter="ft-" + job_id[6:14],
            config={
                "tenant": "acme",
                "adapter": "ft-" + job_id[6:14],
                "description": mode,
                "data": {"path": str(env["data"])},
                "output": {"run_name": job_id},
            },
        )
    )


def until(env, runner: JobRunner | None, job_id: str, check, timeout: float = 30) -> JobRecord:
    """Reconcile with ``runner`` (None: its own thread does) until ``check`` holds for the job."""
    deadline = time.monotonic() + timeout
    while True:
        if runner is not None:
            runner.reconcile()
        rec = env["store"].get("acme", job_id)
        if check(rec):
            return rec
        assert time.monotonic() < deadline, rec.model_dump_json(exclude={"config"})
        time.sleep(0.1)


def starts(env, rec: JobRecord) -> list[str]:
    return (Path(rec.run.log_path).parent / "starts").read_text().split()


def test_a_job_goes_from_validating_to_succeeded_with_its_steps(env) -> None:
    r = env["runner"]()
    rec = until(env, r, job(env, "ok").id, lambda x: x.status == "succeeded")
    assert rec.fine_tuned_model == f"ft:base:acme::{rec.id[6:14]}" and rec.trained_tokens == 20
    assert [(h.step, h.train_loss) for h in rec.history] == [(1, 2.5), (2, 1.25)]  # events only, no log text
    assert rec.history[1].checkpoint.endswith("checkpoint-0000002") and rec.history[0].learning_rate == 1e-3
    assert [v.name for v in env["owner"]().platform.registry.list("acme")] == [rec.adapter]  # published
    assert rec.queued_at and rec.started_at and rec.finished_at and rec.run.attempts == 1


def test_a_typed_training_error_fails_the_job_naming_the_file(env) -> None:
    rec = until(env, env["runner"](), job(env, "bad-data").id, lambda x: x.status == "failed")
    assert rec.error.code == "invalid_training_file" and rec.error.param == "training_file"
    assert "train.jsonl:2" in rec.error.message and len(starts(env, rec)) == 1  # not retried


def test_a_process_that_dies_silently_is_retried_then_fails(env) -> None:
    rec = until(env, env["runner"](), job(env, "crash").id, lambda x: x.status == "failed")
    assert rec.error.code == "training_failed" and rec.run.failures == 2 and len(starts(env, rec)) == 2
    assert sum(r.interrupted for r in rec.resumes) == 1


def test_cancel_stops_the_process_at_once(env) -> None:
    r = env["runner"]()
    rec = until(env, r, job(env, "forever").id, lambda x: x.status == "running" and x.history)
    assert process.alive(rec.run)
    assert asyncio.run(env["owner"]().cancel("acme", rec.id)).status == "cancelled"
    assert not process.alive(rec.run)
    r.reconcile()
    assert env["store"].get("acme", rec.id).status == "cancelled"


def test_a_restarted_runner_adopts_the_running_process(env, tmp_path) -> None:
    gate = tmp_path / "gate"
    first = env["runner"]()
    rec = until(env, first, job(env, f"gated:{gate}").id, lambda x: x.status == "running" and x.history)
    first.stop(interrupt_jobs=False)  # the runner's process went away; the job did not
    second = env["runner"]()
    second.reconcile()
    gate.touch()
    done = until(env, second, rec.id, lambda x: x.status == "succeeded")
    assert starts(env, done) == [str(rec.run.pid)] and done.run.attempts == 1  # adopted, not started again


def test_stopping_the_platform_interrupts_jobs_and_the_next_start_resumes_them(env, tmp_path) -> None:
    gate = tmp_path / "gate"
    first = env["runner"]().start()
    first_run = until(env, None, job(env, f"gated:{gate}").id, lambda x: x.status == "running" and x.history)
    with pytest.raises(Unavailable, match="another job runner"):
        env["runner"]().start()  # one runner per data dir
    first.stop()  # as `adept up` does on Ctrl-C
    assert not process.alive(first_run.run)
    gate.touch()
    done = until(env, env["runner"](), first_run.id, lambda x: x.status == "succeeded")
    assert (
        done.run.attempts == 2 and done.run.failures == 0 and [r.interrupted for r in done.resumes] == [True]
    )


def test_deleting_the_tenant_stops_its_running_job(env) -> None:
    r = env["runner"]()
    rec = until(env, r, job(env, "forever").id, lambda x: x.status == "running" and x.history)
    assert asyncio.run(env["owner"]().purge_tenant("acme")) == 1
    assert not process.alive(rec.run) and env["store"].list("acme") == []
    assert not Path(rec.run.log_path).parent.exists()  # its job directory went too
    r.reconcile()  # the runner's next round finds nothing to do, and says nothing about it


def test_finished_jobs_are_pruned_after_their_retention_with_their_directories(env) -> None:
    r = env["runner"]()
    rec = until(env, r, job(env, "ok").id, lambda x: x.status == "succeeded")
    run_dir = Path(env["platform"].data_dir) / "training" / rec.id
    job_dir = Path(rec.run.log_path).parent
    assert run_dir.is_dir() and job_dir.is_dir()
    owner = env["owner"]()
    assert owner.prune() == []  # 30 days by default: kept
    owner.clock = lambda: rec.finished_at + 31 * 86_400
    assert owner.prune() == [rec.id]
    assert env["store"].list("acme") == [] and not run_dir.exists() and not job_dir.exists()
    assert [v.name for v in owner.platform.registry.list("acme")] == [rec.adapter]  # the model stays
