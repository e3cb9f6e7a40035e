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
from services.llm.engine import EngineObserver
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
        lora = {t.dtype for pair in engine.slots._stacks.values() for t in pair}
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


class Evictions(EngineObserver):
    def __init__(self) -> None:
        self.evicted: list[str] = []

    def adapter_evicted(self, adapter_id: str) -> None:
        self.evicted.append(adapter_id)


def test_a_full_replica_evicts_its_least_recently_used_idle_adapter(make_engine, lora_dirs):
    observer = Evictions()
    engine = make_engine(max_loras=2, observer=observer)

    async def main():
        await engine.load_adapter("acme/a1@v1", lora_dirs["a1"])
        await engine.load_adapter("acme/a2@v1", lora_dirs["a2"])
        a1_before, _, _ = await collect(engine, chat("who does repair"), "acme/a1@v1")  # a1 used last
        await engine.load_adapter("acme/a3@v1", lora_dirs["a3"])  # no free slot: a2 (LRU, idle) goes
        a1_after, _, _ = await collect(engine, chat("who does repair"), "acme/a1@v1")
        return a1_before, a1_after

    before, after = run(main())
    assert engine.loaded_adapters == ["acme/a1@v1", "acme/a3@v1"] and observer.evicted == ["acme/a2@v1"]
    assert before == after  # a1's slot was not touched
    assert sorted(engine.slots.names) == sorted([str(lora_dirs["a1"]), str(lora_dirs["a3"])])


def test_a_load_waits_for_a_slot_while_every_slot_serves_a_request(make_engine, lora_dirs):
    """One slot, a stream on it: the next adapter's load waits (no crash, no eviction of a busy slot)."""
    import threading

    engine = make_engine(max_loras=1)
    gate = threading.Event()  # holds the stream's decode steps until the load is seen waiting
    held = {"armed": False}

    def hold_decode(_module, _args, kwargs):
        if held["armed"] and kwargs["input_ids"].shape[1] == 1:
            assert gate.wait(timeout=120), "the load never queued for a slot"

    engine.slots.model.model.register_forward_pre_hook(hold_decode, with_kwargs=True)

    async def main():
        await engine.load_adapter("acme/a1@v1", lora_dirs["a1"])
        alone, _, _ = await collect(
            engine, chat("restore power", max_tokens=24, ignore_eos=True), "acme/a1@v1"
        )
        stream = engine.generate(chat("restore power", max_tokens=24, ignore_eos=True), "acme/a1@v1")
        parts = [(await stream.__anext__()).text]
        held["armed"] = True  # the stream cannot finish (and free its slot) before the load queues
        load = asyncio.ensure_future(engine.load_adapter("acme/a2@v1", lora_dirs["a2"]))
        while engine.slot_waiters == 0:  # the load has read its files and waits for a slot
            assert not load.done(), load
            await asyncio.sleep(0.01)
        assert engine.loaded_adapters == ["acme/a1@v1"]
        gate.set()
        parts += [chunk.text async for chunk in stream]  # the busy slot keeps serving its stream
        await load
        return alone, "".join(parts)

    alone, during = run(main())
    assert during == alone
    assert engine.loaded_adapters == ["acme/a2@v1"] and engine.slot_waiters == 0


def test_a_stream_keeps_going_while_ten_adapters_load(make_engine, tiny_phi3, tmp_path):
    """Every one of ten cold loads reads its files only once the stream has produced another token.

    If reading or converting ran on the model thread, the stream could not move and the load would
    wait for ever (the test's timeout); only the copy into the slot runs there, between steps.
    """
    import threading

    from transformers import AutoModelForCausalLM

    from tests.unit.llm.conftest import make_lora

    model = AutoModelForCausalLM.from_pretrained(tiny_phi3)
    dirs = [make_lora(model, tmp_path / f"t{i}", seed=20 + i) for i in range(10)]
    # fewer slots than adapters: loads evict idle ones too. The stream is long (1,000 tokens) so that it
    # outlives the ten loads (each needs one more token) on any machine, however slow its file reads.
    engine = make_engine(max_loras=4, max_tokens_limit=1024)
    tokens: list[int] = [0]  # tokens streamed so far (logprobs=0: one chunk per token)
    threads: set[str] = set()
    prepare = engine.slots.prepare
    loop_holder: dict[str, asyncio.AbstractEventLoop] = {}

    def gated_prepare(path):
        threads.add(threading.current_thread().name)
        seen = tokens[0]
        moved = threading.Event()

        def check() -> None:
            if tokens[0] > seen:
                moved.set()
            else:
                loop_holder["loop"].call_later(0.005, check)

        loop_holder["loop"].call_soon_threadsafe(check)
        assert moved.wait(timeout=120), "no token streamed while an adapter was being read"
        return prepare(path)

    engine.slots.prepare = gated_prepare

    async def main():
        loop_holder["loop"] = asyncio.get_running_loop()
        req = chat("restore power", max_tokens=1000, ignore_eos=True, logprobs=0)
        solo, _, _ = await collect(engine, req)
        stream = engine.generate(req, "")
        parts = [(await stream.__anext__()).text]
        loads = asyncio.ensure_future(
            asyncio.gather(*(engine.load_adapter(f"t{i}/x@v1", d) for i, d in enumerate(dirs)))
        )
        async for chunk in stream:
            parts.append(chunk.text)
            tokens[0] += 1
            if loads.done():
                break
        await loads
        parts += [chunk.text async for chunk in stream]
        return solo, "".join(parts)

    solo, during = run(main())
    assert during == solo  # the loads did not change the running stream either
    assert not any(t.startswith("adept-llm") for t in threads)
    assert len(engine.load_timings) == 10 and len(engine.loaded_adapters) == 4
    # What the model thread spent per load (the copy into a slot) is part of that load's time.
    assert all(0 < on_model <= total for total, on_model in engine.load_timings)
