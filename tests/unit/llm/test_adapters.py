"""Adapter lifecycle: registry loads (one per id), corrupt/deleted adapters, eviction and in-use unloads."""

from __future__ import annotations

import asyncio
import gc
import inspect
import shutil
import warnings

import pytest

from adept.adapters import AdapterRegistry
from adept.errors import NotFound
from services.llm.adapters import AdapterLoader, AdapterLoadError
from tests.unit.llm.conftest import chat, collect, run


@pytest.fixture
def registry(tmp_path, lora_dirs) -> AdapterRegistry:
    reg = AdapterRegistry(str(tmp_path / "adapters"))
    for name in ("a1", "a2"):
        reg.publish("acme", name, lora_dirs[name], {"base_model": "tiny-random-phi3"})
    return reg


def test_concurrent_requests_for_one_adapter_load_it_once(make_engine, registry):
    engine = make_engine()
    loader = AdapterLoader(engine, registry)

    async def main():
        await asyncio.gather(*(loader.load("acme/a1@v1") for _ in range(6)))
        return await collect(engine, chat("restore power"), "acme/a1@v1")

    _, last, _ = run(main())
    assert loader.loads == 1
    assert engine.loaded_adapters == ["acme/a1@v1"] and len(engine.slots.names) == 1
    assert last.finish_reason is not None


def test_corrupt_or_deleted_adapter_fails_alone(make_engine, registry, lora_dirs):
    engine = make_engine()
    loader = AdapterLoader(engine, registry)
    a2 = registry.resolve("acme", "a2", "v1").path
    (a2 / "adapter_model.safetensors").write_bytes(b"not a safetensors file")

    with pytest.raises(AdapterLoadError, match="acme/a2@v1") as err:
        run(loader.load("acme/a2@v1"))
    assert err.value.code == "adapter_load_failed"
    assert engine.slots.names == []  # the failed load left the model as it was

    shutil.rmtree(registry.resolve("acme", "a1", "v1").path)
    with pytest.raises(NotFound, match="acme/a1@v1"):
        run(loader.load("acme/a1@v1"))
    with pytest.raises(NotFound):
        run(loader.load("acme/nothing@v1"))

    # The replica still serves the base model and any good adapter.
    registry.publish("acme", "a3", lora_dirs["a3"], {"base_model": "tiny-random-phi3"})

    async def main():
        await loader.load("acme/a3@v1")
        return [await collect(engine, chat("check the meter"), a) for a in ("", "acme/a3@v1")]

    (base, b_last, _), (tuned, t_last, _) = run(main())
    assert base != tuned and b_last.finish_reason and t_last.finish_reason


def test_serve_eviction_hook_unloads_the_adapter(make_engine, lora_dirs):
    from services.llm.deployment import LoadedAdapter

    engine = make_engine()
    run(engine.load_adapter("acme/a1@v1", lora_dirs["a1"]))
    handle = LoadedAdapter("acme/a1@v1", engine.unload_adapter)
    # What Serve's LRU does on eviction (ray/serve/multiplex.py unload_model_lru): await model.__del__().
    assert hasattr(handle, "__del__") and inspect.iscoroutinefunction(handle.__del__)
    run(handle.__del__())
    assert engine.loaded_adapters == [] and engine.slots.names == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # garbage collection must not create a never-awaited coroutine
        del handle
        gc.collect()


def test_unloading_an_adapter_in_use_waits_for_its_requests(make_engine, lora_dirs):
    engine = make_engine()

    async def main():
        await engine.load_adapter("acme/a1@v1", lora_dirs["a1"])
        solo, _, _ = await collect(engine, chat("who does repair", max_tokens=20), "acme/a1@v1")
        gen = engine.generate(chat("who does repair", max_tokens=20), "acme/a1@v1")
        parts = [(await gen.__anext__()).text]
        assert await engine.unload_adapter("acme/a1@v1")
        assert engine.slots.names  # still there: a request is using it
        parts += [chunk.text async for chunk in gen]
        with pytest.raises(NotFound):
            await collect(engine, chat("hi"), "acme/a1@v1")
        return solo, "".join(parts)

    solo, during = run(main())
    assert during == solo
    assert engine.slots.names == [] and engine.loaded_adapters == []


def test_cold_load_reads_files_off_the_model_thread_and_keeps_streams_going(make_engine, lora_dirs):
    import threading

    engine = make_engine()
    threads: dict[str, str] = {}
    streamed_during_read = threading.Event()
    prepare, inject = engine.slots.prepare, engine.slots.inject

    def recording_prepare(path):
        threads["prepare"] = threading.current_thread().name
        # Hold the read until the stream has moved on: if reading blocked the model thread, it never would.
        assert streamed_during_read.wait(timeout=120), "no token streamed while the adapter was read"
        return prepare(path)

    def recording_inject(name, prepared):
        threads["inject"] = threading.current_thread().name
        return inject(name, prepared)

    engine.slots.prepare, engine.slots.inject = recording_prepare, recording_inject

    async def main():
        chunks = 0
        async for _chunk in engine.generate(chat("restore power", max_tokens=40), ""):
            chunks += 1
            if chunks == 2:
                load = asyncio.ensure_future(engine.load_adapter("acme/a1@v1", lora_dirs["a1"]))
            if chunks == 6:
                streamed_during_read.set()
        await load
        return engine.loaded_adapters

    assert run(main()) == ["acme/a1@v1"]
    assert threads["inject"].startswith("adept-llm")  # only the injection waits for a step boundary
    assert not threads["prepare"].startswith("adept-llm")


def test_adapters_run_in_the_base_models_dtype(tiny_phi3, lora_dirs):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from services.llm.engine import Engine

    model = AutoModelForCausalLM.from_pretrained(tiny_phi3, dtype=torch.bfloat16)
    engine = Engine(model, AutoTokenizer.from_pretrained(tiny_phi3), batch_wait_ms=0, max_tokens_limit=64)
    try:
        run(engine.load_adapter("acme/a1@v1", lora_dirs["a1"]))
        lora = {p.dtype for n, p in engine.slots.peft.named_parameters() if "lora_" in n}
        assert lora == {torch.bfloat16}
        _, last, _ = run(collect(engine, chat("who does repair", max_tokens=4), "acme/a1@v1"))
        assert last.usage.completion_tokens == 4
    finally:
        engine._exec.shutdown(wait=True)


def test_a_loaded_adapter_does_not_depend_on_its_files(make_engine, lora_dirs, tmp_path):
    """Weights are copied out of the (memory-mapped) safetensors file: truncating it later changes nothing."""
    engine = make_engine()
    copy = tmp_path / "a1"
    shutil.copytree(lora_dirs["a1"], copy)

    async def main():
        await engine.load_adapter("acme/a1@v1", copy)
        before, _, _ = await collect(engine, chat("who does repair"), "acme/a1@v1")
        with open(copy / "adapter_model.safetensors", "r+b") as fh:
            fh.truncate(0)  # a storage fault or an overwrite under a loaded adapter
        after, _, _ = await collect(engine, chat("who does repair"), "acme/a1@v1")
        return before, after

    before, after = run(main())
    assert before == after
