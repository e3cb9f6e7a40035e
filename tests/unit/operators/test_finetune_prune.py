"""Retention in the operator: ``prune_finetune_jobs`` (its timer) removes finished FineTuneJobs past
``finetuning.retention_days`` — the resource, the job's record with it, and its run directory — and keeps
unfinished and recent ones, and the adapters they made. kmock's emulator is the Kubernetes API (the one
mock); the harness is ``test_finetune_promotion``'s (the local executor's real process for the run)."""

from __future__ import annotations

from pathlib import Path

from operators import handlers
from operators import resources as R
from tests.unit.operators.test_finetune_promotion import NS, apply_job, log, train

DAY = 86_400


def test_finished_finetunejobs_past_their_retention_are_pruned_with_their_run_dirs(
    operator, monkeypatch
) -> None:
    op = operator
    old = train(op, "style-old")
    assert old["state"] == "SUCCEEDED"
    apply_job(op, "style-waiting")  # made with kubectl, not adopted yet: no record, nothing to prune
    owner = handlers._finetuning(op.memo, NS)
    record = owner.jobs.get("acme", "style-old")
    run_dir = Path(op.memo.platform_config.data_dir) / "training" / "style-old"
    assert run_dir.is_dir()

    clock = {"now": record.finished_at + 29 * DAY}
    make = handlers._finetuning

    def at_clock(memo, namespace, ray_address=None):
        owner = make(memo, namespace, ray_address)
        owner.clock = lambda: clock["now"]
        return owner

    monkeypatch.setattr(handlers, "_finetuning", at_clock)
    handlers.prune_finetune_jobs(namespace=NS, memo=op.memo, logger=log)  # 29 days: within 30
    assert op.kube.get(NS, "finetunejobs", "style-old") is not None and run_dir.is_dir()

    clock["now"] = record.finished_at + 31 * DAY
    handlers.prune_finetune_jobs(namespace=NS, memo=op.memo, logger=log)
    assert op.kube.get(NS, "finetunejobs", "style-old") is None  # the resource (and the record it holds)
    assert not run_dir.exists()
    assert op.kube.get(NS, "finetunejobs", "style-waiting") is not None
    # What the job made stays: the registry's version and its Adapter resource.
    assert [v.version for v in op.platform.registry.list("acme")] == ["v1"]
    assert op.kube.get(NS, "adapters", R.adapter_object_name("acme", "style")) is not None


def test_retention_zero_keeps_every_job(operator, monkeypatch) -> None:
    op = operator
    train(op, "style-kept")
    op.memo.finetuning = op.memo.finetuning.model_copy(update={"retention_days": 0})
    make = handlers._finetuning

    def far_future(memo, namespace, ray_address=None):
        owner = make(memo, namespace, ray_address)
        owner.clock = lambda: 10**10
        return owner

    monkeypatch.setattr(handlers, "_finetuning", far_future)
    handlers.prune_finetune_jobs(namespace=NS, memo=op.memo, logger=log)
    assert op.kube.get(NS, "finetunejobs", "style-kept") is not None
