"""What a well-formed answer looks like: OpenAI-style errors, complete SSE streams, consistent usage."""

from __future__ import annotations

import json
from typing import Any

ERROR_TYPES = {
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "rate_limit_error",
    "server_error",
    "not_found_error",
}


def error_problem(status: int, body: bytes, content_type: str = "") -> str | None:
    """Why an error response is not OpenAI-style JSON (``None`` if it is)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return f"{status}: body is not JSON ({content_type}): {body[:120]!r}"
    err = data.get("error") if isinstance(data, dict) else None
    if not isinstance(err, dict):
        return f"{status}: no 'error' object: {body[:160]!r}"
    if not isinstance(err.get("message"), str) or not err["message"]:
        return f"{status}: error.message missing"
    if not isinstance(err.get("type"), str) or not isinstance(err.get("code"), str):
        return f"{status}: error.type / error.code missing: {err}"
    return None


def sse_problem(body: bytes, *, chat: bool = True) -> str | None:
    """Why an SSE body is not a complete stream: ends with ``[DONE]``, every event JSON, usage adds up."""
    text = body.decode("utf-8", errors="replace")
    events = [e for e in text.split("\n\n") if e.strip()]
    if not events or events[-1].strip() != "data: [DONE]":
        return f"stream does not end with [DONE]: {text[-120:]!r}"
    finished = False
    for raw in events[:-1]:
        if not raw.startswith("data: "):
            return f"not an SSE data line: {raw[:80]!r}"
        try:
            data = json.loads(raw[6:])
        except ValueError:
            return f"SSE event is not JSON: {raw[:80]!r}"
        if "error" in data:
            return f"stream carried an error: {data['error'].get('message', '')[:120]}"
        for choice in data.get("choices", []):
            if choice.get("finish_reason"):
                finished = True
        usage = data.get("usage")
        if usage and usage["total_tokens"] != usage["prompt_tokens"] + usage["completion_tokens"]:
            return f"stream usage does not add up: {usage}"
    if not finished:
        return "stream has no finish_reason"
    return None


def completion_problem(data: dict[str, Any]) -> str | None:
    """Why a non-streamed completion is incomplete or its usage inconsistent."""
    try:
        choice = data["choices"][0]
        usage = data["usage"]
    except (KeyError, IndexError, TypeError):
        return f"completion lacks choices/usage: {str(data)[:160]}"
    if choice.get("finish_reason") not in ("stop", "length"):
        return f"finish_reason is {choice.get('finish_reason')!r}"
    if usage["total_tokens"] != usage["prompt_tokens"] + usage["completion_tokens"]:
        return f"usage does not add up: {usage}"
    if usage["completion_tokens"] < 1 or usage["prompt_tokens"] < 1:
        return f"usage has zero tokens: {usage}"
    return None


def response_problem(status: int, body: bytes, content_type: str) -> str | None:
    """Any response: no 5xx except a clean 503, errors OpenAI-style, streams complete."""
    if status >= 400:
        problem = error_problem(status, body, content_type)
        if problem:
            return problem
        if status >= 500:
            return f"{status}: {body[:200]!r}"
        return None
    if content_type.startswith("text/event-stream"):
        return sse_problem(body)
    return None
