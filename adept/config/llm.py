"""LLM replica settings: batching, adapters per replica, context window and request limits.

Device and dtype come from ``PlatformConfig``; replicas, resources and autoscaling of the
deployment come from the serving config's deployment options.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from adept.config.base import StrictModel

DEFAULT_RAG_INSTRUCTION = (
    "Answer the question using the numbered context passages below. Cite the passages you use as [n]. "
    "If the passages do not contain the answer, say so."
)


class LLMConfig(StrictModel):
    """How one LLM replica serves the base model and tenants' LoRA adapters."""

    engine: Literal["auto", "hf", "vllm"] = Field(
        "auto",
        description="Serving engine: `hf` (transformers + peft, CPU and GPU, the reference), `vllm` "
        "(GPUs, multi-LoRA kernels; needs the `vllm` extra), `auto` (vLLM when CUDA is present and vllm "
        "is importable, else hf).",
    )
    max_adapters_per_replica: int = Field(
        8,
        ge=1,
        le=1024,
        description="LoRA adapters one replica keeps loaded; the least recently used one is unloaded beyond this.",
    )
    max_batch_size: int = Field(
        16,
        ge=1,
        le=512,
        description="Most sequences decoded together in one batched forward pass (rows may use different adapters).",
    )
    batch_wait_ms: float = Field(
        5.0,
        ge=0,
        le=1000,
        description="When the replica is idle, how long the first request waits for others to start a batch with.",
    )
    max_model_len: int | None = Field(
        None,
        ge=64,
        le=1_048_576,
        description="Context window in tokens (prompt + passages + answer); default: the model's own maximum.",
    )
    max_tokens_limit: int = Field(
        1024, ge=1, le=131_072, description="Largest `max_tokens` a request may ask for (HTTP 400 above)."
    )
    prefill_chunk_tokens: int = Field(
        512,
        ge=16,
        le=131_072,
        description="HF engine: a prompt longer than this is prefilled this many tokens per step, between the "
        "running rows' decode steps (chunked prefill), so one long prompt never stalls every stream.",
    )
    max_choices: int = Field(
        4,
        ge=1,
        le=16,
        description="Most choices (`n`) one chat or text completion may ask for (HTTP 400 above).",
    )
    default_max_tokens: int | None = Field(
        None,
        ge=1,
        le=131_072,
        description="Cap on `max_tokens` of a request that names none: it gets what the context window has "
        "left after its prompt, up to this (default: max_tokens_limit).",
    )
    kv_cache_tokens: int | None = Field(
        None,
        ge=64,
        le=1 << 30,
        description="KV-cache budget in tokens (requests are admitted while their prompt + max_tokens fit); "
        "default: `kv_memory_fraction` of the device memory free after loading the model.",
    )
    kv_memory_fraction: float = Field(
        0.5,
        gt=0,
        le=0.95,
        description="Share of the device memory free after loading the model that the HF engine's KV cache "
        "may use when `kv_cache_tokens` is unset. (vLLM: `kv_cache_tokens` becomes its `kv_cache_memory_bytes`; "
        "unset, vLLM sizes its paged cache itself within `gpu_memory_utilization` 0.9.)",
    )
    max_queued_requests: int = Field(
        256,
        ge=1,
        le=100_000,
        description="Requests one replica keeps waiting beyond the running batch; more are refused with "
        "HTTP 503 and Retry-After.",
    )
    max_queued_per_tenant: int = Field(
        64,
        ge=1,
        le=100_000,
        description="Requests one tenant may have waiting on a replica; more are refused with HTTP 429 "
        "and Retry-After (the other tenants keep their share).",
    )
    rag_instruction: str = Field(
        DEFAULT_RAG_INSTRUCTION,
        min_length=1,
        max_length=4000,
        description="Text put before the retrieved passages in the prompt of a RAG request.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> LLMConfig:
        if self.max_queued_per_tenant > self.max_queued_requests:
            raise ValueError(
                f"max_queued_per_tenant ({self.max_queued_per_tenant}) exceeds max_queued_requests "
                f"({self.max_queued_requests})"
            )
        if self.default_max_tokens is not None and self.default_max_tokens > self.max_tokens_limit:
            raise ValueError(
                f"default_max_tokens ({self.default_max_tokens}) exceeds max_tokens_limit ({self.max_tokens_limit})"
            )
        if self.max_model_len is not None and self.max_tokens_limit >= self.max_model_len:
            raise ValueError(
                f"max_tokens_limit ({self.max_tokens_limit}) must be smaller than max_model_len "
                f"({self.max_model_len}), which also has to hold the prompt"
            )
        return self
