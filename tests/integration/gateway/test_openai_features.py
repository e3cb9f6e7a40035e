"""The official ``openai`` client's structured output and a tool-call round trip, against the bundled model.

One embedded platform (local Ray + Serve) serving the bundled SmolLM2-135M-Instruct: its output is
constrained by the replica's grammar, so ``chat.completions.parse`` gets an instance of the
pydantic model, and a required / named tool call always parses into ``tool_calls``.
"""

from __future__ import annotations

import json
from typing import Literal

import httpx
import openai
import pytest
from pydantic import BaseModel, Field

pytestmark = pytest.mark.integration


class Outage(BaseModel):
    area: str = Field(max_length=40)
    severity: Literal["low", "high"]
    customers: int


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_outage",
            "description": "Look up the current power outage in an area.",
            "parameters": {
                "type": "object",
                "properties": {"area": {"type": "string", "maxLength": 40}},
                "required": ["area"],
                "additionalProperties": False,
            },
        },
    }
]
QUESTION = [{"role": "user", "content": "Is there a power outage in Springfield?"}]


@pytest.fixture(scope="module")
def client(bundled_platform):
    """The bundled model's platform (shared with finetuning/test_openai_finetune: tests/shared_platforms.py),
    as a tenant of its own."""
    from tests.shared_platforms import BUNDLED_ADMIN_KEY

    platform = bundled_platform()
    with httpx.Client(
        base_url=platform.url, headers={"Authorization": f"Bearer {BUNDLED_ADMIN_KEY}"}, timeout=120
    ) as admin:
        r = admin.post("/admin/tenants", json={"name": "structured"})
        assert r.status_code == 201, r.text
    oai = openai.OpenAI(
        base_url=f"{platform.url}/v1", api_key=r.json()["api_key"], max_retries=0, timeout=300
    )
    model = oai.models.list().data[0].id
    return oai, model


def test_parse_returns_an_instance_of_the_pydantic_model(client):
    oai, model = client
    completion = oai.chat.completions.parse(
        model=model,
        messages=[
            {"role": "user", "content": "Describe the outage in Springfield: 120 customers, high severity."}
        ],
        response_format=Outage,
        temperature=0,
        max_tokens=100,
    )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Outage) and completion.choices[0].finish_reason == "stop"


def test_json_object_answers_parse(client):
    oai, model = client
    r = oai.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Give the outage as JSON with keys area and customers."}],
        response_format={"type": "json_object"},
        temperature=0,
        max_tokens=100,
    )
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_tool_call_round_trip(client):
    oai, model = client
    first = oai.chat.completions.create(
        model=model, messages=QUESTION, tools=TOOLS, tool_choice="required", temperature=0, max_tokens=60
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_outage" and isinstance(json.loads(call.function.arguments)["area"], str)
    turn = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": call.id, "type": "function", "function": call.function.model_dump()}],
    }
    result = {
        "role": "tool",
        "tool_call_id": call.id,
        "content": json.dumps({"outage": True, "customers": 120}),
    }
    second = oai.chat.completions.create(
        model=model,
        messages=[*QUESTION, turn, result],
        tools=TOOLS,
        tool_choice="none",
        temperature=0,
        max_tokens=30,
    )
    assert second.choices[0].message.content and not second.choices[0].message.tool_calls


def test_named_tool_call_streams(client):
    oai, model = client
    stream = oai.chat.completions.create(
        model=model,
        messages=QUESTION,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_outage"}},
        temperature=0,
        max_tokens=60,
        stream=True,
    )
    calls, finish = [], None
    for chunk in stream:
        for c in chunk.choices:
            calls.extend(c.delta.tool_calls or [])
            finish = c.finish_reason or finish
    assert finish == "tool_calls" and calls[0].function.name == "get_outage"
    assert "area" in json.loads(calls[0].function.arguments)


def test_auto_on_a_template_without_tool_calls_is_a_clear_400(client):
    oai, model = client
    with pytest.raises(openai.BadRequestError, match="tool-call format"):
        oai.chat.completions.create(model=model, messages=QUESTION, tools=TOOLS, max_tokens=10)


def test_logprobs_and_n_with_the_official_client(client):
    oai, model = client
    r = oai.chat.completions.create(
        model=model,
        messages=QUESTION,
        max_tokens=8,
        temperature=0.8,
        seed=3,
        n=2,
        logprobs=True,
        top_logprobs=2,
    )
    assert [c.index for c in r.choices] == [0, 1]
    for c in r.choices:
        tokens = c.logprobs.content
        assert tokens and all(t.logprob <= 0 and len(t.top_logprobs) == 2 for t in tokens)
        assert "".join(t.token for t in tokens) == c.message.content
    assert r.usage.completion_tokens == sum(len(c.logprobs.content) for c in r.choices)


def test_without_max_tokens_the_answer_is_not_cut_at_a_fixed_length(client):
    oai, model = client
    r = oai.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Say hello."}], temperature=0
    )
    assert r.choices[0].finish_reason == "stop"  # ends on its own, well inside the context window
