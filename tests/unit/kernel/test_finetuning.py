"""The kernel's fine-tuning pieces: example validation, training logs, job records and events, stores."""

from __future__ import annotations

import asyncio
import json

import pytest

from adept.config.tenant import TenantQuotas
from adept.errors import InvalidRequest, NotFound, PermissionDenied
from adept.finetuning.events import emit, outcome_of, read_events
from adept.finetuning.examples import check_examples
from adept.finetuning.files import FileStore, FileValidationError, file_limits
from adept.finetuning.jobs import (
    AdeptOptions,
    Hyperparameters,
    JobRecord,
    Resume,
    StepRecord,
    adapter_of_fine_tuned_model,
    advance,
    check_suffix,
    fine_tuned_model_name,
    job_checkpoints,
    job_events,
    new_job_id,
    page_after,
)
from adept.finetuning.kube_store import job_resource, record_of
from adept.finetuning.service import apply_events
from adept.finetuning.store import SQLiteJobStore

GOOD = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}


def line(obj) -> bytes:
    return (obj if isinstance(obj, str) else json.dumps(obj)).encode() + b"\n"


def record(tenant: str = "acme", **kw) -> JobRecord:
    job_id = kw.pop("id", new_job_id())
    return JobRecord(
        id=job_id,
        tenant=tenant,
        created_at=kw.pop("created_at", 100),
        model="base",
        training_file="file-" + "a" * 24,
        seed=1,
        hyperparameters=Hyperparameters(n_epochs=1, batch_size=1, learning_rate_multiplier=1.0),
        options=AdeptOptions(lora_rank=8, lora_alpha=16, max_seq_length=256),
        adapter=fine_tuned_model_name(job_id, None),
        config={"tenant": tenant, "adapter": "x", "data": {"path": "/nowhere.jsonl"}},
        **kw,
    )


def test_every_bad_line_is_reported_with_its_number() -> None:
    data = (
        line(GOOD) + b"\n" + line("[1]") + b"\xff\xfe\n" + line({"prompt": 1, "completion": "x"}) + line(GOOD)
    )
    checked = check_examples(data)
    assert len(checked.examples) == 2 and not checked.ok
    assert [(p.line, p.reason.split(" (")[0]) for p in checked.problems] == [
        (3, "expected a JSON object, got list"),
        (4, "not UTF-8 text"),
        (5, '"prompt" and "completion" must both be strings'),
    ]
    assert check_examples(b"\n\n").examples == [] and not check_examples(b"").ok


def test_progress_is_read_from_structured_events_only(capsys) -> None:
    emit("step", step=1, total_steps=3, train_loss=2.5, lr=1e-3, tokens=100, eval_loss=None)
    lines = capsys.readouterr().out
    text = "\n".join(
        [
            "[adept.finetune] dataset x: {}",
            "(RayTrainWorker pid=42) " + lines.strip(),
            "[adept.train] step 2/3 train_loss 2.0000 (free text is never read)",
            '(RayTrainWorker pid=43) {"adept": "resumed", "from_step": 1}',
            '{"adept": "step", "step": 2, "train_loss": 1.9, "tokens": 200',  # cut short by a kill
            '{"not": "an event"}',
            '{"adept": "result", "run_dir": "/r", "steps": 3, "tokens_seen": 300}',
        ]
    )
    events = read_events(text)
    assert [e["adept"] for e in events] == ["step", "resumed", "result"]
    assert events[0] == {
        "adept": "step",
        "step": 1,
        "total_steps": 3,
        "train_loss": 2.5,
        "lr": 1e-3,
        "tokens": 100,
    }
    result, error = outcome_of(events)
    assert result["tokens_seen"] == 300 and error is None
    err = '{"adept": "error", "code": "invalid_dataset", "message": "x:2: bad", "param": null}'
    assert outcome_of(read_events(text + "\n" + err)) == (None, json.loads(err))
    r = record(status="running")
    apply_events(r, events, at=5)
    assert [(h.step, h.tokens) for h in r.history] == [(1, 100)] and r.resumes[0].from_step == 1


def test_the_state_machine_allows_only_its_moves() -> None:
    r = record()
    for bad in ("running", "succeeded"):
        with pytest.raises(InvalidRequest, match="cannot become"):
            advance(r, bad)
    advance(advance(r, "queued", at=2), "running", at=3)
    advance(r, "queued", at=4)  # interrupted: runs again, and says so
    assert r.resumes[-1].interrupted and (r.queued_at, r.started_at) == (2, 3)
    advance(advance(r, "running"), "cancelled", at=9)
    assert r.cancel_requested and r.finished_at == 9
    for later in ("queued", "running", "succeeded", "failed", "cancelled"):
        with pytest.raises(InvalidRequest):
            advance(r, later)


def test_events_are_derived_newest_first_with_stable_ids() -> None:
    r = record(queued_at=101, started_at=102)
    r.record_step(StepRecord(step=1, at=103, total_steps=2, train_loss=2.0))
    before = {e.id for e in job_events(r)}
    r.resumes.append(Resume(at=104, interrupted=True))
    r.record_step(StepRecord(step=2, at=105, total_steps=2, train_loss=1.0, valid_loss=1.5))
    r.status, r.finished_at, r.fine_tuned_model = "succeeded", 106, r.adapter
    events = job_events(r)
    assert before <= {e.id for e in events}  # new events never rename old ones
    assert [e.message.split(":")[0] for e in events] == [
        "The job has successfully completed",
        "New fine-tuned model created",
        "Step 2/2",
        "Training was interrupted; it starts again from its latest checkpoint",
        "Step 1/2",
        "Fine-tuning job started",
        "Validated training files",
        "Created fine-tuning job",
    ]
    assert events[2].type == "metrics" and events[2].data == {
        "step": 2,
        "total_steps": 2,
        "train_loss": 1.0,
        "valid_loss": 1.5,
    }
    (ckpt,) = job_checkpoints(r)
    assert ckpt.fine_tuned_model_checkpoint == r.adapter and ckpt.step_number == 2
    assert ckpt.metrics == {"step": 2.0, "train_loss": 1.0, "valid_loss": 1.5}
    page, more = page_after(events, events[1].id, 3, "event")
    assert [e.id for e in page] == [e.id for e in events[2:5]] and more
    with pytest.raises(InvalidRequest):
        page_after(events, "ftevent-nope", 3, "event")
    failed = record(status="failed", finished_at=200)
    assert job_checkpoints(failed) == [] and job_events(failed)[0].level == "error"


def test_model_names_follow_adapter_rules() -> None:
    assert fine_tuned_model_name("ftjob-0123456789abcdef01234567", "legal-v2") == "ft-legal-v2-01234567"
    assert fine_tuned_model_name("ftjob-0123456789abcdef01234567", None) == "ft-01234567"
    assert check_suffix("My.Model_2") == "my.model_2" and check_suffix("") is None
    assert check_suffix("x" * 64) == "x" * 64
    for bad in ("has space", "-lead", "x" * 65, "a..b", "ümlaut", "a:b"):
        with pytest.raises(InvalidRequest):
            check_suffix(bad)
    long = fine_tuned_model_name("ftjob-0123456789abcdef01234567", "a" * 49 + "-" + "b" * 14)
    assert long == "ft-" + "a" * 49 + "-01234567" and len(long) <= 63  # cut, without a dangling '-'
    ft = "ft:base/model-x:acme:legal-v2:01234567"
    assert adapter_of_fine_tuned_model("acme", ft) == "ft-legal-v2-01234567"
    assert adapter_of_fine_tuned_model("acme", "ft:base:acme::01234567") == "ft-01234567"
    for other in ("ft:base:globex:legal-v2:01234567", "ft:base:acme:x:nothex00", "ft-01234567", "ft:acme"):
        assert adapter_of_fine_tuned_model("acme", other) is None


def test_file_store_validates_limits_and_isolates(tmp_path) -> None:
    store = FileStore(str(tmp_path / "files"))
    f = store.create("acme", "../../etc/train.jsonl", "fine-tune", line(GOOD))
    assert f.filename == "train.jsonl" and f.examples == 1
    assert store.location(f) == str(tmp_path / "files" / "acme" / f"{f.id}.jsonl")
    assert store.content("acme", f.id) == line(GOOD) and [x.id for x in store.list("acme")] == [f.id]
    for tenant, file_id in (("globex", f.id), ("acme", "file-../../x"), ("acme", "file-" + "0" * 24)):
        with pytest.raises(NotFound, match="No such File object"):
            store.get(tenant, file_id)
    with pytest.raises(FileValidationError) as e:
        store.create("acme", "bad.jsonl", "fine-tune", line(GOOD) + b"oops\n")
    assert [p.line for p in e.value.problems] == [2] and len(store.list("acme")) == 1
    with pytest.raises(PermissionDenied, match="max_files"):
        store.create(
            "acme",
            "b.jsonl",
            "fine-tune",
            line(GOOD),
            admit=file_limits("acme", TenantQuotas(max_files=1), 9),
        )
    with pytest.raises(PermissionDenied, match="max_file_storage_bytes"):
        limits = file_limits("acme", TenantQuotas(max_file_storage_bytes=100), len(line(GOOD)))
        store.create("acme", "b.jsonl", "fine-tune", line(GOOD), admit=limits)
    (tmp_path / "files" / "acme" / ("file-" + "b" * 24 + ".json")).write_text("{damaged")
    assert [x.id for x in store.list("acme")] == [f.id]  # a damaged record hides nothing else
    assert asyncio.run(store.purge_tenant("acme")) == 1 and store.list("acme") == []


def test_sqlite_job_store_modify_admit_prune_purge(tmp_path) -> None:
    store = SQLiteJobStore(tmp_path / "jobs.sqlite")
    a, b = store.create(record(created_at=1)), store.create(record(created_at=2))
    store.create(record("globex"))
    assert [r.id for r in store.list("acme")] == [b.id, a.id] and len(store.active()) == 3
    with pytest.raises(NotFound, match="Could not find fine-tuning job"):
        store.get("globex", a.id)
    store.modify(a.id, lambda r: advance(r, "queued"))
    assert store.get("acme", a.id).status == "queued"
    seen = []

    def refuse(jobs):
        seen.append(sorted(j.id for j in jobs))
        raise PermissionDenied("over")

    with pytest.raises(PermissionDenied):
        store.create(record(), refuse)
    assert seen == [sorted([a.id, b.id])] and len(store.list("acme")) == 2  # counted inside, nothing added
    store.modify(a.id, lambda r: advance(r, "cancelled", at=10))
    assert [r.id for r in store.finished_before(11)] == [a.id] and store.finished_before(10) == []
    store.delete(a.id)
    assert [r.id for r in store.delete_tenant("acme")] == [b.id] and store.list("acme") == []
    assert [r.tenant for r in store.active()] == ["globex"]


def test_a_finetunejob_resource_holds_the_record() -> None:
    r = record(metadata={"team": "x"})
    obj = job_resource(r, "ns")
    assert (
        obj["metadata"]["name"] == r.id
        and obj["spec"]["tenant"] == "acme"
        and "tenant" not in obj["spec"]["config"]
    )
    back = record_of(obj)
    assert back.status == "validating_files" and back.metadata == {"team": "x"}
    obj["spec"]["cancel"] = True  # kubectl patch: the driver cancels it
    assert record_of(obj).cancel_requested
    assert record_of({"metadata": {"name": "made-by-kubectl"}, "spec": {"tenant": "acme"}}) is None
