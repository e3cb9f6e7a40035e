"""Small stand-ins for the LLM and retrieval deployments, for logic-layer tests only.

Integration tests use the real deployments; these let the routing/validation logic be tested
in milliseconds without Ray or a model.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

from services.llm.protocol import GenerateChunk, GenerateRequest, TokenLogprob, TopLogprob, Usage
from services.retrieval.protocol import Highlight, SearchHit


class EchoLLM:
    """Answers ``<model_id or base>: <last message>`` word by word; records what it was asked."""

    def __init__(self, *, fail_with: Exception | None = None) -> None:
        self.calls: list[tuple[str, GenerateRequest]] = []
        self.fail_with = fail_with
        self.closed = 0

    async def generate(self, model_id: str, request: GenerateRequest) -> AsyncIterator[GenerateChunk]:
        self.calls.append((model_id, request))
        if self.fail_with is not None:
            raise self.fail_with
        source = request.prompt if request.prompt is not None else request.messages[-1].content
        words = f"{model_id or 'base'}: {source}".split()[: request.max_tokens]
        try:
            for w in words:
                logprobs = None
                if request.logprobs is not None:
                    top = [TopLogprob(token=w + " ", logprob=-0.5)][: request.logprobs]
                    logprobs = [TokenLogprob(token=w + " ", logprob=-0.5, top=top)]
                yield GenerateChunk(text=w + " ", logprobs=logprobs)
            reason = "length" if len(words) == request.max_tokens else "stop"
            yield GenerateChunk(
                finish_reason=reason,
                usage=Usage(prompt_tokens=7, completion_tokens=len(words)),
                passages_used=list(range(len(request.passages)))[:1],
            )
        finally:
            self.closed += 1


class FakeKB:
    """Returns two fixed hits per tenant, tagged with the tenant so tests can see scoping."""

    def __init__(self) -> None:
        self.queries: list[tuple[str, str, int]] = []
        self.deleted_tenants: list[str] = []

    async def delete_tenant(self, tenant: str) -> None:
        self.deleted_tenants.append(tenant)

    async def search(self, tenant: str, query: str, top_k: int, *, highlights: int = 0) -> list[SearchHit]:
        self.queries.append((tenant, query, top_k))
        hits = []
        for i in range(min(top_k, 2)):
            text = f"Intro {i}. Answer {i}."
            # Ranked as the retrieval service does it: the second sentence answers best.
            ranked = [
                Highlight(text=f"Answer {i}.", start=9, end=len(text), score=0.9),
                Highlight(text=f"Intro {i}.", start=0, end=8, score=0.1),
            ]
            hits.append(
                SearchHit(
                    document_id=f"{tenant}-doc{i}",
                    chunk_id=f"c{i}",
                    title=f"Doc {i}",
                    text=text,
                    score=1.0 - i / 10,
                    highlights=ranked[:highlights],
                )
            )
        return hits


def write_peft_dir(dest: Path, base_model: str) -> Path:
    """A directory with the two PEFT file names (content is not read by the registry or the gateway)."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "base_model_name_or_path": base_model, "r": 4})
    )
    (dest / "adapter_model.safetensors").write_bytes(b"\0" * 16)
    return dest
