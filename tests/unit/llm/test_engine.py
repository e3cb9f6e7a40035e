"""The engine on the tiny Phi-3: batching equivalence, adapters, sampling, stops, limits, continuity."""

from __future__ import annotations

import asyncio

import pytest

from adept.errors import InvalidRequest, NotFound
from services.llm.engine import EngineObserver
from tests.unit.llm.conftest import chat, collect, run

PROMPTS = [
    "what is the tariff rate",
    "how do I restore power after a storm",
    "check the breaker",
    "who does repair",
]


class Recorder(EngineObserver):
    def __init__(self) -> None:
        self.max_running = 0
        self.first_tokens: list[str] = []

    def queue_depth(self, waiting: dict[str, int], running: dict[str, int]) -> None:
        self.max_running = max(self.max_running, sum(running.values()))

    def first_token(self, adapter_id: str, seconds: float) -> None:
        self.first_tokens.append(adapter_id)


def test_batched_rows_equal_unbatched_per_adapter(make_engine, lora_dirs):
    rec = Recorder()
    engine = make_engine(observer=rec)
    jobs = [
        ("", PROMPTS[0]),
        ("t/a1@v1", PROMPTS[1]),
        ("t/a2@v1", PROMPTS[2]),
        ("", PROMPTS[3]),
        ("t/a1@v1", PROMPTS[0]),
    ]

    async def main():
        await engine.load_adapter("t/a1@v1", lora_dirs["a1"])
        await engine.load_adapter("t/a2@v1", lora_dirs["a2"])
        solo = [await collect(engine, chat(p, max_tokens=12), a) for a, p in jobs]
        together = await asyncio.gather(*(collect(engine, chat(p, max_tokens=12), a) for a, p in jobs))
        return solo, together

    solo, together = run(main())
    assert rec.max_running == len(jobs)  # they really shared one batch
    for (s_text, s_last, _), (b_text, b_last, _) in zip(solo, together, strict=True):
        assert b_text == s_text
        assert b_last.usage == s_last.usage


def test_adapters_change_output_and_base_stays_base(make_engine, lora_dirs):
    engine = make_engine()

    async def main():
        before = await collect(engine, chat(PROMPTS[0]))
        await engine.load_adapter("t/a1@v1", lora_dirs["a1"])
        await engine.load_adapter("t/a2@v1", lora_dirs["a2"])
        outs = {a: (await collect(engine, chat(PROMPTS[0]), a))[0] for a in ("", "t/a1@v1", "t/a2@v1")}
        return before[0], outs

    before, outs = run(main())
    assert outs[""] == before
    assert len(set(outs.values())) == 3


def test_unknown_adapter_and_limits_are_client_errors(make_engine):
    engine = make_engine(max_tokens_limit=8)

    async def main(req, adapter=""):
        return await collect(engine, req, adapter)

    with pytest.raises(NotFound):
        run(main(chat("hi", max_tokens=4), "t/missing@v1"))
    with pytest.raises(InvalidRequest, match="max_tokens"):
        run(main(chat("hi", max_tokens=9)))


def test_max_tokens_ends_with_length(make_engine):
    engine = make_engine()
    _text, last, _ = run(collect(engine, chat(PROMPTS[1], max_tokens=5)))
    assert last.finish_reason == "length"
    assert last.usage.completion_tokens == 5
    assert last.usage.prompt_tokens == len(engine.prompts.build(chat(PROMPTS[1]), 5).ids)


def test_stop_string_truncates_before_it(make_engine):
    engine = make_engine()
    full, _, _ = run(collect(engine, chat(PROMPTS[0], max_tokens=24)))
    # A stop string taken from the middle of the greedy answer: printable ASCII, after the first chars.
    start = next(
        i for i in range(3, len(full) - 3) if full[i : i + 3].isascii() and full[i : i + 3].isprintable()
    )
    stop = full[start : start + 3]
    text, last, _ = run(collect(engine, chat(PROMPTS[0], max_tokens=24, stop=["zzzz-never", stop])))
    assert text == full[: full.find(stop)]
    assert last.finish_reason == "stop"


def test_seed_makes_sampling_reproducible_even_in_a_batch(make_engine):
    engine = make_engine()
    sampled = chat(PROMPTS[2], temperature=1.0, top_p=0.9, seed=7, max_tokens=12)

    async def main():
        a = await collect(engine, sampled)
        b = await collect(engine, sampled.model_copy(update={"seed": 8}))
        together = await asyncio.gather(
            collect(engine, sampled), collect(engine, chat(PROMPTS[0], max_tokens=12))
        )
        return a[0], b[0], together[0][0]

    a, b, batched = run(main())
    assert a == batched
    assert a != b


def test_request_joining_mid_generation_finishes_first(make_engine):
    engine = make_engine()

    async def main():
        order: list[str] = []
        started = asyncio.Event()

        async def long():
            n = 0
            async for chunk in engine.generate(chat(PROMPTS[1], max_tokens=100, stop=[]), ""):
                n += 1
                if n == 3:
                    started.set()
                if chunk.finish_reason:
                    order.append(f"long:{chunk.finish_reason}:{chunk.usage.completion_tokens}")

        async def short():
            await started.wait()
            _, last, _ = await collect(engine, chat(PROMPTS[2], max_tokens=3))
            order.append(f"short:{last.usage.completion_tokens}")

        await asyncio.gather(long(), short())
        return order

    order = run(main())
    assert order[0] == "short:3"
    assert order[1].startswith("long:length:100")


def test_client_going_away_frees_its_row(make_engine):
    engine = make_engine()

    async def main():
        gen = engine.generate(chat(PROMPTS[0], max_tokens=100), "")
        await gen.__anext__()
        await gen.aclose()  # like a disconnected HTTP client
        _text, last, _ = await collect(engine, chat(PROMPTS[3], max_tokens=4))
        return last, len(engine.batch)

    last, rows = run(main())
    assert last.finish_reason == "length" and rows == 0


def test_passages_fit_the_budget_and_usage_counts_the_rendered_prompt(make_engine):
    # No worked examples and no passage limit: the window alone decides what fits.
    engine = make_engine(max_model_len=200, max_tokens_limit=64, rag_examples=[], rag_max_passages=None)
    small = [
        "The outage code OC-7 means a blown fuse.",
        "Crews wear class 2 gloves.",
        "Tariff B is 12 cents.",
    ]
    huge = "voltage " * 400
    req = chat("what does OC-7 mean", max_tokens=32, passages=[small[0], huge, small[1], small[2]])
    built = engine.prompts.build(req, 32)
    assert built.passages_used == [0, 2, 3]  # the huge one does not fit, the later ones do; order kept
    assert len(built.ids) <= 200 - 32
    text = engine.tokenizer.decode(built.ids)
    assert "[1] The outage code OC-7" in text and "voltage voltage" not in text

    _, last, _ = run(collect(engine, req))
    assert last.passages_used == built.passages_used
    assert last.usage.prompt_tokens == len(built.ids)

    # A tighter budget keeps fewer passages, best first.
    tighter = [engine.prompts.build(req, n).passages_used for n in (32, 60, 90)]
    assert tighter[0] == [0, 2, 3] and tighter[-1] == [0] and len(tighter[1]) <= 3


def test_the_auto_passage_budget_gives_a_small_model_the_top_passage(make_engine):
    engine = make_engine(max_model_len=1024)  # the tiny model: far under 1 B parameters
    req = chat(
        "what does OC-7 mean", max_tokens=8, passages=["OC-7 is a blown fuse.", "Tariff B is 12 cents."]
    )
    built = engine.prompts.build(req, 8)
    assert built.passages_used == [0]
    _, last, _ = run(collect(engine, req))
    assert last.passages_used == [0]


def test_prompt_longer_than_the_window_is_rejected(make_engine):
    engine = make_engine(max_model_len=80, max_tokens_limit=64)
    with pytest.raises(InvalidRequest, match="context window") as err:
        run(collect(engine, chat("storm " * 100, max_tokens=16)))
    assert err.value.code == "context_length_exceeded"


def test_raw_prompt_and_count_tokens(make_engine):
    from services.llm.protocol import GenerateRequest

    engine = make_engine()
    req = GenerateRequest(prompt="the grid", max_tokens=4, temperature=0)
    _, last, _ = run(collect(engine, req))
    assert last.usage.prompt_tokens == run(engine.count_tokens(["the grid"]))[0]


def test_a_huge_prompt_is_refused_by_its_size_before_tokenizing(make_engine):
    """The issue's 4 MiB prompt: refused from its character count, the tokenizer never entered."""
    engine = make_engine(max_model_len=256, max_tokens_limit=64)
    encoded: list[int] = []
    encode = engine.prompts.encode
    engine.prompts.encode = lambda text: encoded.append(len(text)) or encode(text)  # a spy, not a stand-in
    with pytest.raises(InvalidRequest, match="context window") as err:
        run(collect(engine, chat("storm " * 700_000, max_tokens=16)))
    assert err.value.code == "context_length_exceeded" and encoded == []
    run(collect(engine, chat("storm", max_tokens=2)))  # normal prompts still tokenize
    assert encoded


def test_without_max_tokens_the_answer_gets_what_the_context_has_left(make_engine):
    """Not a fixed 256 ending in ``length`` mid-answer: the window's room, up to the configured cap."""
    from services.llm.protocol import GenerateRequest

    engine = make_engine(max_model_len=100, max_tokens_limit=64)
    req = GenerateRequest(prompt="the grid " * 20, temperature=0, ignore_eos=True)
    prompt_len = len(engine.prompts.build(req, 1).ids)
    _, last, _ = run(collect(engine, req))
    assert last.usage.completion_tokens == min(64, 100 - prompt_len) and prompt_len > 36
    capped = make_engine(max_model_len=200, max_tokens_limit=64, default_max_tokens=5)
    _, last, _ = run(collect(capped, GenerateRequest(prompt="the grid", temperature=0, ignore_eos=True)))
    assert last.usage.completion_tokens == 5


def test_logprobs_come_with_every_generated_token(make_engine):
    import math

    engine = make_engine()

    async def main():
        chunks = [
            c async for c in engine.generate(chat("the grid", max_tokens=6, ignore_eos=True, logprobs=3), "")
        ]
        return chunks

    chunks = run(main())
    entries = [e for c in chunks for e in c.logprobs or []]
    assert len(entries) == chunks[-1].usage.completion_tokens == 6
    assert "".join(e.token for e in entries) == "".join(c.text for c in chunks)
    for e in entries:  # greedy: the chosen token is the most likely one
        assert len(e.top) == 3 and e.top[0].token == e.token and e.logprob == e.top[0].logprob <= 0
        assert e.top[0].logprob >= e.top[1].logprob >= e.top[2].logprob
        assert math.isfinite(e.logprob)
    plain = run(collect(engine, chat("the grid", max_tokens=2)))[1]
    assert plain.logprobs is None


LONG_PROMPT = "how do I restore power after a storm when the feeder and the substation report a fault " * 3


def test_chunked_prefill_gives_the_same_answer(make_engine, lora_dirs):
    whole, chunked = make_engine(), make_engine(prefill_chunk_tokens=16)

    async def answers(engine):
        await engine.load_adapter("acme/a1@v1", lora_dirs["a1"])
        return [
            (await collect(engine, chat(LONG_PROMPT, max_tokens=10, ignore_eos=True), a))[0]
            for a in ("", "acme/a1@v1")
        ]

    assert len(whole.prompts.build(chat(LONG_PROMPT), 10).ids) > 4 * 16
    assert run(answers(chunked)) == run(answers(whole))


def test_a_long_prompt_is_prefilled_between_decode_steps_not_in_one_stall(make_engine):
    engine = make_engine(prefill_chunk_tokens=8)
    chunks = -(-len(engine.prompts.build(chat(LONG_PROMPT), 4).ids) // 8)

    async def main():
        events: list[str] = []
        running = engine.generate(chat("the grid", max_tokens=120, ignore_eos=True), "")
        await running.__anext__()

        async def stream_running():
            async for _ in running:
                events.append("running")

        async def long_one():
            async for _ in engine.generate(chat(LONG_PROMPT, max_tokens=4, ignore_eos=True), ""):
                events.append("long")

        task = asyncio.ensure_future(stream_running())
        await long_one()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return events

    events = run(main())
    # The running stream got a token at every step the long prompt spent prefilling (one slice each).
    assert events.index("long") >= chunks - 1 >= 8
