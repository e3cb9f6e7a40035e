"""Config to engine: ``llm.engine: auto | hf | vllm`` picks the engine one LLM replica runs.

Both engines keep one contract (``generate``, ``load_adapter``, ``unload_adapter``,
``loaded_adapters``, ``count_tokens``, ``check_health``, ``close``, ``max_model_len``), so the
deployment, the adapter loader and the gateway in front do not know which one runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adept.config.llm import LLMConfig
from adept.config.platform import PlatformConfig
from adept.errors import ConfigError


def choose_engine(setting: str) -> str:
    """``hf`` or ``vllm`` for the configured ``llm.engine`` (``auto``: vLLM where CUDA and vllm are present)."""
    if setting != "auto":
        return setting
    from services.llm.vllm_engine import vllm_available

    return "vllm" if vllm_available() else "hf"


def build_engine(
    platform: PlatformConfig, llm: LLMConfig, *, observer: Any = None, model_path: Path | None = None
) -> Any:
    """The engine for this replica, its model loaded.

    Raises:
        ConfigError: ``vllm`` asked for where it cannot run (no GPU, or the vllm extra missing).
    """
    from adept.models import resolve_model

    path = model_path or resolve_model(platform.model, platform.models_dir)
    common: dict[str, Any] = {
        "max_tokens_limit": llm.max_tokens_limit,
        "default_max_tokens": llm.default_max_tokens,
        "rag_instruction": llm.rag_instruction,
        "rag_examples": [e.model_dump() for e in llm.rag_examples],
        "rag_max_passages": llm.rag_max_passages,
        "rag_passage_sentences": llm.rag_passage_sentences,
        "rag_extractive": llm.rag_extractive,
        "observer": observer,
        "max_queued_requests": llm.max_queued_requests,
        "max_queued_per_tenant": llm.max_queued_per_tenant,
    }
    if choose_engine(llm.engine) == "vllm":
        if platform.resolved_device() != "cuda":
            raise ConfigError(
                f"llm.engine is 'vllm' but platform.device resolves to {platform.resolved_device()!r}: "
                "vLLM needs a CUDA GPU (use llm.engine 'hf' or 'auto' on CPU)"
            )
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise ConfigError(
                "llm.engine is 'vllm' but vllm is not installed: use the CUDA image, or "
                "pip install -c requirements/constraints-cuda.txt '.[gpu,vllm]'"
            )
        from services.llm.vllm_engine import VLLMEngine

        return VLLMEngine.from_pretrained(
            path,
            dtype=platform.dtype,
            max_model_len=llm.max_model_len,
            max_batch_size=llm.max_batch_size,
            max_adapters=llm.max_adapters_per_replica,
            max_lora_rank=platform.max_lora_rank,
            kv_cache_tokens=llm.kv_cache_tokens,
            **common,
        )
    from services.llm.engine import Engine

    return Engine.from_pretrained(
        path,
        device=platform.resolved_device(),
        dtype=platform.dtype,
        max_model_len=llm.max_model_len,
        max_batch_size=llm.max_batch_size,
        batch_wait_ms=llm.batch_wait_ms,
        kv_cache_tokens=llm.kv_cache_tokens,
        kv_memory_fraction=llm.kv_memory_fraction,
        prefill_chunk_tokens=llm.prefill_chunk_tokens,
        # Serve's multiplexed LRU (max_adapters_per_replica) decides what a replica holds; one spare slot,
        # because an adapter Serve evicts while a request still uses it frees its slot only when that
        # request ends: a load meanwhile takes the spare instead of evicting an idle adapter Serve still
        # counts as loaded (whose next request would find it gone).
        max_loras=llm.max_adapters_per_replica + 1,
        max_lora_rank=platform.max_lora_rank,
        **common,
    )
