"""LLM replica settings: batching, adapters per replica, context window and request limits.

Device and dtype come from ``PlatformConfig``; replicas, resources and autoscaling of the
deployment come from the serving config's deployment options.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from adept.config.base import StrictModel

# Measured with the bundled SmolLM2-135M on the demo's `tune` questions (tools/eval/tune_rag.py): the
# instruction in the system turn, two worked exchanges before the question (a 135M model follows an
# example far better than an instruction), and the user turn holding only the numbered passages and
# the question, last. Answer-contained 0.20 -> 0.40, F1 0.08 -> 0.31 over the previous layout.
DEFAULT_RAG_INSTRUCTION = (
    "Answer with the shortest phrase copied from the passages, then the passage number in brackets."
)

# Worked RAG exchanges put before the question (user turn: numbered passages + question; assistant
# turn: the answer copied from the passage that states it, then its number). Generic on purpose: no
# tenant's facts, so they cannot leak into an answer as a fact.
DEFAULT_RAG_EXAMPLES: list[dict[str, str]] = [
    {
        "question": "When does the Harbor Street office open on weekdays?",
        "passages": "[1] The Harbor Street office opens at 8 am on weekdays and closes at 5 pm. "
        "Parking is free for visitors.",
        "answer": "8 am [1]",
    },
    {
        "question": "How often are forklift permits renewed?",
        "passages": "[1] Visitors must sign the logbook at reception. Badges are returned at the gate.\n\n"
        "[2] Forklift permits are renewed every 3 years by the site safety officer.",
        "answer": "every 3 years [2]",
    },
    # The answer is neither the sentence's start nor its first number. Measured with extractive answers
    # (`rag_extractive`, which also keeps an example's words out of a reply): answer-contained 0.80 ->
    # 0.85 on the demo's tune questions, 0.70 -> 0.75 held out. (Without the grammar, a third example's
    # answer once leaked into the bundled model's replies.)
    {
        "question": "How much is the visitor badge deposit?",
        "passages": "[1] Visitors sign in at reception, pay a badge deposit of $20 and return the badge within 7 days.",
        "answer": "$20 [1]",
    },
]

# Below this many parameters the `auto` passage budget gives the model only the best passage: the
# bundled 135M model answered the demo's tune questions better from the top passage alone
# (answer-contained 0.40 vs 0.30 with two, 0.20 with four).
SMALL_MODEL_PARAMETERS = 1_000_000_000
# ... and from the passage's best sentence for the question rather than the whole passage (a chunk
# holds several facts; a small model copies the wrong one): see ``rag_passage_sentences``.
SMALL_MODEL_SENTENCES = 1


class RagExample(StrictModel):
    """One worked RAG exchange: numbered passages and a question, and the answer wanted."""

    question: str = Field(min_length=1, max_length=2000)
    passages: str = Field(
        min_length=1, max_length=8000, description="Numbered as the prompt numbers them: `[1] ...`."
    )
    answer: str = Field(min_length=1, max_length=2000)


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
        description="RAG instruction: added to the system turn of a RAG request (the numbered passages and the "
        "question go in the last user turn), or, holding both `{passages}` and `{question}`, a template of "
        "that whole user turn.",
    )
    rag_examples: list[RagExample] = Field(
        default_factory=lambda: [RagExample(**e) for e in DEFAULT_RAG_EXAMPLES],
        max_length=8,
        description="Worked RAG exchanges put before the question of a RAG request (not with a template "
        "instruction): what a small model copies its answer style from. `[]` for none.",
    )
    rag_max_passages: int | Literal["auto"] = Field(
        "auto",
        description="Most retrieved passages put into a RAG prompt (the best first, as many as fit the "
        "context). `auto`: 1 for models under 1 B parameters (they answer better from the top passage "
        "alone), otherwise no limit.",
    )

    rag_passage_sentences: int | Literal["auto", "all"] = Field(
        "auto",
        description="Show each RAG passage as its best this many sentences for the question (ranked by the "
        "retrieval service, `highlights`) instead of the whole chunk. `all`: whole passages. `auto`: "
        f"{SMALL_MODEL_SENTENCES} for models under 1 B parameters (they copy the wrong fact from a whole "
        "chunk), otherwise `all`.",
    )

    rag_extractive: bool | Literal["auto"] = Field(
        "auto",
        description="Decode a RAG answer as words copied from the passages shown (a run of consecutive words "
        "of one passage, or \"I don't know.\"), through the structured-output grammar; an adapter's "
        'answer may go on after it with " (" or " [" and what its tenant trained it to add. Applies to chat '
        "requests with passages and no response_format or tools. `auto`: on for models under "
        "1 B parameters (they otherwise write numbers that are not in the passage), off for larger ones.",
    )

    @field_validator("rag_max_passages", "rag_passage_sentences")
    @classmethod
    def _budget(cls, v: int | str, info: ValidationInfo) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError(f"{info.field_name} must be 'auto' or at least 1")
        return v

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
