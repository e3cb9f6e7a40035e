"""``response_format`` and ``tools`` to the LLM's output grammar, and the model's output back to ``tool_calls``.

No FastAPI here. ``json_object`` / ``json_schema`` become a ``Guided`` constraint as they are;
``tool_choice: required`` becomes a schema of one call to any tool (``{"name", "arguments"}``),
a named function a schema of its arguments. The replica constrains decoding to the grammar, so
the text parses; ``parse_tool_calls`` turns it into OpenAI ``tool_calls``. ``auto`` leaves the
model free where its chat template has a tool-call format (Hermes ``<tool_call>`` blocks).
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from pydantic import ValidationError

from adept.errors import InvalidRequest
from services.gateway.protocol import ChatCompletionRequest, FunctionCall, NamedToolChoice, ToolCall
from services.llm.protocol import Guided

_TAGGED = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.DOTALL)


def _parameters(function: Any) -> dict[str, Any]:
    return function.parameters or {"type": "object"}


def guided_output(req: ChatCompletionRequest) -> Guided | None:
    """The grammar ``req``'s output must follow, or None for free text.

    Raises:
        InvalidRequest: the schema is too large to compile per request.
    """
    try:
        return _guided(req)
    except ValidationError as e:
        param = "tools" if req.tool_mode in ("required", "named") else "response_format"
        raise InvalidRequest(f"invalid output schema: {e.errors()[0]['msg']}", param=param) from None


def _guided(req: ChatCompletionRequest) -> Guided | None:
    mode = req.tool_mode
    if mode == "named":
        assert isinstance(req.tool_choice, NamedToolChoice)
        fn = next(t.function for t in req.tools or [] if t.function.name == req.tool_choice.function.name)
        return Guided(json_schema=_parameters(fn))
    if mode == "required":
        calls = [
            {
                "type": "object",
                "properties": {"name": {"const": t.function.name}, "arguments": _parameters(t.function)},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
            for t in req.tools or []
        ]
        return Guided(json_schema=calls[0] if len(calls) == 1 else {"anyOf": calls})
    fmt = req.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return Guided(json_object=True)
    assert fmt.json_schema is not None
    return Guided(json_schema=fmt.json_schema.schema_)


def tool_definitions(req: ChatCompletionRequest) -> list[dict[str, Any]] | None:
    """The tools shown to the model (none with ``tool_choice: none``)."""
    if req.tool_mode == "none":
        return None
    return [t.model_dump(exclude_none=True) for t in req.tools or []]


def _call(name: str, arguments: Any) -> ToolCall:
    return ToolCall(
        id=f"call_{uuid.uuid4().hex[:24]}",
        function=FunctionCall(name=name, arguments=json.dumps(arguments, ensure_ascii=False)),
    )


def parse_tool_calls(req: ChatCompletionRequest, text: str) -> tuple[str | None, list[ToolCall] | None]:
    """``(content, tool_calls)`` of an answer: the calls the text makes, and what text is left."""
    mode = req.tool_mode
    if mode == "none":
        return text, None
    if mode == "named":
        assert isinstance(req.tool_choice, NamedToolChoice)
        try:
            arguments = json.loads(text)
        except ValueError:
            return text, None  # cut short by max_tokens: the partial text is what there is
        return None, [_call(req.tool_choice.function.name, arguments)]
    if mode == "required":
        try:
            call = json.loads(text)
        except ValueError:
            return text, None
        return None, [_call(call["name"], call["arguments"])]
    calls = []
    for block in _TAGGED.findall(text):
        try:
            call = json.loads(block)
            calls.append(_call(str(call["name"]), call.get("arguments", {})))
        except (ValueError, KeyError, TypeError):
            continue  # not a well-formed call: it stays in the text
    if not calls:
        return text, None
    rest = _TAGGED.sub("", text).strip()
    return rest or None, calls
