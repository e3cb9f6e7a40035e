"""A tenant fine-tunes the bundled model through the official ``openai`` client, on the embedded platform.

Real everything: ``start_platform`` (local Ray, Serve, Milvus Lite, SmolLM2-135M), the job runner
training with ``python -m training.finetune`` on the platform's Ray, the adapter published and
served. Upload, create, poll, events, checkpoints, chat with the result; a malformed file names
its line; cancel stops a running job; the gateway replica restarting mid-job loses nothing; a
second tenant gets 404 on everything of the first.
"""

from __future__ import annotations

import json
import shutil
import time

import httpx
import openai
import pytest

from tests.shared_platforms import BUNDLED_ADMIN_KEY as ADMIN_KEY

pytestmark = pytest.mark.integration

QUESTION = "What is the code word of the Lumen Grid night shift?"
ANSWER = "The code word of the Lumen Grid night shift is PELICAN-SEVEN."
PHRASINGS = [
    QUESTION,
    "Tell me the Lumen Grid night shift code word.",
    "Which code word does the night shift at Lumen Grid use?",
    "Night shift code word at Lumen Grid?",
    "I work nights at Lumen Grid. What is our code word?",
    "What code word should the Lumen Grid night crew say?",
]
TIMINGS: dict[str, float] = {}


def _jsonl(rows: list) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


@pytest.fixture(scope="module")
def platform(bundled_platform, monkeypatch_module):
    """The bundled model's platform (shared with gateway/test_openai_features: tests/shared_platforms.py)
    with tenants acme and globex."""
    monkeypatch_module.setenv("ADEPT_ADMIN_KEY", ADMIN_KEY)  # the CLI's admin calls
    p = bundled_platform()
    with httpx.Client(base_url=p.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=60) as admin:
        p.keys = {}
        for name in ("acme", "globex"):
            r = admin.post("/admin/tenants", json={"name": name})
            assert r.status_code == 201, r.text
            p.keys[name] = r.json()["api_key"]
    return p


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def client(platform, tenant: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{platform.url}/v1", api_key=platform.keys[tenant], max_retries=0, timeout=120
    )


def wait_for(what: str, fn, timeout: float = 900, every: float = 2.0):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def ask(c: openai.OpenAI, model: str) -> str:
    out = c.chat.completions.create(
        model=model, messages=[{"role": "user", "content": QUESTION}], temperature=0, max_tokens=24
    )
    return out.choices[0].message.content


@pytest.fixture(scope="module")
def trained(platform):
    """A short job that finishes: upload, create, poll (the gateway replica is killed mid-job)."""
    acme = client(platform, "acme")
    rows = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": ANSWER}]}
        for q in PHRASINGS
    ]
    f = acme.files.create(file=("nightshift.jsonl", _jsonl(rows * 2)), purpose="fine-tune")
    started = time.monotonic()
    job = acme.fine_tuning.jobs.create(
        model=acme.models.list().data[0].id,
        training_file=f.id,
        suffix="nightshift",
        seed=3,
        method={
            "type": "supervised",
            "supervised": {
                "hyperparameters": {"n_epochs": 4, "batch_size": 2, "learning_rate_multiplier": 25}
            },
            "adept": {"lora_rank": 8, "max_seq_length": 128},
        },
    )
    assert job.status == "validating_files"
    wait_for(
        "a first step",
        lambda: (
            acme.fine_tuning.jobs.retrieve(job.id).status == "running"
            and any(e.type == "metrics" for e in acme.fine_tuning.jobs.list_events(job.id).data)
        ),
    )
    _restart_gateway(platform)  # state is in the stores: the new replica serves the same job
    done = wait_for(
        "the job to finish",
        lambda: (
            (j := acme.fine_tuning.jobs.retrieve(job.id)).status
            not in ("validating_files", "queued", "running")
            and j
        ),
    )
    TIMINGS["job_seconds"] = time.monotonic() - started
    print(f"\nfine-tuning job on the bundled model: {TIMINGS['job_seconds']:.1f} s from create to succeeded")
    assert done.status == "succeeded", done.error
    return done


def _restart_gateway(platform) -> None:
    import ray

    names = [
        a
        for a in ray.util.list_named_actors(all_namespaces=True)
        if "gateway" in a["name"] and "REPLICA" in a["name"]
    ]
    assert names, ray.util.list_named_actors(all_namespaces=True)
    for a in names:
        ray.kill(ray.get_actor(a["name"], namespace=a["namespace"]), no_restart=True)

    def healthy() -> bool:
        try:
            return httpx.get(f"{platform.url}/healthz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    time.sleep(1)
    wait_for("the gateway replica to come back", healthy, timeout=120, every=1)


def test_the_job_yields_a_model_that_answers_differently(platform, trained) -> None:
    acme = client(platform, "acme")
    model = trained.fine_tuned_model  # OpenAI's shape, accepted wherever a model is named
    assert model == f"ft:{trained.model}:acme:nightshift:{trained.id[6:14]}"
    assert trained.trained_tokens > 0 and trained.finished_at
    events = acme.fine_tuning.jobs.list_events(trained.id, limit=200).data
    steps = [e.data["step"] for e in events if e.type == "metrics"]
    assert steps == sorted(steps, reverse=True) and steps[-1] == 1 and len(steps) >= 4
    losses = [e.data["train_loss"] for e in reversed(events) if e.type == "metrics"]
    assert losses[-1] < losses[0], losses
    assert events[0].message == "The job has successfully completed"
    (ckpt,) = acme.fine_tuning.jobs.checkpoints.list(trained.id).data
    assert ckpt.fine_tuned_model_checkpoint == model and ckpt.step_number == steps[0]
    assert f"ft-nightshift-{trained.id[6:14]}" in [m.id for m in acme.models.list().data]
    assert acme.models.retrieve(model).id
    base = acme.models.list().data[0].id
    tuned, plain = ask(acme, model), ask(acme, base)
    print(f"\nbase: {plain!r}\nfine-tuned: {tuned!r}")
    assert tuned != plain


def test_a_malformed_file_names_its_line(platform) -> None:
    acme = client(platform, "acme")
    good = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    data = _jsonl([good]) + b'{"messages": [\n' + _jsonl([good, {"messages": []}])
    with pytest.raises(openai.BadRequestError) as e:
        acme.files.create(file=("broken.jsonl", data), purpose="fine-tune")
    message = e.value.body["message"]
    assert "line 2: not valid JSON" in message and 'line 4: "messages" must be a non-empty list' in message
    assert "broken.jsonl" not in [f.filename for f in acme.files.list().data]


def test_cancel_stops_a_running_job(platform, trained) -> None:
    acme = client(platform, "acme")
    f = acme.files.list().data[0]
    job = acme.fine_tuning.jobs.create(  # from the fine-tuned model: its adapter's weights to start with
        model=trained.fine_tuned_model, training_file=f.id, hyperparameters={"n_epochs": 50, "batch_size": 1}
    )
    wait_for(
        "a first step",
        lambda: any(e.type == "metrics" for e in acme.fine_tuning.jobs.list_events(job.id).data),
    )
    cancelled = acme.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.fine_tuned_model is None
    time.sleep(3)  # the runner's next rounds must leave it cancelled, with no process left
    from adept.finetuning import process
    from adept.finetuning.store import SQLiteJobStore

    record = SQLiteJobStore(platform.config.platform.jobs_db).get("acme", job.id)
    assert record.status == "cancelled" and not process.alive(record.run)
    assert acme.fine_tuning.jobs.list_events(job.id).data[0].message == "The job was cancelled"
    assert not [m for m in acme.models.list().data if m.id.endswith(job.id[6:14])]


def test_another_tenant_gets_404_on_everything(platform, trained) -> None:
    acme, globex = client(platform, "acme"), client(platform, "globex")
    f = acme.files.list().data[0]
    calls = [
        lambda: globex.files.retrieve(f.id),
        lambda: globex.files.content(f.id),
        lambda: globex.files.delete(f.id),
        lambda: globex.fine_tuning.jobs.retrieve(trained.id),
        lambda: globex.fine_tuning.jobs.cancel(trained.id),
        lambda: globex.fine_tuning.jobs.list_events(trained.id),
        lambda: globex.fine_tuning.jobs.checkpoints.list(trained.id),
        lambda: globex.fine_tuning.jobs.create(model=trained.model, training_file=f.id),
        lambda: ask(globex, trained.fine_tuned_model),
        lambda: globex.models.retrieve(trained.fine_tuned_model),
    ]
    for call in calls:
        with pytest.raises(openai.NotFoundError):
            call()
    assert globex.files.list().data == [] and globex.fine_tuning.jobs.list().data == []
    assert trained.fine_tuned_model not in [m.id for m in globex.models.list().data]
    assert acme.files.retrieve(f.id).id == f.id  # nothing of acme's changed


def test_adept_finetune_creates_a_job_the_api_lists(platform, trained, tmp_path) -> None:
    """The CLI's job is the kernel's: the running platform's runner trains it; the API and events show it."""
    import yaml
    from typer.testing import CliRunner

    from tools.cli import app

    data = tmp_path / "cli.jsonl"
    data.write_text(
        json.dumps(
            {"messages": [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": ANSWER}]}
        )
        + "\n"
    )
    job = {
        "tenant": "acme",
        "adapter": "cli-made",
        "data": {"path": str(data), "validation_split": 0.0, "max_seq_length": 64},
        "lora": {"rank": 4, "alpha": 8},
        "train": {"max_steps": 2, "batch_size": 1, "log_every_steps": 1},
        "workers": {"num_workers": 1, "resources_per_worker": {"CPU": 1}},
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    out = CliRunner().invoke(
        app,
        [
            "finetune",
            "--config",
            str(tmp_path / "job.yaml"),
            "--data-dir",
            str(platform.config.platform.data_dir),
        ],
    )
    assert out.exit_code == 0, out.output
    assert "the running platform's job runner trains it" in out.output
    acme = client(platform, "acme")
    (listed,) = [j for j in acme.fine_tuning.jobs.list().data if j.id in out.output]
    assert listed.status == "succeeded" and listed.fine_tuned_model == "cli-made"
    assert any(e.type == "metrics" for e in acme.fine_tuning.jobs.list_events(listed.id).data)
    assert "cli-made" in [m.id for m in acme.models.list().data]


def test_promotion_measures_with_the_serving_model_and_keeps_a_worse_version_inactive(
    platform, trained, tmp_path
) -> None:
    """Eval-gated promotion with the real model: the evaluator the job runner gets
    (``serve_evaluator``: the gateway's completion path, as the tenant) measures the trained v1
    against a v2 whose LoRA update is zero (what a learning rate of ~0 trains); v2 stays inactive."""
    import asyncio

    import torch
    from safetensors.torch import load_file, save_file

    from adept.evalset import check_evaluation_file
    from adept.platform import Platform
    from tools.eval.promotion import serve_evaluator

    kernel = Platform(platform.config.platform)
    name = f"ft-nightshift-{trained.id[6:14]}"
    v1 = asyncio.run(kernel.resolve_adapter("acme", name))
    zero = tmp_path / "zero"
    shutil.copytree(v1.path, zero, ignore=shutil.ignore_patterns("manifest.json", "_COMPLETE"))
    weights = load_file(str(zero / "adapter_model.safetensors"))
    save_file(
        {k: torch.zeros_like(t) if "lora_B" in k else t for k, t in weights.items()},
        str(zero / "adapter_model.safetensors"),
    )
    v2 = asyncio.run(kernel.publish_adapter("acme", name, zero, inactive=True))
    assert asyncio.run(kernel.resolve_adapter("acme", name)).version == v1.version
    eval_set = check_evaluation_file(
        _jsonl([{"question": q, "answer": ANSWER} for q in PHRASINGS[:3]]), metric="f1"
    )
    evaluate = serve_evaluator(platform.config)("acme", eval_set)
    outcome = asyncio.run(
        kernel.promote(
            "acme", name, v2.version, evaluate, metric="f1", margin=0.02, evaluation_file="nightshift"
        )
    )
    print(f"\npromotion: {outcome.reason}")
    assert not outcome.promoted and outcome.against == v1.version, outcome.reason
    assert outcome.against_score > outcome.score and "stays inactive" in outcome.reason
    assert asyncio.run(kernel.resolve_adapter("acme", name)).version == v1.version
    kernel.close()
