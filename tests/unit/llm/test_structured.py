"""Grammar-constrained decoding on the HF engine: JSON that always parses, per row, with adapters."""

from __future__ import annotations

import asyncio
import json

import pytest

from adept.errors import InvalidRequest
from services.llm.protocol import Guided
from tests.unit.llm.conftest import chat, collect, run

SCHEMA = {
    "type": "object",
    "properties": {
        "ok": {"type": "boolean"},
        "level": {"enum": ["low", "high"]},
        "count": {"type": "integer"},
    },
    "required": ["ok", "level", "count"],
    "additionalProperties": False,
}


def test_json_schema_output_always_parses_in_a_mixed_batch_of_adapters(make_engine, lora_dirs):
    engine = make_engine()
    prompts = ["check the breaker", "who does repair", "the grid"]

    async def main():
        await engine.load_adapter("acme/a1@v1", lora_dirs["a1"])
        await engine.load_adapter("beta/a2@v1", lora_dirs["a2"])
        free_solo = [
            await collect(engine, chat(p, max_tokens=12), a)
            for p, a in zip(prompts, ["", "acme/a1@v1", ""], strict=True)
        ]
        jobs = []
        for p, adapter in zip(prompts, ["", "acme/a1@v1", ""], strict=True):
            jobs.append(collect(engine, chat(p, max_tokens=12), adapter))  # free rows
        for seed, adapter in enumerate(["", "acme/a1@v1", "beta/a2@v1", ""]):
            req = chat("report", max_tokens=60, temperature=0.9, seed=seed, guided=Guided(json_schema=SCHEMA))
            jobs.append(collect(engine, req, adapter))
        return free_solo, await asyncio.gather(*jobs)

    free_solo, results = run(main())
    assert [r[0] for r in results[:3]] == [
        s[0] for s in free_solo
    ]  # free rows unaffected by the grammar rows
    for text, last, _ in results[3:]:
        assert last.finish_reason == "stop", text
        value = json.loads(text)
        assert set(value) == {"ok", "level", "count"} and value["level"] in ("low", "high")
        assert isinstance(value["ok"], bool) and isinstance(value["count"], int)


def test_json_object_and_bad_schemas(make_engine):
    engine = make_engine()
    text, last, _ = run(collect(engine, chat("report", max_tokens=100, guided=Guided(json_object=True))))
    if last.finish_reason == "stop":
        assert isinstance(json.loads(text), dict)
    else:  # cut by max_tokens: still a JSON prefix, reported as such
        assert last.finish_reason == "length" and text.startswith("{")
    bad = Guided(json_schema={"type": "object", "properties": {"x": {"type": "no-such-type"}}})
    with pytest.raises(InvalidRequest) as err:
        run(collect(engine, chat("report", guided=bad)))
    assert err.value.param == "response_format"


def test_tool_choice_auto_needs_a_template_with_tool_calls(make_engine):
    engine = make_engine()
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    with pytest.raises(InvalidRequest, match="tool-call format"):
        run(collect(engine, chat("report", tools=tools, tool_choice="auto")))


def test_tools_and_tool_turns_render_as_text_on_a_template_without_them(make_engine):
    from services.llm.protocol import GenerateRequest

    engine = make_engine()
    tools = [{"type": "function", "function": {"name": "get_outage", "parameters": {"type": "object"}}}]
    call = {"id": "c1", "type": "function", "function": {"name": "get_outage", "arguments": '{"area": "x"}'}}
    req = GenerateRequest(
        messages=[
            {"role": "user", "content": "outage?"},
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "name": "get_outage", "content": '{"outage": true}'},
        ],
        tools=tools,
        tool_choice="required",
    )
    text = engine.prompts.render(req, [])
    assert text.startswith("<|system|>") and '"name": "get_outage"' in text
    assert '{"name": "get_outage", "arguments": {"area": "x"}}' in text  # the assistant's call, as text
    assert "Result of tool call get_outage (c1):" in text
