"""Wire models between the gateway and the LLM deployment (``LLMDeployment.generate``)."""

from __future__ import annotations

import json
import uuid
from typing import Any, Literal

from pydantic import Field, model_validator

from adept.config.base import StrictModel


class FunctionCall(StrictModel):
    name: str = Field(description="The function called.")
    arguments: str = Field(description="Its arguments, a JSON object as text.")


class ToolCall(StrictModel):
    """A tool call an assistant turn made (OpenAI's shape)."""

    id: str = Field(description="Call id; the `tool` turn answering it names it.")
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(StrictModel):
    """One chat turn."""

    role: Literal["system", "user", "assistant", "tool"] = Field(description="Who speaks.")
    content: str = Field("", description="What is said.")
    tool_calls: list[ToolCall] | None = Field(None, description="Assistant turns: the tools it called.")
    tool_call_id: str | None = Field(None, description="Tool turns: the call this result answers.")
    name: str | None = Field(None, description="Tool turns: the function that produced the result.")


MAX_SCHEMA_CHARS = 32_768  # compiling a grammar is CPU work: schemas stay small...
MAX_SCHEMA_DEPTH = 64  # ...and shallow (300 nested objects, 15 KB, took 24 s to compile)


class Guided(StrictModel):
    """Grammar-constrained output: any JSON object, or JSON valid against a schema."""

    json_schema: dict[str, Any] | None = Field(
        None, description="JSON schema the output must match (strict)."
    )
    json_object: bool = Field(False, description="Any JSON object (`response_format: json_object`).")

    @model_validator(mode="after")
    def _one(self) -> Guided:
        if (self.json_schema is None) == (not self.json_object):
            raise ValueError("give exactly one of json_schema or json_object")
        if self.json_schema is not None and len(json.dumps(self.json_schema)) > MAX_SCHEMA_CHARS:
            raise ValueError(f"the JSON schema is over {MAX_SCHEMA_CHARS} characters")
        if self.json_schema is not None and _depth(self.json_schema) > MAX_SCHEMA_DEPTH:
            raise ValueError(f"the JSON schema nests deeper than {MAX_SCHEMA_DEPTH} levels")
        return self


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


class GenerateRequest(StrictModel):
    """One generation: chat ``messages`` (rendered with the model's chat template) or a raw ``prompt``."""

    messages: list[ChatMessage] | None = Field(
        None, min_length=1, description="Chat turns; exclusive with prompt."
    )
    prompt: str | None = Field(None, description="Raw prompt, no chat template; exclusive with messages.")
    passages: list[str] = Field(
        default_factory=list,
        description="Retrieved context, best first. The replica fits as many as the token budget allows into "
        "the prompt, numbered [1], [2], ... in prompt order, and reports their indices in `passages_used`.",
    )
    passage_excerpts: list[list[str]] = Field(
        default_factory=list,
        description="For each passage (same order), shorter renderings of it: its best 1, 2, ... sentences for "
        "the question. A replica configured to show few sentences (`llm.rag_passage_sentences`) uses "
        "these instead of the whole passage.",
    )
    max_tokens: int | None = Field(None, ge=1, description="Most tokens to generate; default from LLMConfig.")
    temperature: float = Field(1.0, ge=0.0, le=2.0, description="0 means greedy decoding.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    seed: int | None = Field(None, description="Makes sampling reproducible for this request.")
    stop: list[str] = Field(
        default_factory=list, max_length=16, description="Stop strings; the output ends before the first one."
    )
    presence_penalty: float = Field(
        0.0, ge=-2.0, le=2.0, description="Subtracted from a generated token's logit."
    )
    frequency_penalty: float = Field(
        0.0, ge=-2.0, le=2.0, description="Subtracted from a token's logit once per time it was generated."
    )
    logit_bias: dict[int, float] | None = Field(
        None, max_length=300, description="Token id -> bias added to its logit (-100 bans, 100 forces)."
    )
    logprobs: int | None = Field(
        None, ge=0, le=20, description="Return each token's log-probability and this many top alternatives."
    )
    ignore_eos: bool = Field(
        False, description="Keep generating past end-of-sequence until max_tokens (benchmarks, load tests)."
    )
    guided: Guided | None = Field(None, description="Constrain the output to JSON (a grammar, per request).")
    tools: list[dict[str, Any]] | None = Field(
        None, description="OpenAI tool definitions, shown to the model (its chat template, or a system turn)."
    )
    tool_choice: Literal["none", "auto", "required", "named"] = Field(
        "none", description="How tools are used; `auto` needs a chat template with a tool-call format."
    )
    tenant: str | None = Field(
        None,
        max_length=128,
        description="Who asks (set by the gateway): requests are admitted fairly across tenants. "
        "Default: the tenant of the adapter id, or one shared bucket for the base model.",
    )
    request_id: str = Field(default_factory=lambda: uuid.uuid4().hex, description="For logs and tracing.")

    @property
    def text_chars(self) -> int:
        """Characters of the prompt or messages (passages are fitted, never required)."""
        if self.prompt is not None:
            return len(self.prompt)
        return sum(len(m.content) for m in self.messages or [])

    @model_validator(mode="after")
    def _one_input(self) -> GenerateRequest:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give exactly one of `messages` or `prompt`")
        if any(s == "" for s in self.stop):
            raise ValueError("stop strings must not be empty")
        if any(not -100 <= b <= 100 for b in (self.logit_bias or {}).values()):
            raise ValueError("logit_bias values must be between -100 and 100")
        if len(self.passage_excerpts) > len(self.passages):
            raise ValueError("passage_excerpts has more entries than passages")
        return self


class Usage(StrictModel):
    """Token counts of one request; ``prompt_tokens`` counts the rendered prompt exactly."""

    prompt_tokens: int = Field(description="Tokens of the rendered prompt (template and passages included).")
    completion_tokens: int = Field(description="Tokens generated (a final end-of-sequence token included).")

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class TopLogprob(StrictModel):
    token: str = Field(description="The token's text.")
    logprob: float


class TokenLogprob(StrictModel):
    """A generated token's log-probability under the model (before penalties, bias or grammar)."""

    token: str = Field(description="The token's text.")
    logprob: float
    top: list[TopLogprob] = Field(default_factory=list, description="The most likely tokens at this step.")


class GenerateChunk(StrictModel):
    """A streamed piece of the answer; the last chunk has ``finish_reason``, ``usage`` and ``passages_used``."""

    text: str = Field("", description="New text since the previous chunk.")
    finish_reason: Literal["stop", "length"] | None = Field(None, description="Set on the last chunk only.")
    usage: Usage | None = Field(None, description="On the last chunk.")
    logprobs: list[TokenLogprob] | None = Field(
        None,
        description="With `logprobs`: the tokens generated since the previous chunk, with their log-probabilities.",
    )
    passages_used: list[int] | None = Field(
        None,
        description="On the last chunk: indices into `passages` that went into the prompt, in prompt order.",
    )
