"""The vLLM engine behind the replica's contract, against a faithful fake of vLLM 0.29.0 (``fake_vllm.py``).

vLLM cannot run on these CPU machines, so its ``AsyncLLM`` is replaced by a fake whose names,
signatures and defaults are checked here against a record of the real 0.29.0 source
(``vllm_0_29_0_api.json``); the fake computes tokens with the real tiny Phi-3 and peft. The
``gpu`` tier at the end checks the record against the vllm actually installed.
"""

from __future__ import annotations

import ast
import asyncio
import json
from pathlib import Path

import pytest

from adept.adapter_compat import ServingLimits, check_adapter_compatible, serving_limits
from adept.config.llm import LLMConfig
from adept.config.platform import PlatformConfig
from adept.errors import ConfigError, InvalidRequest, NotFound, Unavailable
from services.llm.protocol import GenerateRequest
from tests.unit.llm import fake_vllm
from tests.unit.llm.conftest import chat, collect, run
from tests.unit.llm.vllm_api import WANTED, describe_class, record

HERE = Path(__file__).parent
RECORD = json.loads((HERE / "vllm_0_29_0_api.json").read_text())
# How vLLM spells a default the fake cannot (msgspec is not installed here) -> what the fake writes.
SAME_DEFAULT = {"msgspec.field(default=None)": "None"}
# Fields whose defaults come from vLLM's config classes: the fake checks their names only.
NAMES_ONLY = {"engine/arg_utils.py::EngineArgs"}


def test_the_fake_has_vllm_0_29_0s_signatures_and_defaults():
    fake_tree = ast.parse(Path(fake_vllm.__file__).read_text())
    for rel, cls, members in WANTED:
        key = f"{rel}::{cls}"
        real, fake = RECORD[key], describe_class(fake_tree, cls, members)
        if key in NAMES_ONLY:
            assert sorted(fake["members"]) == sorted(real["members"]), key
            continue
        for member, spec in real["members"].items():
            mine = fake["members"][member]
            if "field" in spec:
                assert mine["field"] == SAME_DEFAULT.get(spec["field"], spec["field"]), f"{key}.{member}"
            else:
                assert mine == spec, f"{key}.{member}: the fake's signature drifted from vLLM 0.29.0"
        if not real["members"]:  # exception classes: the hierarchy the engine classifies by
            assert fake["bases"] == real["bases"], key


@pytest.mark.gpu
def test_the_record_matches_the_installed_vllm():
    import vllm

    assert vllm.__version__ == "0.29.0"
    assert record(Path(vllm.__file__).parent) == RECORD


@pytest.fixture
def vllm_fake(monkeypatch):
    return fake_vllm.install(monkeypatch)


@pytest.fixture
def make_vllm_engine(vllm_fake, tiny_phi3):
    from services.llm.vllm_engine import VLLMEngine

    def build(**kwargs):
        kwargs.setdefault("max_tokens_limit", 64)
        return VLLMEngine.from_pretrained(tiny_phi3, dtype="float32", max_batch_size=4, **kwargs)

    return build


def test_same_answers_as_the_hf_engine_for_base_and_adapters(make_vllm_engine, make_engine, lora_dirs):
    vllm_engine, hf_engine = make_vllm_engine(), make_engine()
    jobs = [("", "check the breaker"), ("acme/a1@v1", "who does repair"), ("acme/a2@v1", "the grid")]

    async def answers(engine):
        for adapter in ("a1", "a2"):
            await engine.load_adapter(f"acme/{adapter}@v1", lora_dirs[adapter])
        return [await collect(engine, chat(q, max_tokens=10, ignore_eos=True), a) for a, q in jobs]

    ours, reference = run(answers(vllm_engine)), run(answers(hf_engine))
    for (text, last, n), (ref_text, ref_last, _) in zip(ours, reference, strict=True):
        assert text == ref_text and last.usage == ref_last.usage and last.finish_reason == "length"
        assert n >= 2  # streamed, not one blob
    assert len({t for t, _, _ in ours}) == 3


def test_stop_strings_and_passages_keep_the_contract(make_vllm_engine):
    engine = make_vllm_engine(max_model_len=200)
    full, _, _ = run(collect(engine, chat("what is the tariff", max_tokens=20, ignore_eos=True)))
    stop = full[4:7]
    text, last, _ = run(
        collect(engine, chat("what is the tariff", max_tokens=20, stop=[stop], ignore_eos=True))
    )
    assert text == full[: full.find(stop)] and last.finish_reason == "stop"
    req = chat("what does OC-7 mean", max_tokens=8, passages=["OC-7 is a blown fuse.", "voltage " * 400])
    _, last, _ = run(collect(engine, req))
    assert last.passages_used == [0] and last.usage.prompt_tokens == len(engine.prompts.build(req, 8).ids)


def test_adapters_get_never_reused_ids_and_unloading_waits_for_requests(make_vllm_engine, lora_dirs):
    engine = make_vllm_engine()
    llm = engine.llm

    async def main():
        await engine.load_adapter("acme/a1@v1", lora_dirs["a1"])
        first_id = engine._loras["acme/a1@v1"].request.lora_int_id
        gen = engine.generate(chat("who does repair", max_tokens=12, ignore_eos=True), "acme/a1@v1")
        await gen.__anext__()
        assert await engine.unload_adapter("acme/a1@v1")
        assert llm.calls.removed == [] and engine.loaded_adapters == []  # in use: still in vLLM
        with pytest.raises(NotFound):
            await collect(engine, chat("hi"), "acme/a1@v1")
        rest = [c async for c in gen]
        assert rest[-1].finish_reason == "length"
        assert llm.calls.removed == [first_id]  # dropped once its last request ended
        await engine.load_adapter("acme/a1@v1", lora_dirs["a1"])
        return first_id, engine._loras["acme/a1@v1"].request.lora_int_id

    first, second = run(main())
    assert first >= 1 and second > first  # a reloaded adapter never gets an old id back


def test_adapters_vllm_cannot_serve_are_refused_before_loading(make_vllm_engine, lora_dirs, tmp_path):
    import shutil

    engine = make_vllm_engine(max_lora_rank=8)
    dora = tmp_path / "dora"
    shutil.copytree(lora_dirs["a1"], dora)
    config = json.loads((dora / "adapter_config.json").read_text())
    (dora / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True, "r": 16}))
    with pytest.raises(InvalidRequest, match="DoRA") as err:
        run(engine.load_adapter("acme/dora@v1", dora))
    assert err.value.code == "adapter_incompatible" and "max_lora_rank 8" in err.value.message
    assert engine.llm.calls.added == []


def test_publish_time_check_is_a_pure_kernel_function():
    lora = {"peft_type": "LORA", "r": 16, "bias": "none", "use_dora": False, "modules_to_save": None}
    limits = serving_limits(PlatformConfig(max_lora_rank=16))
    assert limits == ServingLimits(max_lora_rank=16)
    assert check_adapter_compatible(lora, limits) == []
    assert check_adapter_compatible({**lora, "use_dora": True, "r": 128}, None) == []  # peft alone serves it
    problems = check_adapter_compatible(
        {**lora, "use_dora": True, "r": 32, "bias": "all", "modules_to_save": ["lm_head"]}, limits
    )
    assert len(problems) == 4
    assert check_adapter_compatible({**lora, "rank_pattern": {"q_proj": 64}}, limits)
    assert check_adapter_compatible({"peft_type": "IA3", "r": 8}, None)
    with pytest.raises(ValueError, match="max_lora_rank"):
        PlatformConfig(max_lora_rank=48)


def test_the_replicas_fair_queue_decides_what_enters_vllm(make_vllm_engine):
    """vLLM's FIFO cannot undo fair share: never more requests in vLLM than it runs, least-served first."""
    engine = make_vllm_engine(max_tokens_limit=64)  # max_batch_size=4
    llm = engine.llm

    async def main():
        order: list[str] = []

        async def one(tenant: str, i: int, tokens: int):
            req = chat(
                "the grid", max_tokens=tokens, tenant=tenant, ignore_eos=True, request_id=f"{tenant}{i}"
            )
            async for _ in engine.generate(req, ""):
                if f"{tenant}{i}" not in order:
                    order.append(f"{tenant}{i}")

        async def until(condition) -> None:
            for _ in range(10_000):
                if condition():
                    return
                await asyncio.sleep(0.001)
            raise AssertionError("the engine never reached the state the test waits for")

        # Hold the fake's forward lock: no token is computed until b waits beside a's backlog, so the
        # order is decided by the fair queue alone, not by how fast this machine runs the first four.
        await llm._lock.acquire()
        flood = [asyncio.ensure_future(one("a", i, 12)) for i in range(8)]
        await until(lambda: llm.calls.running == 4 and engine.waiting_requests == 4)
        lone = asyncio.ensure_future(one("b", 0, 2))
        await until(lambda: engine.waiting_requests == 5)
        llm._lock.release()
        await asyncio.gather(*flood, lone)
        return order

    order = run(main())
    assert llm.calls.max_running <= 4
    assert order.index("b0") <= 4  # in at the first free place, not behind a's backlog of 4
    assert engine.waiting_requests == 0 and not engine._running
    salts = {p["cache_salt"] for p in llm.calls.prompts}
    assert len(salts) == 2  # one prefix-cache salt per tenant: a's and b's equal prompts share no blocks
    assert llm.calls.params[0].detokenize is False


def _ticket(engine, tenant: str, lora=None):
    from services.llm.vllm_engine import _Ticket

    return _Ticket(tenant, 10, lora, asyncio.get_event_loop_policy().new_event_loop().create_future())


def test_lora_slots_are_shared_fairly(make_vllm_engine):
    """vLLM holds max_loras adapters per batch: a tenant with many adapters cannot take every slot."""
    from services.llm.vllm_engine import _Lora

    engine = make_vllm_engine(max_tokens_limit=64)
    engine.max_loras = 2
    a1, a2, a3, b1 = (_Lora(request=object()) for _ in range(4))
    engine.waiting.charge("a", output_tokens=0)
    first = [_ticket(engine, "a", a1), _ticket(engine, "a", a2), _ticket(engine, "a", a3)]
    for t in first:
        engine.waiting.push(t)
    engine.waiting.push(late := _ticket(engine, "b", b1))
    engine.waiting.charge("b", output_tokens=100)  # b was served more: a goes first by counter
    engine._dispatch()
    held = {id(t.lora) for t in engine._running}
    assert held == {id(a1), id(b1)}  # a's share is one slot of two while b wants one
    assert late in engine._running and len(engine.waiting) == 2


def test_vllm_errors_keep_their_status(make_vllm_engine):
    from http import HTTPStatus

    from adept.errors import Overloaded, RateLimited

    engine = make_vllm_engine()
    cases = [
        (fake_vllm.GracefulHTTPError("slow down", HTTPStatus.TOO_MANY_REQUESTS), RateLimited, 429),
        (fake_vllm.QueueOverflowError("full", HTTPStatus.SERVICE_UNAVAILABLE), Overloaded, 503),
        (fake_vllm.VLLMValidationError("prompt too long"), InvalidRequest, 400),
    ]
    for error, kind, status in cases:
        engine.llm.fail_next = error
        with pytest.raises(kind) as got:
            run(collect(engine, chat("the grid")))
        assert got.value.status == status
    assert engine.waiting_requests == 0 and not engine._running  # nothing held after the errors


def test_logit_bias_outside_the_vocabulary_is_a_400_before_vllm_sees_it(make_vllm_engine):
    """As on the HF engine (vLLM itself would raise a bare ValueError: a 500 here)."""
    engine = make_vllm_engine()
    vocab = engine.llm.model_config.get_vocab_size()
    with pytest.raises(InvalidRequest) as got:
        run(collect(engine, chat("the grid", logit_bias={vocab: 5.0})))
    assert got.value.param == "logit_bias" and not engine.llm.calls.params
    run(collect(engine, chat("the grid", max_tokens=2, logit_bias={vocab - 1: -100.0})))
    assert engine.llm.calls.params[-1].logit_bias == {vocab - 1: -100.0}


def test_engine_death_and_disconnects(make_vllm_engine):
    engine = make_vllm_engine()

    async def main():
        gen = engine.generate(chat("restore power", max_tokens=30, request_id="gone"), "")
        await gen.__anext__()
        await gen.aclose()  # the HTTP client went away
        aborted = list(engine.llm.calls.aborted)
        engine.check_health()
        live = engine.generate(chat("restore power", max_tokens=30), "")
        await live.__anext__()
        engine.llm.kill()
        with pytest.raises(Unavailable):
            async for _ in live:
                pass
        with pytest.raises(Unavailable):
            await collect(engine, chat("hi"))
        return aborted

    assert run(main()) == ["gone"]
    with pytest.raises(RuntimeError, match="vLLM engine died"):
        engine.check_health()


def test_engine_choice(tiny_phi3, tmp_path):
    from adept.config.platform import PlatformConfig
    from services.llm.engine import Engine
    from services.llm.factory import build_engine, choose_engine
    from services.llm.vllm_engine import vllm_available

    assert choose_engine("hf") == "hf" and choose_engine("vllm") == "vllm"
    assert choose_engine("auto") == ("vllm" if vllm_available() else "hf")
    platform = PlatformConfig(data_dir=tmp_path, model=str(tiny_phi3), device="cpu", dtype="float32")
    engine = build_engine(platform, LLMConfig(engine="hf", max_tokens_limit=64, default_max_tokens=8))
    assert isinstance(engine, Engine)
    engine._exec.shutdown(wait=True)
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        build_engine(platform, LLMConfig(engine="vllm"))


def test_both_engines_return_the_same_text_with_leading_spaces_on_sentencepiece(
    vllm_fake, tiny_phi3_sentencepiece
):
    """One detokenizer for both engines, primed with the prompt: ``"... is" + " Paris"``, never ``"isParis"``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from services.llm.engine import Engine
    from services.llm.vllm_engine import VLLMEngine

    path = tiny_phi3_sentencepiece
    tokenizer = AutoTokenizer.from_pretrained(path)
    hf = Engine(AutoModelForCausalLM.from_pretrained(path), tokenizer, batch_wait_ms=0, max_tokens_limit=64)
    vllm = VLLMEngine.from_pretrained(path, dtype="float32", max_batch_size=4, max_tokens_limit=64)
    req = GenerateRequest(prompt="what is the grid", max_tokens=12, temperature=0.0, ignore_eos=True)
    prompt_ids = hf.prompts.build(req, 12).ids

    async def generated_ids(engine):
        # The tokens the model chose (both engines are greedy on the same weights).
        text, last, _ = await collect(engine, req)
        return text, last

    (hf_text, hf_last), (v_text, v_last) = run(generated_ids(hf)), run(generated_ids(vllm))
    hf._exec.shutdown(wait=True)
    assert hf_text == v_text and hf_last.usage == v_last.usage
    # The answer continues the prompt's text exactly, spaces included.
    ids = prompt_ids + vllm.llm.calls.outputs[-1]
    assert tokenizer.decode(prompt_ids) + hf_text == tokenizer.decode(ids, skip_special_tokens=True)


def test_both_engines_report_the_same_logprobs_with_token_texts_that_add_up(
    vllm_fake, tiny_phi3_sentencepiece
):
    """A raw-prompt request (``/v1/completions``) with logprobs: same tokens, texts and values on both engines;
    the texts add up to the generated text (test_streaming: each keeps its SentencePiece space)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from services.llm.engine import Engine
    from services.llm.vllm_engine import VLLMEngine

    path = tiny_phi3_sentencepiece
    tokenizer = AutoTokenizer.from_pretrained(path)
    hf = Engine(AutoModelForCausalLM.from_pretrained(path), tokenizer, batch_wait_ms=0, max_tokens_limit=64)
    vllm = VLLMEngine.from_pretrained(path, dtype="float32", max_batch_size=4, max_tokens_limit=64)
    req = GenerateRequest(
        prompt="what is the grid", max_tokens=8, temperature=0.0, ignore_eos=True, logprobs=2
    )

    async def entries(engine):
        chunks = [c async for c in engine.generate(req, "")]
        return "".join(c.text for c in chunks), [e for c in chunks for e in c.logprobs or []]

    (hf_text, hf_lp), (v_text, v_lp) = run(entries(hf)), run(entries(vllm))
    hf._exec.shutdown(wait=True)
    assert hf_text == v_text and len(hf_lp) == len(v_lp) == 8
    assert [e.token for e in hf_lp] == [e.token for e in v_lp]
    assert [[t.token for t in e.top] for e in hf_lp] == [[t.token for t in e.top] for e in v_lp]
    assert [e.logprob for e in hf_lp] == pytest.approx([e.logprob for e in v_lp], abs=1e-4)
    if "\ufffd" not in "".join(e.token for e in hf_lp):  # a lone byte token has no text of its own
        assert "".join(e.token for e in hf_lp) == hf_text


def test_structured_output_goes_to_vllms_structured_outputs(make_vllm_engine):
    from services.llm.protocol import Guided

    engine = make_vllm_engine()
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    run(collect(engine, chat("report", max_tokens=4, guided=Guided(json_schema=schema))))
    run(collect(engine, chat("report", max_tokens=4, guided=Guided(json_object=True))))
    run(collect(engine, chat("report", max_tokens=4)))
    by_schema, by_object, free = (p.structured_outputs for p in engine.llm.calls.params)
    assert by_schema.json == schema and by_schema.json_object is None
    assert by_object.json is None and by_object.json_object is True
    assert free is None
    tools = [{"type": "function", "function": {"name": "f"}}]
    with pytest.raises(InvalidRequest, match="tool-call format"):
        run(collect(engine, chat("report", tools=tools, tool_choice="auto")))


def test_extractive_answers_go_to_vllm_as_a_grammar(make_vllm_engine, lora_dirs):
    """`auto` is off on vLLM (GPU-sized models); set on, a base-model RAG answer carries the grammar of
    its shown passage, an adapter's answer the same with its free tail."""
    from services.llm.extractive import extractive_grammar

    engine = make_vllm_engine(rag_extractive=True, rag_max_passages=1)
    passages = ["OC-7 means a blown fuse.", "Tariff B is 12 cents."]

    async def main():
        await engine.load_adapter("acme/a1@v1", lora_dirs["a1"])
        await collect(engine, chat("what is OC-7", max_tokens=4, passages=passages))
        await collect(engine, chat("what is OC-7", max_tokens=4, passages=passages), "acme/a1@v1")
        await collect(engine, chat("what is OC-7", max_tokens=4))

    run(main())
    base, adapter, free = (p.structured_outputs for p in engine.llm.calls.params)
    assert base.grammar == extractive_grammar([passages[0]]) and base.json is None
    assert adapter.grammar == extractive_grammar([passages[0]], tail=True) and free is None
    auto = make_vllm_engine()
    run(collect(auto, chat("what is OC-7", max_tokens=4, passages=passages)))
    assert auto.llm.calls.params[0].structured_outputs is None
