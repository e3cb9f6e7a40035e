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

    def owner(evaluator=None) -> FineTuning:
        executor = LocalProcess(platform, entrypoint=[sys.executable, str(script)])
        files = FileStore(str(tmp_path / "files"))
        return FineTuning(kernel, files, store, settings, executor=executor, evaluator=evaluator)

    def runner(evaluator=None) -> JobRunner:
        r = JobRunner(owner(evaluator))
        runners.append(r)
        return r

    yield {"store": store, "data": data, "runner": runner, "platform": platform, "owner": owner}
    for r in runners:
        r.stop(interrupt_jobs=False)
    for rec in store.active():
        process.stop(rec.run, grace_s=1)
    kernel.close()


def job(env, mode: str, adapter: str | None = None, evaluation_file: str | None = None) -> JobRecord:
    job_id = new_job_id()
    adapter = adapter or "ft-" + job_id[6:14]
    return env["store"].create(
        JobRecord(
            id=job_id,
            tenant="acme",
            created_at=int(time.time()),
            model="base",
            training_file=str(env["data"]),  # a config's path (as `adept finetune` makes)
            seed=1,
            hyperparameters=Hyperparameters(n_epochs=1, batch_size=1, learning_rate_multiplier=1),
            options=AdeptOptions(lora_rank=4, lora_alpha=8, max_seq_length=64),
            adapter=adapter,
            evaluation_file=evaluation_file,
            config={
                "tenant": "acme",
                "adapter": adapter,
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


EVAL_SET = b'{"question": "What is the RS-1 charge?", "answer": "$11.40", "expect": {"format": "\\\\(Schedule R\\\\)"}}\n'


def test_a_worse_version_from_a_job_with_an_evaluation_file_stays_inactive_with_the_reason(env) -> None:
    """Eval-gated promotion on the job path: publish inactive, measure new vs live, promote or not.

    The evaluator is the owner's injected seam (``FineTuning(evaluator=...)``); here it scores by
    version so that v2 is deliberately worse (as an adapter trained at learning rate ~0 measures):
    the kernel's decision and what the job records are under test. The real-model evaluator
    (``tools.eval.promotion.serve_evaluator``) is exercised with a platform in tests/integration.
    """
    owner = env["owner"]()
    eval_file = owner.files.create("acme", "eval.jsonl", "evals", EVAL_SET)
    measured: list[tuple[str, str, int]] = []

    def evaluator(tenant: str, eval_set):
        async def evaluate(model_id: str) -> dict[str, float]:
            measured.append((tenant, model_id, len(eval_set.items)))
            return {"combined": {"v1": 0.8, "v2": 0.3}[model_id.split("@")[1]], "f1": 0.5}

        return evaluate

    r = env["runner"](evaluator)
    first = until(env, r, job(env, "ok", "style", eval_file.id).id, lambda x: x.status == "succeeded")
    assert first.adapter_version == "v1"
    assert any(n.key == "promotion" and n.message.startswith("Promoted") for n in first.notes)
    second = until(env, r, job(env, "ok", "style", eval_file.id).id, lambda x: x.status == "succeeded")
    assert second.adapter_version == "v2"
    # v2 stays published and inactive: v1 keeps serving; the job's events say why, with the scores.
    kernel = owner.platform
    assert asyncio.run(kernel.resolve_adapter("acme", "style")).version == "v1"
    assert set(kernel.registry.versions("acme", "style")) == {"v1", "v2"}
    (note,) = [n for n in second.notes if n.key == "promotion"]
    assert note.level == "warn" and note.message.startswith("Kept inactive (combined 0.300 vs 0.800 for v1)")
    assert "stays inactive" in note.message and "margin 0.02" in note.message
    events = [e.message for e in owner_events(owner, second.id)]
    assert any("Kept inactive" in m for m in events)
    assert ("acme", "acme/style@v2", 1) in measured and ("acme", "acme/style@v1", 1) in measured


def test_a_job_without_an_evaluator_publishes_its_evaluated_version_inactive(env) -> None:
    owner = env["owner"]()
    eval_file = owner.files.create("acme", "eval.jsonl", "evals", EVAL_SET)
    r = env["runner"]()
    rec = until(env, r, job(env, "ok", "style", eval_file.id).id, lambda x: x.status == "succeeded")
    (note,) = [n for n in rec.notes if n.key == "promotion"]
    assert "published inactive and not measured" in note.message


def owner_events(owner, job_id: str):
    return asyncio.run(owner.events("acme", job_id))


CHAT = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello (Schedule R)."}]}\n'


def test_create_resolves_auto_from_the_dataset_and_checks_the_evaluation_file_first(env) -> None:
    from adept.config.finetuning import auto_hyperparameters
    from adept.errors import InvalidRequest
    from adept.finetuning.service import JobRequest

    owner = env["owner"]()
    base = owner.platform.base_model_id
    train = owner.files.create("acme", "train.jsonl", "fine-tune", CHAT * 48)
    answers_only = owner.files.create("acme", "qa.jsonl", "evals", b'{"question": "q?", "answer": "a"}\n')
    good = owner.files.create("acme", "eval.jsonl", "evals", EVAL_SET)

    def create(**kw):
        return asyncio.run(owner.create("acme", JobRequest(model=base, training_file=train.id, **kw)))

    # The promotion metric (combined) needs questions with `expect`: refused before anything is stored.
    with pytest.raises(InvalidRequest) as e:
        create(evaluation_file=answers_only.id)
    assert e.value.param == "evaluation_file" and "expect" in e.value.message
    with pytest.raises(InvalidRequest) as e:  # a training file is not an evaluation set
        create(evaluation_file=train.id)
    assert e.value.param == "evaluation_file" and "'evals'" in e.value.message
    assert env["store"].list("acme") == []

    rec = create(evaluation_file=good.id)
    auto = auto_hyperparameters(48)
    assert rec.evaluation_file == good.id
    assert (rec.hyperparameters.n_epochs, rec.hyperparameters.batch_size) == (auto.n_epochs, auto.batch_size)
    assert rec.hyperparameters.learning_rate_multiplier == auto.learning_rate_multiplier == 5.0
    assert rec.config["data"]["packing"] is False and rec.config["train"]["epochs"] == auto.n_epochs
    # Asked-for values win over auto.
    rec2 = create(n_epochs=2, batch_size=1, learning_rate_multiplier=0.5)
    assert rec2.hyperparameters.n_epochs == 2 and rec2.hyperparameters.learning_rate_multiplier == 0.5


def test_an_api_job_records_its_measurement_in_events_checkpoint_metrics_and_manifest(env) -> None:
    """The API path end to end (``FineTuning.create`` with an ``evaluation_file``): the job's model is its
    own ``ft:`` adapter, so *the active one* of that name is none and the new version goes live (the
    definition in ``adept.finetuning.promotion``); what it measured is recorded all the same."""
    from adept.finetuning.service import JobRequest

    owner = env["owner"]()
    train = owner.files.create("acme", "train.jsonl", "fine-tune", CHAT * 4)
    evals = owner.files.create("acme", "eval.jsonl", "evals", EVAL_SET)

    def evaluator(tenant: str, eval_set):
        async def evaluate(model_id: str) -> dict[str, float]:
            return {"combined": 0.7, "format": 1.0}

        return evaluate

    request = JobRequest(model=owner.platform.base_model_id, training_file=train.id, evaluation_file=evals.id)
    created = asyncio.run(owner.create("acme", request))
    rec = until(env, env["runner"](evaluator), created.id, lambda x: x.status == "succeeded")
    assert rec.evaluation is not None and rec.evaluation.promoted and rec.evaluation.against is None
    (checkpoint,) = asyncio.run(owner.checkpoints("acme", rec.id))
    assert checkpoint.fine_tuned_model_checkpoint == rec.fine_tuned_model
    assert checkpoint.metrics["eval_combined"] == 0.7 and checkpoint.metrics["eval_format"] == 1.0
    assert checkpoint.metrics["eval_promoted"] == 1.0 and "eval_combined_active" not in checkpoint.metrics
    version = owner.platform.registry.resolve("acme", rec.adapter, fetch=False)
    assert version.manifest.evaluation is not None and version.manifest.evaluation.evaluation_file == evals.id
    assert any(e.message.startswith("Promoted (combined 0.700)") for e in owner_events(owner, rec.id))
