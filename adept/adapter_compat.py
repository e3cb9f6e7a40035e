"""Can the configured serving engine run this adapter? Checked when an adapter is published.

vLLM's multi-LoRA kernels serve plain LoRA only; its ``PEFTHelper`` (vllm/lora/peft_helper.py,
``_validate_features`` and ``validate_legal``, v0.29.0) refuses DoRA, ``modules_to_save``, a
trained bias and a rank above the engine's ``max_lora_rank`` — but only when the first request
loads the adapter. Checking the same rules at publish time turns that into a 400 for the one who
publishes, instead of a failure for the tenant's users later. The HF engine's LoRA slots
(``services/llm/lora_slots.py``) apply the same rules when they load an adapter.

Pure functions over the adapter's ``adapter_config.json`` (no vllm, no torch):
``adept.platform.Platform.publish_adapter`` calls ``ensure_adapter_compatible`` on every publish
path. The rules are the platform's, not one engine's: one registry serves a laptop (HF engine)
and a GPU cluster (vLLM) alike, so an adapter is accepted only if both can serve it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adept.errors import InvalidRequest

# vLLM's accepted `max_lora_rank` values (vllm/config/lora.py, MaxLoRARanks, v0.29.0).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


@dataclass(frozen=True)
class ServingLimits:
    """What the serving engine can load: the largest LoRA rank (vLLM's ``max_lora_rank``)."""

    max_lora_rank: int


def serving_limits(platform: Any) -> ServingLimits:
    """The limits of a ``PlatformConfig`` (its ``max_lora_rank``, which the vLLM engine is started with)."""
    return ServingLimits(max_lora_rank=platform.max_lora_rank)


def check_adapter_compatible(peft_config: Mapping[str, Any], limits: ServingLimits | None) -> list[str]:
    """Every reason the adapter with this ``adapter_config.json`` cannot be served (empty: it can)."""
    problems: list[str] = []
    peft_type = str(peft_config.get("peft_type", "")).upper()
    if peft_type != "LORA":
        problems.append(f"peft_type is {peft_type or 'missing'}; only LoRA adapters can be served")
    rank = peft_config.get("r")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank <= 0:
        problems.append(f"LoRA rank r must be a positive integer, got {rank!r}")
    if limits is None:
        return problems
    if peft_config.get("use_dora"):
        problems.append("DoRA adapters (use_dora) are not supported by the vLLM engine")
    if peft_config.get("modules_to_save"):
        problems.append("modules_to_save must be empty for the vLLM engine")
    if peft_config.get("bias", "none") != "none":
        problems.append(f"bias={peft_config.get('bias')!r}: the vLLM engine serves bias='none' only")
    ranks = [rank] if isinstance(rank, int) else []
    ranks += [r for r in (peft_config.get("rank_pattern") or {}).values() if isinstance(r, int)]
    if ranks and max(ranks) > limits.max_lora_rank:
        problems.append(
            f"LoRA rank {max(ranks)} exceeds this platform's max_lora_rank {limits.max_lora_rank} "
            "(platform.max_lora_rank): retrain with a smaller r or raise the limit"
        )
    return problems


def ensure_adapter_compatible(peft_config: Mapping[str, Any], limits: ServingLimits | None) -> None:
    """Raise ``InvalidRequest`` (400, ``adapter_incompatible``) naming every problem found."""
    problems = check_adapter_compatible(peft_config, limits)
    if problems:
        raise InvalidRequest(
            "the adapter cannot be served: " + "; ".join(problems),
            code="adapter_incompatible",
            param="adapter",
        )
