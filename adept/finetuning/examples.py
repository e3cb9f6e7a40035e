"""Training examples: the one definition of a valid line, for upload validation and for training.

Three line formats (detected per line unless ``fmt`` names one):

- chat, the OpenAI fine-tuning format: ``{"messages": [{"role": "user", "content": "..."}, ...]}``
  (an assistant message with ``"weight": 0`` is context, not trained on);
- ShareGPT: ``{"conversations": [{"from": "human", "value": "..."}, {"from": "gpt", ...}]}``;
- ``{"prompt": "...", "completion": "..."}``.

``parse_example`` turns one JSON object into ``[{"role", "content", "train"}]`` or says why it
cannot; ``check_examples`` runs it over a whole JSONL file and collects every bad line, as
``POST /v1/files`` reports them. ``training/data.py`` reads datasets with the same function, so
a file that passes the upload check is one ``python -m training.finetune`` accepts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from adept.jsonl import LineProblem, iter_objects

ExampleFormat = Literal["auto", "chat", "sharegpt", "prompt_completion"]

_SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "system": "system",
}
_CHAT_ROLES = {"system", "user", "assistant"}


def detect_format(obj: dict[str, Any]) -> str | None:
    """The line format ``obj`` is written in, or None."""
    if "messages" in obj:
        return "chat"
    if "conversations" in obj:
        return "sharegpt"
    if "prompt" in obj and "completion" in obj:
        return "prompt_completion"
    return None


def parse_example(obj: Any, fmt: str = "auto") -> list[dict[str, Any]]:
    """Normalize one JSON line into ``[{"role", "content", "train"}]``; ``ValueError`` says what is wrong."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    kind = detect_format(obj) if fmt == "auto" else fmt
    if kind is None:
        raise ValueError('no "messages", "conversations" or "prompt"+"completion" field')
    if kind == "prompt_completion":
        prompt, completion = obj.get("prompt"), obj.get("completion")
        if not isinstance(prompt, str) or not isinstance(completion, str):
            raise ValueError('"prompt" and "completion" must both be strings')
        msgs = [
            {"role": "user", "content": prompt, "train": False},
            {"role": "assistant", "content": completion, "train": True},
        ]
    else:
        key, role_key, text_key = (
            ("messages", "role", "content") if kind == "chat" else ("conversations", "from", "value")
        )
        turns = obj.get(key)
        if not isinstance(turns, list) or not turns:
            raise ValueError(f'"{key}" must be a non-empty list')
        msgs = []
        for i, turn in enumerate(turns):
            if not isinstance(turn, dict):
                raise ValueError(f"{key}[{i}] is not an object")
            raw_role, text = turn.get(role_key), turn.get(text_key)
            role = raw_role if kind == "chat" else _SHAREGPT_ROLES.get(str(raw_role).lower())
            if role not in _CHAT_ROLES:
                raise ValueError(f"{key}[{i}].{role_key}: unsupported role {raw_role!r}")
            if not isinstance(text, str):
                raise ValueError(f"{key}[{i}].{text_key} must be a string")
            weight = turn.get("weight", 1)
            if weight not in (0, 1):
                raise ValueError(f"{key}[{i}].weight must be 0 or 1")
            msgs.append({"role": role, "content": text, "train": role == "assistant" and weight == 1})
    while msgs and msgs[-1]["role"] != "assistant":
        msgs.pop()  # trailing prompts have no answer to learn from
    if not any(m["train"] and m["content"].strip() for m in msgs):
        raise ValueError("no assistant message with content to train on")
    return msgs


@dataclass
class ExampleCheck:
    """What a JSONL file holds: its usable examples and every bad line (``line N: reason``)."""

    examples: list[list[dict[str, Any]]] = field(default_factory=list)
    problems: list[LineProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and bool(self.examples)


def check_examples(data: bytes, fmt: str = "auto", *, source: str = "<jsonl>") -> ExampleCheck:
    """Parse every line of a JSONL training file; bad lines are collected, never raised.

    A line is bad when it is not UTF-8, not a JSON object, or not an example in ``fmt``
    (``parse_example`` says why). Blank lines are skipped, as training skips them.
    """
    out = ExampleCheck()
    for lineno, obj in iter_objects(data, source=source, problems=out.problems):
        try:
            out.examples.append(parse_example(obj, fmt))
        except ValueError as e:
            out.problems.append(LineProblem(lineno, str(e)))
    out.problems.sort(key=lambda p: p.line)
    return out
