"""The gateway's LLM client sends a generation again when its replica goes away before answering.

A real Ray Serve deployment stands in for the LLM: its replicas really die (``os._exit``), as one
killed after its drain or lost with its node does; the gateway's ``ServeLLM`` is the code under test.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from adept.errors import Overloaded, Unavailable
from services.gateway.backends import ServeLLM
from services.llm.protocol import GenerateChunk, GenerateRequest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def serve_app(short_tmp: Path):
    import ray
    from ray import serve

    from adept.ray_auth import restore_env, use_local_cluster_env

    # This module's Ray is a local cluster as the platform makes one (token auth, its own token file):
    # whatever RAY_AUTH_* an earlier module left in this process must not decide how its GCS starts
    # (a full run once timed out waiting for the GCS port with token auth on and no token to read).
    before = use_local_cluster_env(short_tmp / "ray-retry-data")
    try:
        ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(short_tmp / "ray-retry"))
        try:
            yield serve
        finally:
            serve.shutdown()
            ray.shutdown()
    finally:
        restore_env(before)


def _deploy(serve, name: str, marker: Path, die_after_chunks: int):
    @serve.deployment(num_replicas=2, ray_actor_options={"num_cpus": 0.1}, health_check_period_s=1)
    class DyingLLM:
        """The first call (across both replicas: a marker file) kills its replica after N chunks."""

        async def generate(self, req: dict):
            for i in range(3):
                if i == die_after_chunks and not marker.exists():
                    marker.touch()
                    if i:
                        await asyncio.sleep(1.0)  # the chunks before reach the caller first
                    os._exit(1)
                yield GenerateChunk(text=f"w{i} ")
            yield GenerateChunk(finish_reason="stop")

    return serve.run(DyingLLM.bind(), name=name, route_prefix=None)


def _request() -> GenerateRequest:
    return GenerateRequest(messages=[{"role": "user", "content": "hi"}], max_tokens=4)


async def _collect(llm: ServeLLM) -> list[GenerateChunk]:
    return [c async for c in llm.generate("", _request())]


def test_a_replica_dying_before_the_first_chunk_is_retried_elsewhere(serve_app, tmp_path):
    handle = _deploy(serve_app, "dies-early", tmp_path / "died", die_after_chunks=0)
    llm = ServeLLM(handle, retries=3, retry_backoff_s=0.5)
    chunks = asyncio.run(_collect(llm))
    assert "".join(c.text for c in chunks) == "w0 w1 w2 "
    assert chunks[-1].finish_reason == "stop"
    assert (tmp_path / "died").exists() and llm.retried >= 1


def test_a_stream_cut_after_its_first_chunk_is_not_replayed(serve_app, tmp_path):
    handle = _deploy(serve_app, "dies-late", tmp_path / "died", die_after_chunks=1)
    llm = ServeLLM(handle, retries=3, retry_backoff_s=0.5)
    received: list[GenerateChunk] = []

    async def main():
        async for chunk in llm.generate("", _request()):
            received.append(chunk)

    with pytest.raises(Unavailable, match="went away"):
        asyncio.run(main())
    assert [c.text for c in received] == ["w0 "]  # the client saw part of an answer: no silent replay
    assert llm.retried == 0


def _deploy_refusing(serve, name: str, marker: Path, error: Exception):
    @serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0.1})
    class RefusingLLM:
        """The first call is refused with ``error`` (as an engine that is stopping refuses), later ones answer."""

        async def generate(self, req: dict):
            if not marker.exists():
                marker.touch()
                raise error
            yield GenerateChunk(text="ok")
            yield GenerateChunk(finish_reason="stop")

    return serve.run(RefusingLLM.bind(), name=name, route_prefix=None)


def test_a_stopping_engine_refusal_is_retried_but_backpressure_is_not(serve_app, tmp_path):
    stopping = Unavailable("the model replica is shutting down; retry shortly")
    handle = _deploy_refusing(serve_app, "stopping", tmp_path / "refused", stopping)
    llm = ServeLLM(handle, retries=3, retry_backoff_s=0.1)
    assert "".join(c.text for c in asyncio.run(_collect(llm))) == "ok" and llm.retried == 1

    full = Overloaded("the replica's queue is full", retry_after=2.0)
    handle = _deploy_refusing(serve_app, "overloaded", tmp_path / "full", full)
    llm = ServeLLM(handle, retries=3, retry_backoff_s=0.1)
    with pytest.raises(Overloaded, match="queue is full"):
        asyncio.run(_collect(llm))  # the client gets the 503 with Retry-After, not a hidden retry
    assert llm.retried == 0
