"""Eval-gated promotion: a new adapter version goes live only when it measures not worse than the live one.

The evaluation is injected (the job owner runs ``adept eval`` against the platform); here it is a
table of scores per version, which is all the kernel's decision depends on.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from adept.config.tenant import TenantSpec
from adept.errors import InvalidRequest
from tests.unit.kernel.test_platform import parts  # noqa: F401  (fixture)
from tests.unit.kernel.test_registry import make_adapter_dir


def run(coro):
    return asyncio.run(coro)


def scores(table: dict[str, float]):
    calls: list[str] = []

    async def evaluate(model_id: str) -> dict[str, float]:
        calls.append(model_id)
        return {"combined": table[model_id.split("@")[1]], "f1": 0.5}

    return evaluate, calls


def _publish(platform, tmp_path: Path, seed: int, **kw):
    src = make_adapter_dir(tmp_path / f"src{seed}", seed=seed)
    return run(platform.publish_adapter("acme", "style", src, inactive=True, **kw))


def test_a_worse_version_stays_published_and_inactive_with_the_reason(parts, tmp_path):  # noqa: F811
    platform, _, replicas, _ = parts
    run(platform.create_tenant(TenantSpec(name="acme")))
    v1 = _publish(platform, tmp_path, 1)
    evaluate, _ = scores({"v1": 0.80, "v2": 0.60})
    first = run(platform.promote("acme", "style", v1.version, evaluate, metric="combined", margin=0.02))
    assert first.promoted and first.against is None

    v2 = _publish(platform, tmp_path, 2)
    # Published inactive: v1 keeps serving while v2 is measured.
    assert run(platform.resolve_adapter("acme", "style")).version == "v1"
    outcome = run(
        platform.promote(
            "acme", "style", v2.version, evaluate, metric="combined", margin=0.02, evaluation_file="file-x"
        )
    )
    assert not outcome.promoted
    assert outcome.against == "v1" and outcome.score == 0.60 and outcome.against_score == 0.80
    assert "stays inactive" in outcome.reason and "margin 0.02" in outcome.reason
    assert run(platform.resolve_adapter("acme", "style")).version == "v1"
    # Each version's measurements are in its manifest, the reason too.
    stored = {v.version: v.manifest.evaluation for v in run(platform.list_adapters("acme"))}
    assert stored["v1"].promoted and stored["v1"].score == 0.80
    assert not stored["v2"].promoted and stored["v2"].evaluation_file == "file-x"
    assert stored["v2"].metrics == {"combined": 0.60, "f1": 0.5}
    assert not replicas.unloaded  # nothing that served changed

    # Activation by hand, and rollback, stay one call each.
    run(platform.activate_adapter("acme", "style", "v2"))
    assert run(platform.resolve_adapter("acme", "style")).version == "v2"
    run(platform.activate_adapter("acme", "style", "v1"))
    assert run(platform.resolve_adapter("acme", "style")).version == "v1"


def test_a_version_within_the_margin_goes_live_and_both_are_measured_alike(parts, tmp_path):  # noqa: F811
    platform, _, replicas, _ = parts
    run(platform.create_tenant(TenantSpec(name="acme")))
    _publish(platform, tmp_path, 1)
    v2 = _publish(platform, tmp_path, 2)
    evaluate, calls = scores({"v1": 0.80, "v2": 0.79})
    outcome = run(platform.promote("acme", "style", v2.version, evaluate, metric="combined", margin=0.02))
    assert outcome.promoted and "went live" in outcome.reason
    assert calls == ["acme/style@v2", "acme/style@v1"]
    assert run(platform.resolve_adapter("acme", "style")).version == "v2"
    assert replicas.unloaded == ["acme/style@v1"]


def test_an_evaluation_without_the_metric_is_refused_and_changes_nothing(parts, tmp_path):  # noqa: F811
    platform, *_ = parts
    run(platform.create_tenant(TenantSpec(name="acme")))
    _publish(platform, tmp_path, 1)
    v2 = _publish(platform, tmp_path, 2)
    evaluate, _ = scores({"v1": 0.8, "v2": 0.9})
    with pytest.raises(InvalidRequest, match="did not measure 'groundedness'"):
        run(platform.promote("acme", "style", v2.version, evaluate, metric="groundedness", margin=0.0))
    assert run(platform.resolve_adapter("acme", "style")).version == "v1"
    assert all(v.manifest.evaluation is None for v in run(platform.list_adapters("acme")))


def test_publish_without_inactive_still_serves_the_latest(parts, tmp_path):  # noqa: F811
    platform, *_ = parts
    run(platform.create_tenant(TenantSpec(name="acme")))
    src = make_adapter_dir(tmp_path / "a", seed=1)
    run(platform.publish_adapter("acme", "style", src))
    run(platform.publish_adapter("acme", "style", make_adapter_dir(tmp_path / "b", seed=2)))
    assert run(platform.resolve_adapter("acme", "style")).version == "v2"


def test_a_version_published_active_is_not_compared_and_says_so(parts, tmp_path):  # noqa: F811
    platform, *_ = parts
    run(platform.create_tenant(TenantSpec(name="acme")))
    run(platform.publish_adapter("acme", "style", make_adapter_dir(tmp_path / "a", seed=1)))
    v2 = run(platform.publish_adapter("acme", "style", make_adapter_dir(tmp_path / "b", seed=2)))
    evaluate, calls = scores({"v1": 0.9, "v2": 0.1})
    outcome = run(platform.promote("acme", "style", v2.version, evaluate, metric="combined", margin=0.0))
    assert outcome.promoted and "already serves" in outcome.reason and calls == ["acme/style@v2"]
