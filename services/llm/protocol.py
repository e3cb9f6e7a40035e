"""Wire models between the gateway and the LLM deployment (``LLMDeployment.generate``)."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import Field, model_validator

from adept.config.base import StrictModel


class ChatMessage(StrictModel):
    """One chat turn."""

    role: Literal["system", "user", "assistant"] = Field(description="Who speaks.")
    content: str = Field(description="What is said.")


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
    max_tokens: int | None = Field(None, ge=1, description="Most tokens to generate; default from LLMConfig.")
    temperature: float = Field(1.0, ge=0.0, le=2.0, description="0 means greedy decoding.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    seed: int | None = Field(None, description="Makes sampling reproducible for this request.")
    stop: list[str] = Field(
        default_factory=list, max_length=16, description="Stop strings; the output ends before the first one."
    )
    ignore_eos: bool = Field(
        False, description="Keep generating past end-of-sequence until max_tokens (benchmarks, load tests)."
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
        return self


class Usage(StrictModel):
    """Token counts of one request; ``prompt_tokens`` counts the rendered prompt exactly."""

    prompt_tokens: int = Field(description="Tokens of the rendered prompt (template and passages included).")
    completion_tokens: int = Field(description="Tokens generated (a final end-of-sequence token included).")

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class GenerateChunk(StrictModel):
    """A streamed piece of the answer; the last chunk has ``finish_reason``, ``usage`` and ``passages_used``."""

    text: str = Field("", description="New text since the previous chunk.")
    finish_reason: Literal["stop", "length"] | None = Field(None, description="Set on the last chunk only.")
    usage: Usage | None = Field(None, description="On the last chunk.")
    passages_used: list[int] | None = Field(
        None,
        description="On the last chunk: indices into `passages` that went into the prompt, in prompt order.",
    )
