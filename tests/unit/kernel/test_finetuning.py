"""The kernel's fine-tuning pieces: example validation, training logs, job records and events, stores."""

from __future__ import annotations

import asyncio
import json

import pytest

from adept.config.tenant import TenantQuotas
from adept.errors import InvalidRequest, NotFound, PermissionDenied
from adept.finetuning.examples import check_examples
from adept.finetuning.files import FileStore, FileValidationError
from adept.finetuning.jobs import (
    AdeptOptions,
    Hyperparameters,
    JobRecord,
    Resume,
    StepRecord,
    check_suffix,
    fine_tuned_model_name,
    job_checkpoints,
    job_events,
    new_job_id,
    page_after,
)
from adept.finetuning.kube_store import job_resource, record_of
from adept.finetuning.progress import parse_training_log
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


def test_training_log_steps_resumes_result_and_error() -> None:
    text = "\n".join(
        [
            "[adept.finetune] dataset x: {}",
            "(RayTrainWorker pid=42) [adept.train] step 1/3 train_loss 2.5000 lr 1.00e-03 tokens 100",
            "(RayTrainWorker pid=42) [adept.train] step 2/3 train_loss 2.0000 eval_loss 2.2500 lr 1.00e-03 tokens 200",
            "(RayTrainWorker pid=43) [adept.train] resumed from checkpoint at step 2/3",
            "(RayTrainWorker pid=43) [adept.train] step 2/3 train_loss 1.9000 lr 1.00e-03 tokens 200",
            "[adept.train] step 3/3 train_loss nan lr 1.00e-03 tokens 300",
            '{"run_dir": "/r", "adapter": "acme/ft-1@v1", "steps": 3, "tokens_seen": 300}',
        ]
    )
    log = parse_training_log(text)
    assert [(s.step, s.total_steps, s.tokens) for s in log.steps] == [(1, 3, 100), (2, 3, 200), (3, 3, 300)]
    assert log.steps[1].train_loss == 1.9 and log.steps[1].valid_loss is None  # the re-run replaced it
    assert log.resumed_from == [2] and log.adapter_version == "v1" and log.summary["tokens_seen"] == 300
    err = parse_training_log(
        'error: bad\n{"error": {"code": "invalid_dataset", "message": "x:2: bad", "param": null}}'
    )
    assert (
        err.error == {"code": "invalid_dataset", "message": "x:2: bad", "param": None} and err.summary is None
    )


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
    for bad in ("has space", "-lead", "x" * 41, "a..b", "ümlaut"):
        with pytest.raises(InvalidRequest):
            check_suffix(bad)


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
        store.create("acme", "b.jsonl", "fine-tune", line(GOOD), quotas=TenantQuotas(max_files=1))
    with pytest.raises(PermissionDenied, match="max_file_storage_bytes"):
        store.create(
            "acme", "b.jsonl", "fine-tune", line(GOOD), quotas=TenantQuotas(max_file_storage_bytes=100)
        )
    (tmp_path / "files" / "acme" / ("file-" + "b" * 24 + ".json")).write_text("{damaged")
    assert [x.id for x in store.list("acme")] == [f.id]  # a damaged record hides nothing else
    assert asyncio.run(store.purge_tenant("acme")) == 1 and store.list("acme") == []


def test_sqlite_job_store_modify_cancel_purge(tmp_path) -> None:
    store = SQLiteJobStore(tmp_path / "jobs.sqlite")
    a, b = store.create(record(created_at=1)), store.create(record(created_at=2))
    store.create(record("globex"))
    assert [r.id for r in store.list("acme")] == [b.id, a.id] and len(store.active()) == 3
    with pytest.raises(NotFound, match="Could not find fine-tuning job"):
        store.get("globex", a.id)
    store.modify(a.id, lambda r: setattr(r, "status", "running"))
    assert store.get("acme", a.id).status == "running"
    assert store.cancel("acme", a.id).status == "cancelled"
    with pytest.raises(InvalidRequest, match="already cancelled"):
        store.cancel("acme", a.id)
    with pytest.raises(NotFound):
        store.cancel("globex", b.id)
    assert asyncio.run(store.purge_tenant("acme")) == 2 and store.list("acme") == []
    assert [r.tenant for r in store.active()] == ["globex"]


def test_a_finetunejob_resource_maps_back_to_the_record() -> None:
    r = record(metadata={"team": "x"})
    obj = job_resource(r, "ns")
    assert (
        obj["metadata"]["name"] == r.id
        and obj["spec"]["tenant"] == "acme"
        and "tenant" not in obj["spec"]["config"]
    )
    back = record_of(obj)
    assert (
        back.status == "validating_files"
        and back.metadata == {"team": "x"}
        and back.config["tenant"] == "acme"
    )
    obj["status"] = {
        "state": "RUNNING",
        "startedAt": "2026-01-01T00:00:00Z",
        "history": [{"step": 1, "at": "2026-01-01T00:01:00Z", "loss": 2.0, "totalSteps": 4}],
    }
    running = record_of(obj)
    assert running.status == "running" and running.history[0].train_loss == 2.0 and running.started_at
    obj["status"].update(
        state="SUCCEEDED", adapterVersion="v1", trainedTokens=99, finishedAt="2026-01-01T00:02:00Z"
    )
    done = record_of(obj)
    assert (done.status, done.fine_tuned_model, done.trained_tokens) == ("succeeded", r.adapter, 99)
    obj["status"] = {"state": "FAILED", "error": {"code": "invalid_dataset", "message": "bad line"}}
    assert record_of(obj).error.code == "invalid_dataset"
    obj["status"], obj["spec"]["cancel"] = {"state": "RUNNING"}, True
    assert record_of(obj).status == "cancelled"
    assert record_of({"metadata": {"name": "made-by-kubectl"}, "spec": {"tenant": "acme"}}) is None
