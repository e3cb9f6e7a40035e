"""Response wire models: what the logic layer builds parses as the ``openai`` package's own types.

The reference is the official client's pydantic types (``openai.types``): every response and
stream event the gateway sends must validate as the type a client would read it into, with the
same values, and fields OpenAI leaves out when absent stay out (not ``null``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging

import numpy as np
import pytest
from openai.types import Completion as OpenAICompletion
from openai.types import CreateEmbeddingResponse
from openai.types import Model as OpenAIModel
from openai.types.chat import ChatCompletion as OpenAIChatCompletion
from openai.types.chat import ChatCompletionChunk as OpenAIChatCompletionChunk

from adept.errors import AdeptError, ErrorResponse, InvalidRequest, NotFound, Unavailable
from services.gateway.embeddings import EmbeddingService
from services.gateway.protocol import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    EmbeddingRequest,
    EmbeddingResponse,
    ModelCard,
    ModelList,
    parse_body,
)
from services.llm.protocol import GenerateChunk, Usage
from tests.unit.gateway.conftest import BASE
from tests.unit.gateway.fakes import EchoLLM


def chat_req(**kw):
    return parse_body(
        ChatCompletionRequest, {"model": BASE, "messages": [{"role": "user", "content": "hi there"}], **kw}
    )


def events(svc, tenant, req, *, chat: bool = True) -> list[dict | str]:
    async def go():
        stream = await (svc.chat(tenant, req) if chat else svc.complete(tenant, req))
        out = []
        async for raw in stream:
            assert raw.startswith(b"data: ") and raw.endswith(b"\n\n")
            data = raw[6:-2].decode()
            out.append(data if data == "[DONE]" else json.loads(data))
        return out

    return asyncio.run(go())


def test_chat_completion_parses_as_the_openai_type(service, tenants):
    svc, _, _ = service
    out = asyncio.run(svc.chat(tenants["acme"][0], chat_req(rag=True)))
    assert isinstance(out, ChatCompletion)
    wire = out.model_dump_json()
    theirs = OpenAIChatCompletion.model_validate_json(wire)
    assert theirs.choices[0].message.content == out.choices[0].message.content == "base: hi there "
    assert theirs.choices[0].finish_reason == "stop" and theirs.usage.total_tokens == out.usage.total_tokens
    assert list(json.loads(wire)) == ["id", "object", "created", "model", "choices", "usage", "citations"]
    assert json.loads(wire)["choices"][0]["logprobs"] is None  # present as null, as OpenAI sends it
    plain = asyncio.run(svc.chat(tenants["acme"][0], chat_req()))
    assert "citations" not in json.loads(plain.model_dump_json())  # no RAG: the extension is absent


def test_chat_stream_events_parse_as_openai_chunks(service, tenants):
    svc, _, _ = service
    req = chat_req(stream=True, rag={"top_k": 2}, stream_options={"include_usage": True})
    stream = events(svc, tenants["acme"][0], req)
    assert stream[-1] == "[DONE]"
    chunks = [OpenAIChatCompletionChunk.model_validate(e) for e in stream[:-1]]
    first, *middle, final, usage_event = stream[:-1]
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(set(e["choices"][0]["delta"]) == {"content"} for e in middle)  # no role, no nulls
    assert final["choices"][0]["delta"] == {} and final["choices"][0]["finish_reason"] == "stop"
    assert final["citations"] == [
        {"document_id": "acme-doc0", "chunk_id": "c0", "title": "Doc 0", "score": 1.0, "quote": "Answer 0."}
    ]
    assert "usage" not in final and "citations" not in usage_event
    assert usage_event["choices"] == [] and chunks[-1].usage.total_tokens == 7 + len(middle)
    assert all("usage" not in e and "citations" not in e for e in [first, *middle])


def test_text_completion_and_its_events_parse_as_openai_completions(service, tenants):
    svc, _, _ = service
    req = parse_body(CompletionRequest, {"model": BASE, "prompt": "one two", "max_tokens": 5})
    out = asyncio.run(svc.complete(tenants["acme"][0], req))
    assert isinstance(out, Completion)
    theirs = OpenAICompletion.model_validate_json(out.model_dump_json())
    assert theirs.choices[0].text == "base: one two " and theirs.usage.completion_tokens == 3
    streamed = parse_body(
        CompletionRequest,
        {"model": BASE, "prompt": "one two", "stream": True, "stream_options": {"include_usage": True}},
    )
    stream = events(svc, tenants["acme"][0], streamed, chat=False)
    *pieces, final, usage_event, done = stream
    assert done == "[DONE]" and "".join(e["choices"][0]["text"] for e in pieces) == "base: one two "
    # OpenAI's type requires finish_reason, yet its streams send null until the last event (the
    # client builds stream events without validating): the last ones validate, the rest match them.
    last, usage = OpenAICompletion.model_validate(final), OpenAICompletion.model_validate(usage_event)
    assert last.choices[0].finish_reason == "stop" and usage.choices == [] and usage.usage.total_tokens == 10
    for e in pieces:
        assert e.keys() == final.keys() and e["choices"][0].keys() == final["choices"][0].keys()
        assert e["choices"][0]["finish_reason"] is None


class Vectors:
    async def embed(self, texts):
        return [[float(len(t)), -0.5, 1e-7] for t in texts]


def test_embedding_response_parses_as_the_openai_type():
    svc = EmbeddingService(Vectors(), "bundled:all-minilm-l6-v2")
    out = asyncio.run(svc.embed(parse_body(EmbeddingRequest, {"model": "embedding", "input": ["a b", "c"]})))
    assert isinstance(out, EmbeddingResponse)
    theirs = CreateEmbeddingResponse.model_validate_json(out.model_dump_json())
    assert [d.index for d in theirs.data] == [0, 1] and theirs.usage.prompt_tokens == 3
    assert theirs.data[0].embedding == pytest.approx([3.0, -0.5, 1e-7])
    b64 = asyncio.run(
        svc.embed(
            parse_body(EmbeddingRequest, {"model": "embedding", "input": "abc", "encoding_format": "base64"})
        )
    )
    raw = base64.b64decode(b64.data[0].embedding)  # what the openai client decodes
    assert np.frombuffer(raw, dtype="<f4").tolist() == pytest.approx([3.0, -0.5, 1e-7])


def test_model_cards_leave_out_absent_fields():
    base = ModelCard(id=BASE, created=0, owned_by="adept")
    adapter = ModelCard(id="legal", created=5, owned_by="acme", root=BASE, version="v2")
    wire = json.loads(ModelList(data=[base, adapter]).model_dump_json())
    assert wire["data"][0] == {"id": BASE, "object": "model", "created": 0, "owned_by": "adept"}
    assert wire["data"][1]["root"] == BASE and wire["data"][1]["version"] == "v2"
    assert [OpenAIModel.model_validate(d).id for d in wire["data"]] == [BASE, "legal"]


@pytest.mark.parametrize(
    "err",
    [InvalidRequest("bad", param="model"), NotFound("gone", code="model_not_found"), AdeptError("boom")],
)
def test_error_envelope_round_trips(err):
    wire = err.to_response().model_dump_json()
    assert json.loads(wire) == {
        "error": {"message": err.message, "type": err.type, "code": err.code, "param": err.param}
    }
    assert list(json.loads(wire)["error"]) == ["message", "type", "code", "param"]  # param: null, not absent
    assert ErrorResponse.model_validate_json(wire) == err.to_response()
    assert err.to_openai() == json.loads(wire)


class FailsMidStream(EchoLLM):
    """Streams one word, then the replica fails (the error must travel in the stream)."""

    async def generate(self, model_id, request):
        yield GenerateChunk(text="partial ")
        raise Unavailable("the LLM deployment failed; retry shortly")


def test_an_error_after_the_first_byte_is_an_error_event_then_done(service, tenants):
    svc, _, _ = service
    svc.llm = FailsMidStream()
    stream = events(svc, tenants["acme"][0], chat_req(stream=True))
    assert stream[-1] == "[DONE]"
    err = ErrorResponse.model_validate(stream[-2])
    assert err.error.code == "unavailable" and err.error.type == "server_error"


class CleanupFails(EchoLLM):
    """A backend whose stream cleanup raises ``exc`` when the stream is closed before its end."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__()
        self.exc = exc

    async def generate(self, model_id, request):
        try:
            yield GenerateChunk(text="one ")
            yield GenerateChunk(finish_reason="stop", usage=Usage(prompt_tokens=1, completion_tokens=1))
        finally:
            raise self.exc


def read_one_then_disconnect(svc, tenant) -> dict:
    """Read the first event of a stream, then go away (Starlette closes the stream)."""

    async def go():
        stream = await svc.chat(tenant, chat_req(stream=True))
        first = json.loads((await anext(stream))[6:])
        await stream.aclose()
        return first

    return asyncio.run(go())


def test_a_typed_cleanup_error_is_logged_and_the_run_still_accounted(service, tenants, caplog):
    svc, _, _ = service
    svc.llm = CleanupFails(Unavailable("cancel failed"))
    with caplog.at_level(logging.WARNING, logger="services.gateway.chat"):
        first = read_one_then_disconnect(svc, tenants["acme"][0])
    assert first["choices"][0]["delta"]["role"] == "assistant"
    assert any("cancel failed" in r.getMessage() for r in caplog.records)
    assert 'adept_generations_total{adapter="base",tenant="acme"} 1.0' in svc.metrics.render().decode()


def test_an_untyped_cleanup_error_is_not_swallowed(service, tenants):
    svc, _, _ = service
    svc.llm = CleanupFails(RuntimeError("bug in the backend"))
    with pytest.raises(RuntimeError, match="bug in the backend"):
        read_one_then_disconnect(svc, tenants["acme"][0])
    assert 'adept_generations_total{adapter="base",tenant="acme"} 1.0' in svc.metrics.render().decode()
