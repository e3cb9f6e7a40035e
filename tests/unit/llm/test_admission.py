"""Bounded memory and fair share: the KV budget, the bounded queue, the preallocated cache, fair queuing."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from adept.errors import Overloaded, RateLimited
from services.llm.engine import EngineObserver
from services.llm.scheduler import FairQueue, preemption_victim
from tests.unit.llm.conftest import chat, collect, run

PROMPTS = ["check the breaker", "who does repair", "what is the tariff rate", "restore power", "the grid"]


class Watch(EngineObserver):
    """Records what the engine reports each step (queue per tenant, running rows, the cache's storage)."""

    def __init__(self, engine_ref: list) -> None:
        self.engine_ref = engine_ref
        self.max_running = 0
        self.waiting_seen: list[dict[str, int]] = []
        self.running_seen: list[dict[str, int]] = []
        self.storages: set[int] = set()

    def queue_depth(self, waiting: dict[str, int], running: dict[str, int]) -> None:
        self.max_running = max(self.max_running, sum(running.values()))
        self.waiting_seen.append(dict(waiting))
        self.running_seen.append(dict(running))

    def kv_cache(self, allocated_bytes: int, budget_bytes: int) -> None:
        cache = self.engine_ref[0].batch.cache
        if cache.keys_all is not None:
            self.storages.add(cache.keys_all[0].data_ptr())


def build(make_engine, **kwargs):
    ref: list = []
    watch = Watch(ref)
    engine = make_engine(observer=watch, **kwargs)
    ref.append(engine)
    return engine, watch


def test_admission_keeps_the_kv_cache_within_its_budget(make_engine):
    probe = make_engine()
    need = max(len(probe.prompts.build(chat(p, max_tokens=16), 16).ids) for p in PROMPTS) + 16
    budget = 2 * need + need // 2  # room for two requests' reservations, not three
    engine, watch = build(make_engine, kv_cache_tokens=max(budget, 300), max_tokens_limit=16)
    engine.kv_budget_tokens = engine.batch.cache.budget_tokens = budget  # below the window: test-only squeeze

    async def main():
        return await asyncio.gather(*(collect(engine, chat(p, max_tokens=16)) for p in PROMPTS))

    results = run(main())
    assert all(last.finish_reason for _, last, _ in results)
    assert watch.max_running == 2
    _now, peak, limit = engine.kv_cache_bytes
    assert 0 < peak <= limit


def test_decode_reuses_one_preallocated_cache_while_rows_join_and_leave(make_engine):
    engine, watch = build(make_engine)

    async def main():
        started = asyncio.Event()

        async def long():
            n = 0
            async for _chunk in engine.generate(chat(PROMPTS[0], max_tokens=40), ""):
                n += 1
                if n == 2:
                    started.set()

        async def joiners():
            await started.wait()
            for p in PROMPTS[1:]:
                await collect(engine, chat(p, max_tokens=3))

        await asyncio.gather(long(), joiners())

    run(main())
    assert len(watch.storages) == 1  # no per-step or per-merge reallocation of the cache tensors
    assert engine.batch.cache.keys_all is None  # freed once idle


def test_bounded_queue_answers_429_per_tenant_and_503_overall_with_retry_after(make_engine):
    engine = make_engine(max_batch_size=1, max_queued_requests=2, max_queued_per_tenant=1)

    def req(tenant: str, **kw):
        return chat(PROMPTS[0], max_tokens=kw.pop("max_tokens", 4), tenant=tenant, **kw)

    async def main():
        running = engine.generate(req("a", max_tokens=60), "")
        await running.__anext__()  # admitted: the only row
        queued = [engine.generate(req(t), "") for t in ("a", "b")]
        waiting = [asyncio.ensure_future(g.__anext__()) for g in queued]
        while len(engine.waiting) < 2:  # prompts are tokenized on a worker thread before they queue
            await asyncio.sleep(0.01)
        assert engine.waiting.waiting_by_tenant() == {"a": 1, "b": 1}
        with pytest.raises(RateLimited) as per_tenant:
            await engine.generate(req("a"), "").__anext__()
        with pytest.raises(Overloaded) as overall:
            await engine.generate(req("c"), "").__anext__()
        await running.aclose()
        for w in waiting:
            await w
        for g in queued:
            await g.aclose()
        return per_tenant.value, overall.value

    per_tenant, overall = run(main())
    assert per_tenant.status == 429 and int(per_tenant.headers()["Retry-After"]) >= 1
    assert per_tenant.code == "too_many_queued_requests"
    assert overall.status == 503 and int(overall.headers()["Retry-After"]) >= 1


def test_a_lone_tenant_is_not_stuck_behind_another_tenants_flood(make_engine):
    engine, watch = build(make_engine, max_batch_size=2)

    async def main():
        events: list[str] = []
        flood_started = asyncio.Event()

        async def flood(i: int):
            n = 0
            async for chunk in engine.generate(chat(PROMPTS[i % 3], max_tokens=30, tenant="flood"), ""):
                n += 1
                if n == 1:
                    events.append(f"flood{i}:first")
                    if i == 1:
                        flood_started.set()
                if chunk.finish_reason:
                    events.append(f"flood{i}:done:{chunk.usage.completion_tokens}")

        async def lone():
            await flood_started.wait()
            async for chunk in engine.generate(chat(PROMPTS[3], max_tokens=3, tenant="lone"), ""):
                if not any(e == "lone:first" for e in events):
                    events.append("lone:first")
                if chunk.finish_reason:
                    events.append("lone:done")

        await asyncio.gather(*(flood(i) for i in range(6)), lone())
        return events

    events = run(main())
    lone_first = events.index("lone:first")
    # Admitted before any queued flood request, and before the running flood rows finished (preemption).
    assert not any(e.startswith(("flood2", "flood3", "flood4", "flood5")) for e in events[:lone_first])
    assert not any(":done" in e for e in events[:lone_first])
    # The preempted flood request resumed and still produced every token.
    assert sorted(e for e in events if ":done:" in e) == [f"flood{i}:done:30" for i in range(6)]
    assert any(w.get("flood", 0) >= 3 for w in watch.waiting_seen)  # per-tenant queue depth reported
    assert any(set(r) == {"flood", "lone"} for r in watch.running_seen)


def test_preempted_request_gives_the_same_answer(make_engine):
    """A preempted row is recomputed from its prompt and tokens so far: the answer does not change (fp32)."""
    engine = make_engine(max_batch_size=2)

    async def main():
        solo = await collect(engine, chat(PROMPTS[0], max_tokens=24))
        started = asyncio.Event()
        texts: dict[int, str] = {}

        async def flood(i: int):
            parts = []
            async for chunk in engine.generate(chat(PROMPTS[0], max_tokens=24, tenant="f"), ""):
                parts.append(chunk.text)
                if len(parts) == 3:
                    started.set()
            texts[i] = "".join(parts)

        async def other():
            await started.wait()
            await collect(engine, chat(PROMPTS[1], max_tokens=2, tenant="g"))

        await asyncio.gather(flood(0), flood(1), other())
        return solo[0], texts

    solo, texts = run(main())
    assert texts[0] == solo and texts[1] == solo


@dataclass(eq=False)
class Item:
    tenant: str
    prompt_tokens: int = 10
    cancelled: bool = False
    submitted: float = 0.0
    preemptions: int = 0


def serve(q: FairQueue, output_tokens: int = 0):
    """Admit the next request and generate ``output_tokens`` for it, as the engine charges them."""
    item = q.pop()
    q.charge(item.tenant, output_tokens=output_tokens)
    return item


def test_fair_queue_interleaves_tenants_by_tokens_served():
    q = FairQueue(max_waiting=100, max_waiting_per_tenant=100)
    for _ in range(5):
        q.push(Item("a"))
    q.push(Item("b", prompt_tokens=30))
    q.push(Item("c"))
    order = [serve(q).tenant for _ in range(len(q))]
    assert sorted(order[:3]) == ["a", "b", "c"]  # each tenant's first request before anyone's second
    assert order.count("b") == 1 and order[-1] == "a"
    # A tenant arriving late is not owed the time it was idle, nor pushed behind the queue.
    for _ in range(3):
        q.push(Item("a"))
    serve(q)
    q.push(Item("late"))
    assert q.pop().tenant == "late"


def test_a_returning_tenant_is_charged_for_service_not_for_its_max_tokens():
    """The issue's case: a lone tenant's earlier request asked max_tokens=900 and stopped after one token."""
    q = FairQueue(max_waiting=100, max_waiting_per_tenant=100)
    lone = Item("lone")
    q.push(lone)
    serve(q, output_tokens=1)
    q.finished(lone)
    flood = [Item("flood") for _ in range(30)]
    for item in flood:
        q.push(item)
    for _ in range(4):
        serve(q, output_tokens=20)
    q.push(Item("lone"))
    assert q.pop().tenant == "lone"  # next, not after the flood's backlog
    assert q.served["lone"] == q.served["flood"] + 10  # lifted to the flood's counter, then its prompt


def test_a_tenant_back_from_idle_banks_no_credit():
    q = FairQueue(max_waiting=100, max_waiting_per_tenant=100)
    early = Item("early")
    q.push(early)
    serve(q, output_tokens=1)
    q.finished(early)
    for _ in range(6):
        q.push(Item("busy"))
    for _ in range(3):
        serve(q, output_tokens=50)
    q.push(Item("early"))
    q.push(Item("early"))
    # Lifted to busy's counter: one request ahead (the tie), then they alternate, no long run of "early".
    order = [serve(q, output_tokens=50).tenant for _ in range(5)]
    assert order[:4] in (["early", "busy", "early", "busy"], ["early", "busy", "busy", "early"])


def test_any_waiting_request_of_the_least_served_tenant_can_be_taken():
    q = FairQueue(max_waiting=100, max_waiting_per_tenant=100)
    big, small = Item("a", prompt_tokens=500), Item("a", prompt_tokens=5)
    q.push(big)
    q.push(small)
    q.push(Item("b"))
    q.charge("b", output_tokens=100)
    assert q.tenants()[0] == "a" and list(q.waiting("a")) == [big, small]
    q.take(small)  # the engine takes the first that fits its KV budget
    assert list(q.waiting("a")) == [big] and q.served["a"] == 5


def test_a_tenant_with_nothing_queued_is_not_refused_because_others_filled_the_queue():
    q = FairQueue(max_waiting=8, max_waiting_per_tenant=8)  # 2 of 8 reserved for first requests
    for tenant in "abcd":
        q.push(Item(tenant))
    for tenant in "ab":
        q.push(Item(tenant))
    with pytest.raises(Overloaded):
        q.push(Item("c"))  # the shared part (6) is full for a tenant already waiting
    q.push(Item("e"))  # a fifth tenant's first request still gets in
    assert q.waiting_by_tenant()["e"] == 1


def test_preemption_takes_the_newest_row_of_the_heaviest_tenant():
    rows = [Item("a", submitted=1), Item("a", submitted=3), Item("a", submitted=2), Item("b", submitted=0)]
    assert preemption_victim("c", rows) is rows[1]
    assert preemption_victim("b", rows) is rows[1]  # b runs 1, a runs 3
    assert preemption_victim("a", rows) is None
    assert preemption_victim("b", rows[:2] + rows[3:]) is None  # 2 vs 1: no starving


def test_a_returning_tenant_that_asked_a_large_max_tokens_is_not_made_to_wait(make_engine):
    """The issue's measurement, scaled down: its earlier request reserved 120 tokens and used 1."""
    engine = make_engine(max_batch_size=2)

    async def main():
        events: list[str] = []
        earlier = engine.generate(chat(PROMPTS[3], max_tokens=120, tenant="lone"), "")
        await earlier.__anext__()
        await earlier.aclose()  # stopped after one token (the client had what it needed)
        flood_started = asyncio.Event()

        async def flood(i: int):
            n = 0
            async for _chunk in engine.generate(chat(PROMPTS[i % 3], max_tokens=8, tenant="flood"), ""):
                n += 1
                if n == 1:
                    events.append(f"flood{i}:first")
                    if i == 1:
                        flood_started.set()

        async def lone():
            await flood_started.wait()
            async for _chunk in engine.generate(chat(PROMPTS[3], max_tokens=3, tenant="lone"), ""):
                if "lone:first" not in events:
                    events.append("lone:first")

        await asyncio.gather(*(flood(i) for i in range(8)), lone())
        return events

    events = run(main())
    before = events[: events.index("lone:first")]
    assert sorted(before) == ["flood0:first", "flood1:first"]  # no queued flood request went ahead
