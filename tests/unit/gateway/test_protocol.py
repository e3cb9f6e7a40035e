"""Request validation: every malformed body is an InvalidRequest (HTTP 400) naming the field."""

from __future__ import annotations

import re

import pytest

from adept.errors import InvalidRequest
from services.gateway.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, parse_body

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"", None),
        (b"[1, 2]", None),
        (b'"text"', None),
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({**CHAT, "temperature": 3}, "temperature"),
        ({**CHAT, "top_p": 0}, "top_p"),
        ({**CHAT, "max_tokens": 0}, "max_tokens"),
        ({**CHAT, "n": 17}, "n"),
        ({**CHAT, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({**CHAT, "stop": [""]}, "stop"),
        ({**CHAT, "rag": {"top_k": 0}}, "rag.top_k"),
        ({**CHAT, "rag": {"k": 3}}, "rag.k"),
        ({**CHAT, "rag": "yes"}, "rag"),
        ({**CHAT, "temprature": 0.5}, "temprature"),
        ({**CHAT, "top_logprobs": 2}, None),
        ({**CHAT, "logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({**CHAT, "response_format": {"type": "json_schema"}}, "response_format"),
        ({**CHAT, "response_format": {"type": "xml"}}, "response_format.type"),
        ({"model": "m", "messages": [{"role": "tool", "content": "x"}]}, "messages.0"),
        ({"model": "m", "messages": [{"role": "user", "content": "x", "tool_calls": []}]}, "messages.0"),
        ({**CHAT, "tool_choice": "required"}, None),
        ({**CHAT, "logit_bias": {"abc": 1}}, "logit_bias"),
        ({**CHAT, "logit_bias": {"12": 101}}, "logit_bias"),
        ({**CHAT, "tools": [{"type": "function", "function": {"name": "a b"}}]}, "tools.0.function.name"),
        ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
        (
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages.0.content",
        ),
        ({"model": "m", "messages": ["hi"]}, "messages.0"),
        ({**CHAT, "max_tokens": 5, "max_completion_tokens": 6}, None),
    ],
)
def test_malformed_chat_requests_are_400(body, param):
    with pytest.raises(InvalidRequest) as e:
        parse_body(ChatCompletionRequest, body)
    assert e.value.status == 400
    assert e.value.to_openai()["error"]["type"] == "invalid_request_error"
    if param is not None:
        assert e.value.param == param


def test_valid_chat_request_normalizes_fields():
    req = parse_body(
        ChatCompletionRequest,
        b'{"model": "m", "stop": "END", "rag": true, "stream": true, "stream_options": {"include_usage": true},'
        b' "messages": [{"role": "developer", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},'
        b' {"role": "user", "content": "q"}], "max_completion_tokens": 9}',
    )
    assert req.stop_list == ["END"]
    assert req.rag_top_k is None  # true: server default
    assert req.include_usage and req.stream
    assert req.requested_max_tokens == 9
    assert req.messages[0].as_llm_message() == {"role": "system", "content": "ab"}
    assert parse_body(ChatCompletionRequest, {**CHAT, "rag": {"top_k": 4}}).rag_top_k == 4
    assert parse_body(ChatCompletionRequest, {**CHAT, "rag": False}).rag_top_k is False
    assert parse_body(ChatCompletionRequest, CHAT).rag_top_k is False


def test_completion_request_takes_one_prompt():
    assert parse_body(CompletionRequest, {"model": "m", "prompt": ["x"]}).prompt == "x"
    assert parse_body(CompletionRequest, {"model": "m", "prompt": "x"}).max_tokens == 16
    for bad in (
        {"model": "m", "prompt": ["a", "b"]},
        {"model": "m", "prompt": ""},
        {"model": "m", "prompt": "x", "echo": True, "logprobs": 1},
        {"model": "m", "prompt": "x", "suffix": "y"},
        {"model": "m", "prompt": "x", "logprobs": 6},
        {"model": "m", "prompt": "x", "logprobs": True},
    ):
        with pytest.raises(InvalidRequest):
            parse_body(CompletionRequest, bad)


def test_embedding_request():
    assert parse_body(EmbeddingRequest, {"model": "e", "input": "x"}).texts == ["x"]
    assert parse_body(
        EmbeddingRequest, {"model": "e", "input": ["a", "b"], "encoding_format": "base64"}
    ).texts == ["a", "b"]
    for bad in (
        {"model": "e", "input": []},
        {"model": "e", "input": [""]},
        {"model": "e"},
    ):
        with pytest.raises(InvalidRequest):
            parse_body(EmbeddingRequest, bad)


@pytest.mark.parametrize(
    ("tokens", "arrays"),
    [([1, 2, 3], [[1, 2, 3]]), ([[1, 2], [3]], [[1, 2], [3]]), ([[0]], [[0]])],
)
def test_token_arrays_are_accepted_as_one_or_many(tokens, arrays):
    req = parse_body(EmbeddingRequest, {"model": "e", "input": tokens})
    assert req.token_ids == arrays and req.texts == []


@pytest.mark.parametrize(
    ("tokens", "says"),
    [
        ([[1, 2], []], "input[1] is empty"),
        ([[]], "input[0] is empty"),
        ([1, -2, 3], "-2"),
        ([[1], [-1]], "-1"),
        ([1, "a"], "mix"),
        (["a", 1], "mix"),
        ([[1, 2], "a"], "mix"),
        ([[1, 2], 3], "mix"),
        ([[1, "2"]], "mix"),
        ([1, 2.0], "mix"),
        ([True, 2], "mix"),  # JSON true is not a token id
        ([[None]], "mix"),
        ({"ids": [1]}, "non-empty"),
        (7, "non-empty"),
    ],
)
def test_malformed_token_arrays_are_a_clear_400_on_input(tokens, says):
    with pytest.raises(InvalidRequest, match=re.escape(says)) as err:
        parse_body(EmbeddingRequest, {"model": "e", "input": tokens})
    assert err.value.param == "input"
