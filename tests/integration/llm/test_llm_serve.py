"""The LLM deployment on a real local Ray Serve: multiplexed adapters (LRU), streaming, mixed concurrency."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from adept.adapters import AdapterRegistry
from adept.errors import NotFound
from services.llm.protocol import GenerateRequest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def llm_handle(tiny_phi3: Path, short_tmp: Path, tmp_path_factory: pytest.TempPathFactory):
    import ray
    from ray import serve
    from transformers import AutoModelForCausalLM

    from services.llm.deployment import LLMDeployment
    from tests.unit.llm.conftest import make_lora

    data = tmp_path_factory.mktemp("llm-data")
    registry = AdapterRegistry(str(data / "adapters"))
    model = AutoModelForCausalLM.from_pretrained(tiny_phi3)
    for name, seed in (("a1", 1), ("a2", 2), ("a3", 3)):
        registry.publish(
            "acme", name, make_lora(model, data / "src" / name, seed), {"base_model": "tiny-random-phi3"}
        )

    env = {
        k: os.environ[k]
        for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM")
        if k in os.environ
    }
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _temp_dir=str(short_tmp / "ray"),
        runtime_env={"env_vars": {**env, "OMP_NUM_THREADS": "1"}},
    )
    try:
        platform = {"data_dir": str(data), "model": str(tiny_phi3), "device": "cpu", "dtype": "float32"}
        llm = {
            "max_adapters_per_replica": 2,
            "batch_wait_ms": 5,
            "max_tokens_limit": 64,
            "default_max_tokens": 32,
        }
        app = LLMDeployment.options(ray_actor_options={"num_cpus": 0.5}).bind(platform, llm)
        handle = serve.run(app, name="llm-test", route_prefix=None)
        yield handle
    finally:
        serve.shutdown()
        ray.shutdown()


async def _answer(handle, model_id: str, text: str, max_tokens: int = 12) -> tuple[str, list]:
    req = GenerateRequest(messages=[{"role": "user", "content": text}], max_tokens=max_tokens, temperature=0)
    chunks = []
    async for chunk in handle.options(multiplexed_model_id=model_id, stream=True).generate.remote(req):
        chunks.append(chunk)
    return "".join(c.text for c in chunks), chunks


def test_streams_token_by_token_and_adapters_change_output(llm_handle):
    async def main():
        return [await _answer(llm_handle, m, "what is the tariff") for m in ("", "acme/a1@v1", "acme/a2@v1")]

    results = asyncio.run(main())
    _, chunks = results[0]
    assert len(chunks) > 2 and chunks[-1].finish_reason in ("stop", "length")
    assert chunks[-1].usage.completion_tokens >= len([c for c in chunks if c.text])
    assert len({text for text, _ in results}) == 3
    info = llm_handle.info.remote().result()
    assert info["base_model"].endswith("tiny-phi3-v1") and info["max_model_len"] == 4096


def test_lru_eviction_and_reload(llm_handle):
    async def main():
        first = await _answer(llm_handle, "acme/a1@v1", "restore power")
        await _answer(llm_handle, "acme/a2@v1", "restore power")
        await _answer(llm_handle, "acme/a3@v1", "restore power")
        loaded = (await llm_handle.info.remote())["loaded_adapters"]
        again = await _answer(llm_handle, "acme/a1@v1", "restore power")
        reloaded = (await llm_handle.info.remote())["loaded_adapters"]
        return first[0], loaded, again[0], reloaded

    first, loaded, again, reloaded = asyncio.run(main())
    assert loaded == ["acme/a2@v1", "acme/a3@v1"]  # a1 was the least recently used
    assert reloaded == ["acme/a1@v1", "acme/a3@v1"]
    assert again == first


def test_mixed_concurrent_requests_all_succeed_and_match_solo(llm_handle):
    jobs = [
        (m, q)
        for q in ("check the breaker", "who does repair", "storm")
        for m in ("", "acme/a1@v1", "acme/a2@v1")
    ]

    async def main():
        solo = [await _answer(llm_handle, m, q) for m, q in jobs]
        together = await asyncio.gather(*(_answer(llm_handle, m, q) for m, q in jobs))
        return solo, together

    solo, together = asyncio.run(main())
    assert [t for t, _ in together] == [t for t, _ in solo]
    assert all(chunks[-1].finish_reason for _, chunks in together)


def test_more_adapters_than_slots_at_once_all_answer(llm_handle):
    """Three adapters, two slots, many requests at once: a load can take the slot of an adapter loaded
    for a request that has not yet held it; that request loads it again rather than failing with 404."""
    jobs = [
        (m, q)
        for q in ("check the breaker", "storm", "who does repair", "the grid")
        for m in (
            "acme/a1@v1",
            "acme/a2@v1",
            "acme/a3@v1",
        )
    ]

    async def main():
        solo = {(m, q): (await _answer(llm_handle, m, q))[0] for m, q in jobs}
        together = await asyncio.gather(*(_answer(llm_handle, m, q) for m, q in jobs * 2))
        return solo, together

    solo, together = asyncio.run(main())
    assert [t for t, _ in together] == [solo[j] for j in jobs * 2]


def test_unknown_adapter_is_not_found_through_the_handle(llm_handle):
    with pytest.raises(NotFound, match="acme/ghost"):
        asyncio.run(_answer(llm_handle, "acme/ghost@v1", "hi"))
    assert llm_handle.count_tokens.remote(["the grid", ""]).result()[1] == 0
