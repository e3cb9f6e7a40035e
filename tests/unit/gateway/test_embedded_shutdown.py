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
