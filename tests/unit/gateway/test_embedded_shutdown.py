"""Stopping the embedded platform: Ray goes down even when Serve cannot, and nothing is swallowed silently.

A Serve controller that fails to shut down cannot be produced on demand, so ``serve.shutdown``
is replaced by one that raises a real Ray exception; ``ray.shutdown`` is recorded, not run
(no cluster is started in the unit tier).
"""

from __future__ import annotations

import logging

import pytest
import ray
from ray import serve
from ray.exceptions import RaySystemError

from services.embedded import shutdown_ray


@pytest.fixture
def ray_calls(monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append("ray"))
    return calls


def test_a_serve_failure_is_logged_and_ray_still_shuts_down(monkeypatch, ray_calls, caplog):
    def fails() -> None:
        raise RaySystemError("GCS unreachable")

    monkeypatch.setattr(serve, "shutdown", fails)
    with caplog.at_level(logging.WARNING, logger="services.embedded"):
        shutdown_ray()
    assert ray_calls == ["ray"]
    assert any("GCS unreachable" in r.getMessage() for r in caplog.records)


def test_an_unexpected_error_propagates_after_ray_shuts_down(monkeypatch, ray_calls):
    def bug() -> None:
        raise AttributeError("not a Ray failure")

    monkeypatch.setattr(serve, "shutdown", bug)
    with pytest.raises(AttributeError):
        shutdown_ray()
    assert ray_calls == ["ray"]


# A local Ray that misses its startup window cannot be produced on demand either: ``ray.init`` is
# replaced by one that raises Ray's own message (ray/_private/node.py) before it succeeds.
RAYLET_TIMEOUT = (
    "The current node timed out during startup. This could happen because some of the raylet "
    "failed to startup or the GCS has become overloaded."
)


def test_a_local_ray_start_that_timed_out_is_tried_once_more(monkeypatch, ray_calls, tmp_path):
    from services.embedded import _init_local_ray

    outcomes = [Exception(RAYLET_TIMEOUT), None]

    def init(**kwargs):
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome

    said: list[str] = []
    monkeypatch.setattr(ray, "init", init)
    _init_local_ray(2, tmp_path, said.append)
    assert outcomes == [] and ray_calls == ["ray"]  # the failed try was shut down before the next
    assert "trying once more" in said[0] and str(tmp_path) in said[0]


def test_a_second_timeout_or_another_error_is_raised(monkeypatch, ray_calls, tmp_path):
    from services.embedded import _init_local_ray

    def timeout(**kwargs):
        raise Exception(RAYLET_TIMEOUT)

    monkeypatch.setattr(ray, "init", timeout)
    with pytest.raises(Exception, match="timed out during startup"):
        _init_local_ray(2, tmp_path, lambda _: None)

    def bad(**kwargs):
        raise ValueError("num_cpus must be positive")

    monkeypatch.setattr(ray, "init", bad)
    with pytest.raises(ValueError):
        _init_local_ray(2, tmp_path, lambda _: None)
