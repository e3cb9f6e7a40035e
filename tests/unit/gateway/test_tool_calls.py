"""``response_format`` / ``tools`` to the output grammar, and the answer back to OpenAI ``tool_calls``."""

from __future__ import annotations

import json

from services.gateway.protocol import ChatCompletionRequest, parse_body
from services.gateway.tool_calls import guided_output, parse_tool_calls, tool_definitions

MSG = [{"role": "user", "content": "hi"}]
TOOL = {
    "type": "function",
    "function": {
        "name": "get_outage",
        "parameters": {"type": "object", "properties": {"area": {"type": "string"}}},
    },
}
OTHER = {"type": "function", "function": {"name": "restart"}}


def req(**fields) -> ChatCompletionRequest:
    return parse_body(ChatCompletionRequest, {"model": "m", "messages": MSG, **fields})


def test_response_formats_become_grammars():
    assert guided_output(req()) is None and guided_output(req(response_format={"type": "text"})) is None
    assert guided_output(req(response_format={"type": "json_object"})).json_object
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}
    assert guided_output(req(response_format=fmt)).json_schema == schema


def test_tool_choices_become_grammars_and_parse_back():
    named = req(tools=[TOOL, OTHER], tool_choice={"type": "function", "function": {"name": "get_outage"}})
    assert guided_output(named).json_schema == TOOL["function"]["parameters"]
    content, calls = parse_tool_calls(named, '{"area": "north"}')
    assert content is None and calls[0].function.name == "get_outage"
    assert json.loads(calls[0].function.arguments) == {"area": "north"} and calls[0].id.startswith("call_")

    required = req(tools=[TOOL, OTHER], tool_choice="required")
    names = [c["properties"]["name"]["const"] for c in guided_output(required).json_schema["anyOf"]]
    assert names == ["get_outage", "restart"]
    _, calls = parse_tool_calls(required, '{"name": "restart", "arguments": {}}')
    assert calls[0].function.name == "restart" and calls[0].function.arguments == "{}"

    none = req(tools=[TOOL], tool_choice="none")
    assert guided_output(none) is None and tool_definitions(none) is None
    assert parse_tool_calls(none, "plain") == ("plain", None)


def test_auto_parses_tagged_calls_and_keeps_other_text():
    auto = req(tools=[TOOL])
    assert auto.tool_mode == "auto" and guided_output(auto) is None and tool_definitions(auto)[0]["function"]
    text = 'Checking.\n<tool_call>\n{"name": "get_outage", "arguments": {"area": "x"}}\n</tool_call>'
    content, calls = parse_tool_calls(auto, text)
    assert content == "Checking." and calls[0].function.name == "get_outage"
    assert parse_tool_calls(auto, "no calls here") == ("no calls here", None)


def test_tool_turns_reach_the_llm_with_their_fields():
    r = req(
        messages=[
            *MSG,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
        ]
    )
    assistant, tool = (m.as_llm_message() for m in r.messages[1:])
    assert assistant["tool_calls"][0]["function"]["name"] == "f" and assistant["content"] == ""
    assert tool == {"role": "tool", "content": "42", "tool_call_id": "c1"}


def test_an_oversized_schema_is_a_400_before_any_grammar_is_compiled():
    import pytest

    from adept.errors import InvalidRequest

    schema = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(3000)}}
    fmt = {"type": "json_schema", "json_schema": {"name": "big", "schema": schema}}
    with pytest.raises(InvalidRequest) as err:
        guided_output(req(response_format=fmt))
    assert err.value.param == "response_format" and "32768" in err.value.message


def test_a_deeply_nested_schema_is_a_400_before_any_grammar_is_compiled():
    import pytest

    from adept.errors import InvalidRequest

    schema: dict = {"type": "object"}
    for _ in range(100):  # 300 levels took 24 s of CPU to compile
        schema = {"type": "object", "properties": {"a": schema}}
    fmt = {"type": "json_schema", "json_schema": {"name": "deep", "schema": schema}}
    with pytest.raises(InvalidRequest, match="nests deeper"):
        guided_output(req(response_format=fmt))
