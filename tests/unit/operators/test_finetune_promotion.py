"""Eval-gated promotion on the operator's path: a FineTuneJob naming ``config.evaluation_file``.

The operator's handlers (called here as kopf calls them) drive the kernel's job owner over
``FineTuneJob`` resources. The Kubernetes API is kmock's emulator (the one mock: no API server runs
here). The run is a real process of the local executor with the training entry point's events
(``tests.unit.kernel.test_job_runner.TRAINER``) in place of the cluster's Ray Jobs: what is under
test is the owner's publish and promotion step, which is the same for every executor (the Ray Jobs
executor itself runs in tests/integration/finetuning/test_executors.py). The evaluator is the owner's
injected seam (``memo.evaluator``: in a cluster ``GatewayEvaluator``, through the gateway's admin API,
tested in tests/unit/gateway/test_admin_evaluate.py); it scores by
version so that v2 is deliberately worse.
"""

from __future__ import annotations

import asyncio
import logging
import time

import kopf

from operators import handlers
from operators import resources as R

NS = "adept-test"
log = logging.getLogger("test")


def apply_job(op, name: str) -> dict:
    body = {
        "apiVersion": "adept.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "tenant": "acme",
            "adapter": "style",
            "config": {
                "description": "ok",
                "data": {"path": str(op.data)},
                "output": {"run_name": name},  # where the stand-in trainer stages its result
                "evaluation_file": str(op.evals),
            },
        },
    }
    op.kube.create(NS, "finetunejobs", body)
    return op.kube.get(NS, "finetunejobs", name)


def handle(fn, op, plural: str, name: str) -> dict:
    """Run one handler as kopf would, and apply the status it patched (as kopf does)."""
    obj = op.kube.get(NS, plural, name)
    patch = kopf.Patch()
    fn(
        name=name,
        namespace=NS,
        spec=obj["spec"],
        status=obj.get("status") or {},
        meta=obj["metadata"],
        body=obj,
        patch=patch,
        memo=op.memo,
        logger=log,
    )
    status = {**(obj.get("status") or {}), **dict(patch.status)}
    op.kube.patch(NS, plural, name, {"status": status})
    return status


def train(op, name: str) -> dict:
    """Adopt the FineTuneJob and run the operator's timer until its job finishes."""
    apply_job(op, name)
    handle(handlers.reconcile_finetune_job, op, "finetunejobs", name)
    deadline = time.monotonic() + 120  # a bound for a hung run, not a speed assumption
    while True:
        status = handle(handlers.poll_finetune_job, op, "finetunejobs", name)
        if status.get("state") in R.TERMINAL_STATES:
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.1)


def test_a_worse_version_from_a_finetunejob_stays_published_and_inactive_with_the_reason(operator) -> None:
    op = operator
    first = train(op, "style-1")
    assert first["state"] == "SUCCEEDED", first
    assert first["state"] == "SUCCEEDED" and first["adapterVersion"] == "v1"
    assert first["evaluation"]["promoted"] is True and "first version" in first["evaluation"]["reason"]
    adapter = R.adapter_object_name("acme", "style")
    assert handle(handlers.reconcile_adapter, op, "adapters", adapter)["activeVersion"] == "v1"

    second = train(op, "style-2")
    assert second["state"] == "SUCCEEDED" and second["adapterVersion"] == "v2"
    # The FineTuneJob's status says why v2 is not live, with both scores.
    (ready,) = [c for c in second["conditions"] if c["type"] == "Ready"]
    assert "Kept inactive (combined 0.300 vs 0.800 for v1)" in ready["message"]
    assert second["evaluation"]["promoted"] is False and second["evaluation"]["against"] == "v1"
    # The Adapter resource: v2 published, v1 still serves, each version's measurement in its status.
    status = handle(handlers.reconcile_adapter, op, "adapters", adapter)
    assert status["versions"] == ["v1", "v2"] and status["activeVersion"] == "v1"
    assert status["evaluations"]["v2"]["promoted"] is False
    assert status["evaluations"]["v2"]["score"] == 0.3 and status["evaluations"]["v2"]["against_score"] == 0.8
    assert "stays inactive" in status["evaluations"]["v2"]["reason"]
    # The registry's manifest, the job's events and its OpenAI-style checkpoint metrics.
    v2 = op.platform.registry.resolve("acme", "style", "v2", fetch=False)
    assert v2.manifest.evaluation is not None and v2.manifest.evaluation.promoted is False
    assert v2.manifest.evaluation.evaluation_file == str(op.evals)
    owner = handlers._finetuning(op.memo, NS)
    events = asyncio.run(owner.events("acme", "style-2"))
    assert any(e.level == "warn" and e.message.startswith("Kept inactive") for e in events)
    (checkpoint,) = asyncio.run(owner.checkpoints("acme", "style-2"))
    assert checkpoint.fine_tuned_model_checkpoint == "style" and checkpoint.metrics["train_loss"] == 1.25
    assert checkpoint.metrics["eval_combined"] == 0.3 and checkpoint.metrics["eval_combined_active"] == 0.8
    assert checkpoint.metrics["eval_promoted"] == 0.0 and checkpoint.metrics["eval_f1"] == 0.5
    record = owner.jobs.get("acme", "style-2")
    assert record.evaluation is not None and record.evaluation.metrics == {"combined": 0.3, "f1": 0.5}
    assert set(op.measured) >= {"acme/style@v1", "acme/style@v2"}
    # Rolling forward by hand stays one command's worth: pin v2.
    assert asyncio.run(op.platform.activate_adapter("acme", "style", "v2")).version == "v2"
    # The drivers' CPUs came from the platform config (the number the owner placed the job with).
    assert set(op.seen) == {1.0} and owner.entrypoint_num_cpus == 1.0
