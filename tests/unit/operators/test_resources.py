"""Every build_* function and the status/condition logic of operators.resources."""

from __future__ import annotations

import pytest

from operators import resources as R

NOW, LATER = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def test_build_condition_shape_and_truncation():
    c = R.build_condition("Ready", True, "Synced", "x" * 5000, generation=3, now=NOW)
    assert c == {
        "type": "Ready",
        "status": "True",
        "reason": "Synced",
        "message": "x" * 2000,
        "lastTransitionTime": NOW,
        "observedGeneration": 3,
    }
    assert "observedGeneration" not in R.build_condition(
        "Failed", "Unknown", "r", "m", generation=None, now=NOW
    )


@pytest.mark.parametrize("phase", ["ready", "progressing", "failed"])
def test_phase_status_sets_exactly_one_condition_true(phase):
    status = R.build_phase_status(phase, "Why", "what", generation=2, now=NOW)
    true = [c["type"] for c in status["conditions"] if c["status"] == "True"]
    assert true == [phase.capitalize()]
    assert [c["type"] for c in status["conditions"]] == ["Ready", "Progressing", "Failed"]
    assert status["observedGeneration"] == 2
    assert R.condition_status(status, phase.capitalize()) == "True"


def test_phase_status_rejects_unknown_phase():
    with pytest.raises(ValueError, match="unknown phase"):
        R.build_phase_status("done", "r", "m", generation=1)


def test_transition_time_kept_while_status_unchanged_and_moved_on_change():
    first = R.build_phase_status("progressing", "Pending", "m", generation=1, now=NOW)
    again = R.build_phase_status(
        "progressing", "Running", "m2", generation=1, old_conditions=first["conditions"], now=LATER
    )
    prog = next(c for c in again["conditions"] if c["type"] == "Progressing")
    assert prog["lastTransitionTime"] == NOW and prog["reason"] == "Running"
    done = R.build_phase_status(
        "ready", "Succeeded", "ok", generation=1, old_conditions=again["conditions"], now=LATER
    )
    ready = next(c for c in done["conditions"] if c["type"] == "Ready")
    assert ready["lastTransitionTime"] == LATER and ready["status"] == "True"


def test_merge_conditions_keeps_foreign_types():
    merged = R.merge_conditions(
        [{"type": "Custom", "status": "True"}],
        [R.build_condition("Ready", True, "r", "m", generation=1, now=NOW)],
    )
    assert [c["type"] for c in merged] == ["Ready", "Custom"]


def test_condition_status_absent():
    assert R.condition_status({}, "Ready") is None
    assert R.condition_status(None, "Ready") is None


@pytest.mark.parametrize(
    ("state", "ready", "progressing", "failed"),
    [
        ("PENDING", "False", "True", "False"),
        ("RUNNING", "False", "True", "False"),
        ("SUCCEEDED", "True", "False", "False"),
        ("FAILED", "False", "False", "True"),
        ("STOPPED", "False", "False", "True"),
    ],
)
def test_finetune_status_maps_ray_states(state, ready, progressing, failed):
    st = R.build_finetune_status(
        state, progress={"step": 5, "loss": 1.0, "adapter_version": "v2"}, generation=1, now=NOW
    )
    assert st["state"] == state and st["step"] == 5 and st["loss"] == 1.0 and st["adapterVersion"] == "v2"
    assert [R.condition_status(st, t) for t in ("Ready", "Progressing", "Failed")] == [
        ready,
        progressing,
        failed,
    ]
    assert ("finishedAt" in st) == (state in R.TERMINAL_STATES)


def test_finetune_status_message_defaults_and_override():
    st = R.build_finetune_status("failed", message="OOM", generation=1, now=NOW)
    assert st["conditions"][2]["message"] == "OOM" and st["conditions"][2]["reason"] == "JobFailed"


def test_build_adapter_object_is_not_owned_by_the_job():
    obj = R.build_adapter_object(
        tenant="acme", adapter="field_tech", version="v3", namespace="ns", finetunejob="ft", base_model="m"
    )
    assert obj["metadata"]["name"] == "acme-field-tech" == R.adapter_object_name("acme", "field_tech")
    assert obj["spec"] == {"tenant": "acme", "name": "field_tech", "version": "v3", "baseModel": "m"}
    assert "ownerReferences" not in obj["metadata"]
    assert obj["metadata"]["labels"][R.LABEL_FINETUNEJOB] == "ft"


def test_build_kb_status_lists_errors_but_stays_ready():
    st = R.build_kb_status(
        documents=3, chunks=9, errors=[{"source": "a.bin", "reason": "unsupported"}], generation=4, now=NOW
    )
    assert st["documents"] == 3 and st["chunks"] == 9 and st["lastSync"] == NOW
    assert st["errors"] == [{"source": "a.bin", "reason": "unsupported"}]
    assert R.condition_status(st, "Ready") == "True"
    assert (
        st["conditions"][0]["reason"] == "SyncedWithErrors" and "1 skipped" in st["conditions"][0]["message"]
    )
    clean = R.build_kb_status(documents=1, chunks=1, errors=[], generation=1, now=NOW)
    assert clean["conditions"][0]["reason"] == "Synced"


def test_kb_document_prefix():
    assert R.kb_document_prefix("docs") == "docs/"


def test_the_status_mirrors_the_job_record_and_drops_non_json_numbers():
    from adept.finetuning.jobs import (
        AdeptOptions,
        Hyperparameters,
        JobError,
        JobRecord,
        StepRecord,
        advance,
    )

    r = JobRecord(
        id="ftjob-" + "a" * 24,
        tenant="acme",
        created_at=1,
        model="base",
        training_file="file-x",
        seed=1,
        hyperparameters=Hyperparameters(n_epochs=1, batch_size=1, learning_rate_multiplier=1),
        options=AdeptOptions(lora_rank=4, lora_alpha=8, max_seq_length=64),
        adapter="tech",
    )
    assert R.build_job_status(r, generation=1, now=NOW)["state"] == "PENDING"
    advance(advance(r, "queued", at=2), "running", at=1767225600)
    r.run.ref = "ftjob-x-a1"
    r.record_step(StepRecord(step=1, at=1767225600, total_steps=3, train_loss=2.0, tokens=5))
    r.record_step(StepRecord(step=2, at=1767225600, total_steps=3, train_loss=float("nan"), valid_loss=1.5))
    running = R.build_job_status(r, generation=1, now=NOW)
    assert running["state"] == "RUNNING" and running["jobId"] == "ftjob-x-a1" and running["step"] == 2
    assert "loss" not in running and running["history"] == [
        {"step": 1, "at": NOW, "totalSteps": 3, "loss": 2.0, "tokens": 5},
        {"step": 2, "at": NOW, "totalSteps": 3, "evalLoss": 1.5},
    ]
    advance(r, "failed", error=JobError(code="invalid_dataset", message="train.jsonl:2: bad"))
    failed = R.build_job_status(r, generation=1, now=NOW)
    assert failed["state"] == "FAILED" and failed["error"]["code"] == "invalid_dataset"
    assert (
        R.condition_status(failed, "Failed") == "True"
        and "train.jsonl:2" in failed["conditions"][2]["message"]
    )
