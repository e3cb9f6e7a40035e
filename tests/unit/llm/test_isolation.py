"""One request's trouble stays its own: prefill/decode failures, broken adapters, released adapters, a dead loop.

Failures are injected into the real tiny Phi-3 with a forward pre-hook (``inject_fault``), the way
a CUDA OOM strikes one forward pass; the NaN adapter is a real PEFT adapter with NaN weights.
"""

from __future__ import annotations

import asyncio
import types

import pytest
import torch

from adept.errors import Overloaded, Unavailable
from services.llm.engine import EngineObserver
from services.llm.runner import GenerationFailed
from tests.unit.llm.conftest import broken_lora, chat, collect, inject_fault, run

SHORT = ["check the breaker", "who does repair", "what is the tariff rate"]
LONG = "how do I restore power after a storm when the feeder and the substation report a fault " * 3


async def outcome(engine, req, adapter=""):
    try:
        return await collect(engine, req, adapter)
    except Exception as e:
        return e


def test_oom_in_one_newcomers_prefill_fails_only_that_request(make_engine):
    engine = make_engine()
    victim = chat(LONG, max_tokens=8)
    others = [chat(p, max_tokens=8) for p in SHORT]
    poison = set(engine.prompts.build(victim, 8).ids) - {
        t for r in others for t in engine.prompts.build(r, 8).ids
    }
    assert poison
    token = min(poison)

    async def main():
        solo = [await collect(engine, r) for r in others]
        inject_fault(
            engine,
            lambda ids, _pos: ids.shape[1] > 1 and bool((ids == token).any()),
            torch.OutOfMemoryError("CUDA out of memory (injected)"),
        )
        results = await asyncio.gather(*(outcome(engine, r) for r in [others[0], victim, *others[1:]]))
        return solo, results

    solo, results = run(main())
    err = results[1]
    assert isinstance(err, Overloaded) and err.status == 503 and err.headers()["Retry-After"]
    assert [r[0] for r in [results[0], *results[2:]]] == [s[0] for s in solo]
    engine.check_health()


def test_error_in_one_rows_decode_fails_only_that_row(make_engine):
    engine = make_engine()
    victim = chat(LONG, max_tokens=12)
    others = [chat(p, max_tokens=12) for p in SHORT]
    fail_at = len(engine.prompts.build(victim, 12).ids) + 3  # the victim's 4th decode position
    assert all(len(engine.prompts.build(r, 12).ids) + 12 < fail_at for r in others)

    async def main():
        solo = [await collect(engine, r) for r in others]
        inject_fault(
            engine,
            lambda ids, pos: ids.shape[1] == 1 and bool((pos == fail_at).any()),
            RuntimeError("device-side assert (injected)"),
        )
        chunks: list[str] = []

        async def watch_victim():
            try:
                async for chunk in engine.generate(victim, ""):
                    chunks.append(chunk.text)
            except GenerationFailed as e:
                return e
            return None

        results = await asyncio.gather(watch_victim(), *(collect(engine, r) for r in others))
        return solo, results, chunks

    solo, results, victim_chunks = run(main())
    assert isinstance(results[0], GenerationFailed) and results[0].status == 500
    assert "device-side assert" not in results[0].message  # typed, never the raw library text
    assert len(victim_chunks) >= 2  # it streamed before its own step failed
    assert [r[0] for r in results[1:]] == [s[0] for s in solo]


def test_broken_adapter_fails_its_own_requests_only(make_engine, tiny_phi3, tmp_path):
    from transformers import AutoModelForCausalLM

    engine = make_engine()
    bad = broken_lora(AutoModelForCausalLM.from_pretrained(tiny_phi3), tmp_path / "nan", seed=5)

    async def main():
        solo = await collect(engine, chat(SHORT[0]))
        await engine.load_adapter("acme/nan@v1", bad)
        results = await asyncio.gather(
            outcome(engine, chat(SHORT[1]), "acme/nan@v1"),
            outcome(engine, chat(SHORT[0])),
            outcome(engine, chat(SHORT[2], temperature=0.8, seed=3), "acme/nan@v1"),
        )
        return solo, results

    solo, results = run(main())
    assert isinstance(results[0], GenerationFailed) and results[0].code == "generation_failed"
    assert isinstance(results[2], GenerationFailed)
    assert results[1][0] == solo[0]


def test_cancelled_and_failed_rows_release_their_adapters(make_engine, lora_dirs):
    engine = make_engine()
    victim = chat(LONG, max_tokens=30)
    fail_at = len(engine.prompts.build(victim, 30).ids) + 4

    async def main():
        await engine.load_adapter("acme/a1@v1", lora_dirs["a1"])
        inject_fault(
            engine,
            lambda ids, pos: ids.shape[1] == 1 and bool((pos == fail_at).any()),
            RuntimeError("injected"),
        )
        cancelled = engine.generate(chat(SHORT[0], max_tokens=60), "acme/a1@v1")
        await cancelled.__anext__()
        failing = asyncio.ensure_future(outcome(engine, victim, "acme/a1@v1"))
        await asyncio.sleep(0)
        assert await engine.unload_adapter("acme/a1@v1")  # in use: removal deferred
        await cancelled.aclose()  # the client goes away in the middle
        failed = await failing
        # Let the loop retire the cancelled row, then check nothing still holds the adapter.
        await collect(engine, chat(SHORT[1], max_tokens=2))
        return failed

    failed = run(main())
    assert isinstance(failed, GenerationFailed)
    assert engine.slots.names == []  # the doomed adapter went once its last user left
    assert not engine._inflight and sum(engine._users.values()) == 0


class CrashOnTokens(EngineObserver):
    """A metrics hook with a bug: it raises once armed (a crash outside any request's own work)."""

    armed = False

    def tokens(self, adapter_id: str, n: int) -> None:
        if self.armed:
            raise KeyError("metrics exporter bug")


def test_a_dead_loop_fails_pending_requests_and_health_says_so(make_engine):
    observer = CrashOnTokens()
    engine = make_engine(observer=observer, max_batch_size=2)

    async def main():
        await collect(engine, chat(SHORT[0], max_tokens=2))
        engine.check_health()
        observer.armed = True
        # Two running, two waiting: all four must end (not hang) with a 503.
        results = await asyncio.wait_for(
            asyncio.gather(*(outcome(engine, chat(p, max_tokens=20)) for p in [*SHORT, LONG])), timeout=120
        )
        with pytest.raises(Unavailable):
            await collect(engine, chat(SHORT[0]))
        return results

    results = run(main())
    assert all(isinstance(r, Unavailable) and r.status == 503 for r in results), results
    with pytest.raises(RuntimeError, match="loop died"):
        engine.check_health()


def test_closing_mid_step_fails_requests_cleanly_and_leaves_the_running_step_alone(make_engine, caplog):
    import threading
    import time

    engine = make_engine()
    in_step = threading.Event()

    def slow_decode(_module, _args, kwargs):
        if kwargs["input_ids"].shape[1] == 1 and slow.armed:
            in_step.set()
            time.sleep(0.5)  # injected: a long forward pass, so close() lands in the middle of it

    slow = types.SimpleNamespace(armed=False)
    engine.slots.model.model.register_forward_pre_hook(slow_decode, with_kwargs=True)

    async def main():
        gens = [engine.generate(chat(p, max_tokens=100), "") for p in [*SHORT, LONG]]
        await asyncio.gather(*(g.__anext__() for g in gens))
        rest = [asyncio.ensure_future(outcome_of(g)) for g in gens]
        slow.armed = True
        await asyncio.to_thread(in_step.wait, 60)
        await engine.close()
        return await asyncio.gather(*rest)

    async def outcome_of(gen):
        try:
            async for _ in gen:
                pass
        except Unavailable as e:
            return e
        return None

    with caplog.at_level("WARNING", logger="services.llm"):
        results = run(main())
    assert all(isinstance(r, Unavailable) and "shutting down" in r.message for r in results), results
    assert not [r for r in caplog.records if r.name.startswith("services.llm")], caplog.records


def test_a_row_a_broken_adapter_used_is_clean_for_the_next_request(make_engine, tiny_phi3, tmp_path):
    """A NaN adapter's row leaves NaN keys behind; the next, shorter request placed in that row must not read them."""
    from transformers import AutoModelForCausalLM

    engine = make_engine()
    bad = broken_lora(AutoModelForCausalLM.from_pretrained(tiny_phi3), tmp_path / "nan", seed=5)
    long_running = chat(LONG, max_tokens=60, ignore_eos=True)
    poisoner = chat(LONG + " and the crew", max_tokens=8)
    later = chat(SHORT[0], max_tokens=8, ignore_eos=True)

    async def main():
        solo = await collect(engine, later)
        await engine.load_adapter("acme/nan@v1", bad)
        first = engine.generate(long_running, "")  # row 0, longer than `later` all along
        await first.__anext__()
        failed = await outcome(engine, poisoner, "acme/nan@v1")  # row 1: prefilled, then fails
        assert engine.batch.rows and engine.batch.rows[0].cache_len > len(engine.prompts.build(later, 8).ids)
        reused = await outcome(engine, later)  # lands in row 1, next to the longer row 0
        await first.aclose()
        return solo, failed, reused

    solo, failed, reused = run(main())
    assert isinstance(failed, GenerationFailed)
    assert not isinstance(reused, Exception), reused
    assert reused[0] == solo[0]
