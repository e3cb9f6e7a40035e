"""The files and fine-tuning API through the official ``openai`` client, on the gateway's real app.

Real stores (SQLite tenants and jobs, files in a temp dir, the adapter registry); no runner
trains here, so progress is written into the job store the way the runner writes it (the
integration tier runs real jobs: tests/integration/finetuning).
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import openai
import pytest
from openai.types import FileDeleted, FileObject
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent
from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint

from adept.config.finetuning import FineTuningConfig
from adept.config.tenant import TenantQuotas, TenantSpec
from adept.finetuning.files import FileStore
from adept.finetuning.jobs import StepRecord, advance, now, openai_model_name
from adept.finetuning.service import FineTuning
from adept.finetuning.store import SQLiteJobStore
from services.gateway.finetuning import FineTuningService
from tests.unit.console.conftest import platform  # noqa: F401  (the gateway's app with real stores)

CHAT = [
    {
        "messages": [
            {"role": "user", "content": f"Question {i}?"},
            {"role": "assistant", "content": f"Answer {i}."},
        ]
    }
    for i in range(5)
]


def jsonl(rows) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


@pytest.fixture
def ft(platform):  # noqa: F811  (the fixture imported above)
    ctx, tmp = platform["ctx"], platform["tmp"]
    store = ctx.platform.tenants
    _, small_key = store.create(
        TenantSpec(
            name="small",
            quotas=TenantQuotas(
                max_files=1,
                max_concurrent_finetune_jobs=1,
                max_trained_tokens_per_day=1000,
                max_finetune_jobs_per_day=2,
            ),
        )
    )
    jobs = SQLiteJobStore(tmp / "finetuning.sqlite")
    files = FileStore(str(tmp / "files"))
    owner = FineTuning(ctx.platform, files, jobs, FineTuningConfig(), models=ctx.catalog)
    ctx.finetuning = FineTuningService(owner)
    ctx.platform.state = [owner, *ctx.platform.state]
    return {**platform, "jobs": jobs, "files": files, "small": small_key, "owner": owner}


def client(ft, tenant: str) -> openai.AsyncOpenAI:
    transport = httpx.ASGITransport(app=ft["app"])
    return openai.AsyncOpenAI(
        base_url="http://adept.test/v1",
        api_key=ft[tenant],
        http_client=httpx.AsyncClient(transport=transport, base_url="http://adept.test"),
        max_retries=0,
    )


async def upload(c: openai.AsyncOpenAI, data: bytes = b"", name: str = "train.jsonl") -> FileObject:
    return await c.files.create(file=(name, data or jsonl(CHAT)), purpose="fine-tune")


async def test_files_round_trip_with_the_sdk(ft) -> None:
    acme = client(ft, "acme")
    f = await upload(acme)
    assert isinstance(f, FileObject) and f.purpose == "fine-tune" and f.bytes == len(jsonl(CHAT))
    assert f.id.startswith("file-") and f.status == "processed" and f.filename == "train.jsonl"
    listed = await acme.files.list()
    assert [x.id for x in listed.data] == [f.id]
    assert (await acme.files.retrieve(f.id)).id == f.id
    assert (await acme.files.content(f.id)).read() == jsonl(CHAT)
    gone = await acme.files.delete(f.id)
    assert isinstance(gone, FileDeleted) and gone.deleted and gone.id == f.id
    with pytest.raises(openai.NotFoundError):
        await acme.files.retrieve(f.id)


async def test_every_bad_line_is_named_and_nothing_is_stored(ft) -> None:
    acme = client(ft, "acme")
    rows = [CHAT[0], "{not json", {"prompt": "p"}, CHAT[1], {"messages": [{"role": "robot", "content": "x"}]}]
    data = b"".join((r if isinstance(r, str) else json.dumps(r)).encode() + b"\n" for r in rows)
    with pytest.raises(openai.BadRequestError) as e:
        await upload(acme, data, "bad.jsonl")
    body = e.value.body
    assert "line 2:" in body["message"] and "line 3:" in body["message"] and "line 5:" in body["message"]
    assert body["param"] == "file" and body["code"] == "invalid_file"
    errors = e.value.response.json()["errors"]
    assert [x["line"] for x in errors] == [2, 3, 5] and "unsupported role 'robot'" in errors[2]["reason"]
    assert (await acme.files.list()).data == []
    with pytest.raises(openai.BadRequestError, match="purpose"):
        await acme.files.create(file=("t.jsonl", jsonl(CHAT)), purpose="assistants")


async def test_job_lifecycle_events_checkpoints_and_cancel(ft) -> None:
    acme = client(ft, "acme")
    f = await upload(acme)
    job = await acme.fine_tuning.jobs.create(
        model="bundled:test-base",
        training_file=f.id,
        suffix="Support",
        seed=7,
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 2, "learning_rate_multiplier": 5}},
            "adept": {"lora_rank": 8, "max_seq_length": 256},
        },
    )
    assert isinstance(job, FineTuningJob) and job.status == "validating_files" and job.seed == 7
    assert job.hyperparameters.n_epochs == 2 and job.hyperparameters.learning_rate_multiplier == 5
    assert (
        job.method.type == "supervised" and job.organization_id == "acme" and job.model == "bundled:test-base"
    )
    record = ft["jobs"].get("acme", job.id)
    assert record.adapter.startswith("ft-support-") and record.config["train"]["epochs"] == 2
    assert record.config["data"]["path"].endswith(f"acme/{f.id}.jsonl") and record.config["lora"]["rank"] == 8

    # What the driver writes (through the state machine) as the job trains, then succeeds.
    def progress(r):
        advance(advance(r, "queued"), "running")
        for step in (1, 2):
            r.record_step(
                StepRecord(step=step, at=now(), total_steps=2, train_loss=2.0 / step, tokens=50 * step)
            )

    ft["jobs"].modify(job.id, progress)
    events = await acme.fine_tuning.jobs.list_events(job.id, limit=50)
    assert all(isinstance(e, FineTuningJobEvent) for e in events.data)
    metrics = [e for e in events.data if e.type == "metrics"]
    assert [e.data["step"] for e in metrics] == [2, 1]  # newest first
    assert "training loss=1.0000" in metrics[0].message
    page = await acme.fine_tuning.jobs.list_events(job.id, limit=2)
    rest = await acme.fine_tuning.jobs.list_events(job.id, limit=50, after=page.data[-1].id)
    assert [e.id for e in page.data + rest.data] == [e.id for e in events.data]

    name = openai_model_name(record.model, "acme", "support", job.id)
    assert name == f"ft:bundled:test-base:acme:support:{job.id[6:14]}"

    def succeed(r):
        r.fine_tuned_model, r.trained_tokens = name, 100
        advance(r, "succeeded")

    ft["jobs"].modify(job.id, succeed)
    done = await acme.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded" and done.fine_tuned_model == name and done.trained_tokens == 100
    (ckpt,) = (await acme.fine_tuning.jobs.checkpoints.list(job.id)).data
    assert isinstance(ckpt, FineTuningJobCheckpoint) and ckpt.fine_tuned_model_checkpoint == name
    assert ckpt.step_number == 2 and ckpt.metrics.train_loss == 1.0
    first = (await acme.fine_tuning.jobs.list_events(job.id)).data[0]
    assert first.message == "The job has successfully completed"
    with pytest.raises(openai.BadRequestError, match="already succeeded"):
        await acme.fine_tuning.jobs.cancel(job.id)

    second = await acme.fine_tuning.jobs.create(model="bundled:test-base", training_file=f.id)
    cancelled = await acme.fine_tuning.jobs.cancel(second.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    listed = await acme.fine_tuning.jobs.list()
    assert [j.id for j in listed.data] == [second.id, job.id]
    assert [j.id for j in (await acme.fine_tuning.jobs.list(limit=1, after=second.id)).data] == [job.id]


async def test_another_tenant_gets_404_worded_as_absent(ft) -> None:
    acme, globex = client(ft, "acme"), client(ft, "globex")
    f = await upload(acme)
    job = await acme.fine_tuning.jobs.create(model="bundled:test-base", training_file=f.id)
    absent_file, absent_job = "file-" + "0" * 24, "ftjob-" + "0" * 24

    async def message(call, *args) -> str:
        with pytest.raises(openai.NotFoundError) as e:
            await call(*args)
        return e.value.body["message"]

    for call in (globex.files.retrieve, globex.files.content, globex.files.delete):
        assert await message(call, f.id) == (await message(call, absent_file)).replace(absent_file, f.id)
    jobs = globex.fine_tuning.jobs
    for call in (jobs.retrieve, jobs.cancel, jobs.list_events, jobs.checkpoints.list):
        assert await message(call, job.id) == (await message(call, absent_job)).replace(absent_job, job.id)
    create = lambda fid: jobs.create(model="bundled:test-base", training_file=fid)  # noqa: E731
    assert await message(create, f.id) == (await message(create, absent_file)).replace(absent_file, f.id)
    assert (await globex.files.list()).data == [] and (await jobs.list()).data == []
    assert (await acme.fine_tuning.jobs.retrieve(job.id)).status == "validating_files"  # untouched


async def test_bad_job_requests_are_400_naming_the_field(ft) -> None:
    acme = client(ft, "acme")
    f = await upload(acme)
    base = {"model": "bundled:test-base", "training_file": f.id}
    cases = [
        ({"method": {"type": "dpo"}}, "method.type"),
        ({"suffix": "no spaces allowed"}, "suffix"),
        ({"hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs"),
        ({"hyperparameters": {"n_epochs": 500}}, "n_epochs"),
        ({"method": {"type": "supervised", "adept": {"lora_rank": 4096}}}, "method.adept.lora_rank"),
        ({"suffix": "x" * 65}, "suffix"),
        ({"validation_file": f.id, "surprise": 1}, "surprise"),
    ]
    for extra, param in cases:
        with pytest.raises(openai.BadRequestError) as e:
            await acme.fine_tuning.jobs.create(
                **{**base, **{k: v for k, v in extra.items() if k != "surprise"}},
                extra_body={"surprise": 1} if "surprise" in extra else None,
            )
        assert e.value.body["param"] == param, (extra, e.value.body)
    for model in ("gpt-4o-mini", "globex/legal", "ft:bundled:test-base:globex::0123abcd"):
        with pytest.raises(openai.NotFoundError) as e:
            await acme.fine_tuning.jobs.create(**{**base, "model": model})
        assert e.value.body["code"] == "model_not_found" and e.value.body["param"] == "model"


async def test_openai_shape_suffix_integrations_and_starting_from_a_fine_tuned_model(ft) -> None:
    acme = client(ft, "acme")
    f = await upload(acme)
    suffix = "s" * 64  # OpenAI's limit
    job = await acme.fine_tuning.jobs.create(
        model="legal",  # the tenant's own adapter: its weights are the starting point
        training_file=f.id,
        suffix=suffix,
        integrations=[{"type": "wandb", "wandb": {"project": "x"}}],
    )
    record = ft["jobs"].get("acme", job.id)
    assert len(record.adapter) <= 63 and record.adapter.startswith("ft-ss")
    assert record.finetuned_from.startswith("acme/legal@") and record.config["lora"]["init_adapter"]
    (warn,) = [e for e in (await acme.fine_tuning.jobs.list_events(job.id)).data if e.level == "warn"]
    assert "'wandb'" in warn.message and "not supported" in warn.message
    # The ft: name resolves to the adapter, for its owner only.
    from adept.finetuning.jobs import adapter_of_fine_tuned_model

    name = openai_model_name(record.model, "acme", suffix, job.id)
    assert adapter_of_fine_tuned_model("acme", name) == record.adapter
    assert adapter_of_fine_tuned_model("globex", name) is None


async def test_quotas_files_concurrent_jobs_and_trained_tokens(ft) -> None:
    small = client(ft, "small")
    f = await upload(small)
    with pytest.raises(openai.PermissionDeniedError, match="max_files"):
        await upload(small)
    job = await small.fine_tuning.jobs.create(model="bundled:test-base", training_file=f.id)
    with pytest.raises(openai.RateLimitError, match="max_concurrent_finetune_jobs") as e:
        await small.fine_tuning.jobs.create(model="bundled:test-base", training_file=f.id)
    assert e.value.response.headers["retry-after"]

    def trained(r):
        r.status, r.finished_at, r.trained_tokens = "succeeded", now(), 5000

    ft["jobs"].modify(job.id, trained)
    with pytest.raises(openai.RateLimitError, match="max_trained_tokens_per_day") as e:
        await small.fine_tuning.jobs.create(model="bundled:test-base", training_file=f.id)
    assert 80_000 < int(e.value.response.headers["retry-after"]) <= 86_400
    usage = (await small.get("/usage", cast_to=httpx.Response)).json()["quotas"]
    assert usage["files"] == {"used": 1, "limit": 1} and usage["finetune_jobs"] == {"used": 0, "limit": 1}
    assert usage["trained_tokens_per_day"] == {"used": 5000, "limit": 1000}
    assert usage["file_storage_bytes"]["used"] == len(jsonl(CHAT))
    assert usage["finetune_jobs_per_day"] == {"used": 1, "limit": 2}


async def test_limits_hold_across_two_gateway_replicas(ft) -> None:
    """Two owners over the same store (two gateway replicas) racing for the last slots: the limits hold."""
    import asyncio

    from adept.finetuning.service import JobRequest

    tmp = Path(ft["tmp"])
    replicas = [
        FineTuning(
            ft["ctx"].platform,
            FileStore(str(tmp / "files")),
            SQLiteJobStore(tmp / "finetuning.sqlite"),
            FineTuningConfig(),
            models=ft["ctx"].catalog,
        )
        for _ in range(2)
    ]
    small = await ft["ctx"].platform.get_tenant("small")
    uploads = await asyncio.gather(
        *(r.upload_file(small, f"t{i}.jsonl", "fine-tune", jsonl(CHAT)) for i, r in enumerate(replicas * 3)),
        return_exceptions=True,
    )
    stored = [u for u in uploads if not isinstance(u, Exception)]
    assert len(stored) == 1 and all("max_files" in str(u) for u in uploads if isinstance(u, Exception))
    request = JobRequest(model="bundled:test-base", training_file=stored[0].id)
    created = await asyncio.gather(*(r.create(small, request) for r in replicas * 3), return_exceptions=True)
    jobs = [c for c in created if not isinstance(c, Exception)]
    assert len(jobs) == 1
    assert all("max_concurrent_finetune_jobs" in str(c) for c in created if isinstance(c, Exception))
    await replicas[1].cancel(small, jobs[0].id)
    await replicas[0].create(small, request)  # the second of the day
    await replicas[0].cancel(small, (await replicas[0].list(small))[0].id)
    with pytest.raises(Exception, match="max_finetune_jobs_per_day"):
        await replicas[1].create(small, request)


async def test_deleting_a_tenant_removes_its_files_and_jobs(ft) -> None:
    globex = client(ft, "globex")
    f = await upload(globex)
    await globex.fine_tuning.jobs.create(model="bundled:test-base", training_file=f.id)
    await ft["ctx"].platform.delete_tenant("globex")
    assert ft["jobs"].list("globex") == [] and ft["files"].list("globex") == []
    assert ft["jobs"]._conn().execute("SELECT COUNT(*) FROM files WHERE tenant = 'globex'").fetchone() == (0,)
    assert not (Path(ft["tmp"]) / "files" / "globex").exists()


async def test_deleting_a_fine_tuned_model(ft) -> None:
    from openai.types import ModelDeleted

    from tests.unit.gateway.fakes import write_peft_dir

    src = write_peft_dir(Path(ft["tmp"]) / "ft-peft", "bundled:test-base")
    ft["ctx"].platform.registry.publish("acme", "ft-notes-0123abcd", src, {"base_model": "bundled:test-base"})
    acme, globex = client(ft, "acme"), client(ft, "globex")
    with pytest.raises(openai.NotFoundError):
        await globex.models.delete("ft-notes-0123abcd")  # not globex's: absent
    with pytest.raises(openai.PermissionDeniedError):
        await acme.models.delete("legal")  # published by the platform team, not by a job
    with pytest.raises(openai.PermissionDeniedError):
        await acme.models.delete("bundled:test-base")
    ft_name = "ft:bundled:test-base:acme:notes:0123abcd"  # the same model, named the OpenAI way
    assert (await acme.models.retrieve(ft_name)).id == ft_name
    with pytest.raises(openai.NotFoundError):
        await globex.models.retrieve(ft_name.replace(":acme:", ":globex:"))
    gone = await acme.models.delete(ft_name)
    assert gone.deleted and gone.id == ft_name
    ft["ctx"].platform.registry.publish("acme", "ft-notes-0123abcd", src, {"base_model": "bundled:test-base"})
    gone = await acme.models.delete("ft-notes-0123abcd")
    assert isinstance(gone, ModelDeleted) and gone.deleted and gone.id == "ft-notes-0123abcd"
    assert "ft-notes-0123abcd" not in [m.id for m in (await acme.models.list()).data]
    with pytest.raises(openai.NotFoundError):
        await acme.models.delete("ft-notes-0123abcd")


async def test_a_job_whose_file_is_deleted_before_it_starts_fails_naming_it(ft) -> None:
    acme = client(ft, "acme")
    f = await upload(acme)
    job = await acme.fine_tuning.jobs.create(model="bundled:test-base", training_file=f.id)
    await acme.files.delete(f.id)
    ft["owner"].queue(ft["jobs"].get("acme", job.id))  # the driver's first look
    failed = await acme.fine_tuning.jobs.retrieve(job.id)
    assert failed.status == "failed" and failed.error.code == "invalid_training_file"
    assert failed.error.param == "training_file" and f.id in failed.error.message
