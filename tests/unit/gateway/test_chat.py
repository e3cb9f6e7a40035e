"""The completion logic layer without HTTP: model resolution, isolation, RAG, streaming, usage."""

from __future__ import annotations

import asyncio
import json

import pytest

from adept.errors import InvalidRequest, NotFound, RateLimited
from services.gateway.chat import build_citations, by_best_sentence
from services.gateway.protocol import ChatCompletionRequest, CompletionRequest, parse_body
from services.retrieval.protocol import SearchHit
from tests.unit.gateway.conftest import BASE


def chat_req(**kw):
    body = {"model": BASE, "messages": [{"role": "user", "content": "hello there"}], **kw}
    return parse_body(ChatCompletionRequest, body)


def run(coro):
    return asyncio.run(coro)


async def collect(stream) -> list[dict | str]:
    events = []
    async for raw in stream:
        assert raw.startswith(b"data: ") and raw.endswith(b"\n\n")
        data = raw[6:-2].decode()
        events.append(data if data == "[DONE]" else json.loads(data))
    return events


def test_base_model_chat(service, tenants):
    svc, llm, _ = service
    out = run(svc.chat(tenants["acme"][0], chat_req()))
    assert out.object == "chat.completion"
    assert out.model == BASE
    assert out.choices[0].message.model_dump() == {"role": "assistant", "content": "base: hello there "}
    assert out.usage.model_dump() == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    assert "citations" not in out.model_dump()
    assert llm.calls[0][0] == ""  # base model: empty multiplexed id
    assert llm.calls[0][1].max_tokens is None  # the replica gives what the context has left


@pytest.mark.parametrize("model", ["legal", "legal@v2", "acme/legal", "acme/legal@v2"])
def test_own_adapter_resolves_to_latest_or_named_version(service, tenants, model):
    svc, llm, _ = service
    out = run(svc.chat(tenants["acme"][0], chat_req(model=model)))
    assert llm.calls[-1][0] == "acme/legal@v2"
    assert out.model == "legal@v2"


def test_pinned_version(service, tenants):
    svc, llm, _ = service
    run(svc.chat(tenants["acme"][0], chat_req(model="legal@v1")))
    assert llm.calls[-1][0] == "acme/legal@v1"


@pytest.mark.parametrize(
    "model", ["secret", "globex/secret", "globex/secret@v1", "nope", "legal@v9", "Bad Name", "a/b/c"]
)
def test_unknown_or_foreign_models_are_the_same_404(service, tenants, model):
    svc, llm, _ = service
    with pytest.raises(NotFound) as e:
        run(svc.chat(tenants["acme"][0], chat_req(model=model)))
    assert e.value.status == 404 and e.value.code == "model_not_found"
    assert e.value.message == f"The model '{model}' does not exist or you do not have access to it."
    assert "globex" not in e.value.message.replace(model, "")
    assert llm.calls == []


def test_models_list_shows_only_own_adapters(service, tenants):
    svc, _, _ = service
    acme = [m.id for m in svc.catalog.list("acme").data]
    globex = [m.id for m in svc.catalog.list("globex").data]
    assert acme == [BASE, "legal"]
    assert globex == [BASE, "secret"]
    assert svc.catalog.list("acme").data[1].version == "v2"


def test_max_tokens_over_limit_is_400(service, tenants):
    svc, _, _ = service
    with pytest.raises(InvalidRequest) as e:
        run(svc.chat(tenants["acme"][0], chat_req(max_tokens=65)))
    assert e.value.param == "max_tokens"
    run(svc.chat(tenants["acme"][0], chat_req(max_tokens=64)))


def test_rag_searches_the_callers_kb_and_cites_used_passages(service, tenants):
    svc, llm, kb = service
    out = run(svc.chat(tenants["acme"][0], chat_req(rag={"top_k": 2})))
    assert kb.queries == [("acme", "hello there", 2)]
    sent = llm.calls[0][1]
    assert sent.passages == ["Intro 0. Answer 0.\n(Source: Doc 0)", "Intro 1. Answer 1.\n(Source: Doc 1)"]
    # Each passage also as its best one and two sentences (in document order), for small models.
    assert sent.passage_excerpts[0] == ["Answer 0.\n(Source: Doc 0)", "Intro 0. Answer 0.\n(Source: Doc 0)"]
    # The fake LLM reports it used passage 0 only; the citation quotes its best sentence.
    assert out.model_dump()["citations"] == [
        {"document_id": "acme-doc0", "chunk_id": "c0", "title": "Doc 0", "score": 1.0, "quote": "Answer 0."}
    ]
    run(svc.chat(tenants["acme"][0], chat_req(rag=True)))
    assert kb.queries[-1][2] == 3  # default top_k
    with pytest.raises(InvalidRequest):
        run(svc.chat(tenants["acme"][0], chat_req(rag={"top_k": 11})))


def test_build_citations_ignores_bad_indices():
    hits = [SearchHit(document_id="d", chunk_id="c", title="t", text="x", score=0.5)]
    assert [c.model_dump() for c in build_citations(hits, None)] == [
        {"document_id": "d", "chunk_id": "c", "title": "t", "score": 0.5}
    ]
    assert build_citations(hits, [3, -1]) == []


def test_streaming_chat_assembles_openai_chunks(service, tenants):
    svc, _, _ = service
    stream = run_stream(svc, tenants, chat_req(stream=True, rag=True, stream_options={"include_usage": True}))
    assert stream[-1] == "[DONE]"
    first, *middle, final, usage_chunk, _ = stream
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"]["content"] for c in middle) == "base: hello there "
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == first["id"] for c in stream[:-1])
    assert final["choices"][0]["finish_reason"] == "stop"
    assert final["citations"][0]["document_id"] == "acme-doc0"
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["total_tokens"] == 10


def run_stream(svc, tenants, req):
    async def go():
        return await collect(await svc.chat(tenants["acme"][0], req))

    return asyncio.run(go())


def test_streaming_errors_before_first_byte_raise(service, tenants):
    svc, llm, _ = service
    llm.fail_with = InvalidRequest("prompt is too long")
    with pytest.raises(InvalidRequest):
        run(svc.chat(tenants["acme"][0], chat_req(stream=True)))


def test_text_completion_and_length_finish(service, tenants):
    svc, llm, _ = service
    req = parse_body(CompletionRequest, {"model": "legal", "prompt": "one two three four", "max_tokens": 2})
    out = run(svc.complete(tenants["acme"][0], req))
    assert out.object == "text_completion"
    assert out.choices[0].text == "acme/legal@v2: one "
    assert out.choices[0].finish_reason == "length"
    assert llm.calls[0][1].prompt == "one two three four" and llm.calls[0][1].messages is None


def test_usage_is_charged_to_the_token_quota(service, tenants, store):
    from adept.config.tenant import TenantQuotas, TenantSpec

    svc, _, _ = service
    tenant = store.update(TenantSpec(name="acme", quotas=TenantQuotas(tokens_per_minute=15)))
    run(svc.quotas.admit(tenant))
    run(svc.chat(tenant, chat_req()))  # 10 tokens
    run(svc.quotas.admit(tenant))
    run(svc.chat(tenant, chat_req()))  # 20 tokens
    with pytest.raises(RateLimited):
        run(svc.quotas.admit(tenant))


def test_metrics_have_labels_but_no_prompt_text(service, tenants):
    svc, _, _ = service
    run(svc.chat(tenants["acme"][0], chat_req(model="legal")))
    text = svc.metrics.render().decode()
    assert 'adept_generations_total{adapter="legal@v2",tenant="acme"} 1.0' in text
    assert "hello" not in text
    assert tenants["acme"][1] not in text


def test_replica_snapshots_become_adapter_metrics():
    from services.gateway.metrics import GatewayMetrics

    m = GatewayMetrics()
    m.observe_replicas({"r1": ["acme/a@v1"], "r2": ["acme/a@v1", "globex/b@v2"]})
    m.observe_replicas({"r1": ["globex/b@v2"], "r2": ["acme/a@v1", "globex/b@v2"]})
    text = m.render().decode()
    assert 'adept_llm_adapters_loaded{adapter="b@v2",tenant="globex"} 2.0' in text
    assert 'adept_llm_adapters_loaded{adapter="a@v1",tenant="acme"} 1.0' in text
    assert 'adept_adapter_loads_total{adapter="b@v2",tenant="globex"} 1.0' in text
    assert 'adept_adapter_evictions_total{adapter="a@v1",tenant="acme"} 1.0' in text


def test_n_choices_indexed_with_usage_summed_and_limited(service, tenants):
    svc, llm, _ = service
    out = run(svc.chat(tenants["acme"][0], chat_req(n=3, seed=7)))
    assert [c.index for c in out.choices] == [0, 1, 2]
    assert all(c.message.content == "base: hello there " for c in out.choices)
    assert out.usage.completion_tokens == 9 and out.usage.prompt_tokens == 7
    assert [r.seed for _, r in llm.calls] == [7, 8, 9]  # seeded choices still differ
    stream = run_stream(svc, tenants, chat_req(n=2, stream=True, stream_options={"include_usage": True}))
    assert stream.count("[DONE]") == 1 and stream[-1] == "[DONE]"
    events = [e for e in stream[:-1] if e["choices"]]
    assert {e["choices"][0]["index"] for e in events} == {0, 1} and len({e["id"] for e in events}) == 1
    finals = [e for e in events if e["choices"][0]["finish_reason"]]
    assert len(finals) == 2 and stream[-2]["usage"]["completion_tokens"] == 6
    with pytest.raises(InvalidRequest) as err:
        run(svc.chat(tenants["acme"][0], chat_req(n=5)))
    assert err.value.param == "n"


def test_logprobs_reach_the_response_and_the_stream(service, tenants):
    svc, llm, _ = service
    out = run(svc.chat(tenants["acme"][0], chat_req(logprobs=True, top_logprobs=1)))
    content = out.choices[0].logprobs.content
    assert [t.token for t in content] == ["base: ", "hello ", "there "]
    assert content[0].bytes == list(b"base: ") and content[0].top_logprobs[0].logprob == -0.5
    assert llm.calls[-1][1].logprobs == 1
    plain = run(svc.chat(tenants["acme"][0], chat_req()))
    assert plain.choices[0].logprobs is None and llm.calls[-1][1].logprobs is None
    stream = run_stream(svc, tenants, chat_req(stream=True, logprobs=True))
    tokens = [
        t["token"]
        for e in stream[:-1]
        for c in e["choices"]
        if c["logprobs"]
        for t in c["logprobs"]["content"]
    ]
    assert tokens == ["base: ", "hello ", "there "]


def test_citations_are_the_passages_the_answer_cites_by_number():
    hits = [
        SearchHit(document_id=f"d{i}", chunk_id=f"c{i}", title="t", text="x", score=0.5) for i in range(4)
    ]
    # Passages 0, 2 and 3 went into the prompt as [1], [2], [3]; the answer cites [3] then [1].
    cited = build_citations(hits, [0, 2, 3], "0.80 m [3], see also [1] and [9].")
    assert [c.document_id for c in cited] == ["d3", "d0"]
    # An answer citing nothing gets every passage it was shown.
    assert [c.document_id for c in build_citations(hits, [0, 2], "0.80 m")] == ["d0", "d2"]


def test_rag_decodes_greedily_unless_the_request_sets_a_temperature(service, tenants):
    svc, llm, _ = service
    run(svc.chat(tenants["acme"][0], chat_req(rag=True)))
    run(svc.chat(tenants["acme"][0], chat_req(rag=True, temperature=0.7)))
    run(svc.chat(tenants["acme"][0], chat_req()))
    assert [c[1].temperature for c in llm.calls] == [0.0, 0.7, 1.0]


def test_the_passage_holding_the_best_sentence_goes_first():
    from services.retrieval.protocol import Highlight

    def hit(i: int, best: float | None) -> SearchHit:
        marks = [] if best is None else [Highlight(text="s.", start=0, end=2, score=best)]
        return SearchHit(
            document_id=f"d{i}", chunk_id=f"c{i}", title="t", text="s.", score=1 - i / 10, highlights=marks
        )

    ranked = by_best_sentence([hit(0, 0.7), hit(1, 1.1), hit(2, 0.7), hit(3, 0.9)])
    assert [h.chunk_id for h in ranked] == ["c1", "c3", "c0", "c2"]  # ties keep the retrieval order
    plain = [hit(0, None), hit(1, None)]
    assert by_best_sentence(plain) == plain and by_best_sentence([]) == []
    assert [h.chunk_id for h in by_best_sentence([hit(0, 0.1), hit(1, None)])] == ["c0", "c1"]
