"""The running batch: rows that may use different adapters, one left-padded KV cache, merged and split between steps.

Every row keeps its own positions, so padding columns in the cache never shift a row's RoPE
positions; they are masked out in attention and trimmed once no row needs them.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from services.llm.sampling import TextStream


@dataclass(eq=False)
class Sequence:
    """One request being generated."""

    request_id: str
    prompt_ids: list[int]
    slot: str  # peft adapter name, or "__base__"
    adapter_id: str  # "" for the base model
    max_tokens: int
    temperature: float
    top_p: float
    generator: torch.Generator
    stream: TextStream
    queue: asyncio.Queue
    passages_used: list[int]
    ignore_eos: bool = False
    submitted: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    generated: list[int] = field(default_factory=list)
    cache_len: int = 0  # real (unpadded) tokens of this row held in the KV cache
    finish_reason: str | None = None
    cancelled: bool = False


class Batch:
    """Rows decoded together, their KV cache (a transformers ``DynamicCache``) and 2D attention mask."""

    def __init__(
        self, rows: list[Sequence] | None = None, cache: Any = None, mask: torch.Tensor | None = None
    ):
        self.rows: list[Sequence] = rows or []
        self.cache = cache  # layers hold keys/values [rows, heads, columns, head_dim]; forward extends them
        self.mask = mask  # [rows, columns], 1 = real token, 0 = left padding

    def __len__(self) -> int:
        return len(self.rows)

    def merge(self, other: Batch) -> None:
        """Append ``other``'s rows; the shorter side is left-padded with masked zero columns."""
        if not self.rows:
            self.rows, self.cache, self.mask = other.rows, other.cache, other.mask
            return
        assert self.mask is not None and other.mask is not None
        width = max(self.mask.shape[1], other.mask.shape[1])
        a, b = width - self.mask.shape[1], width - other.mask.shape[1]
        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            mine.keys = torch.cat([_pad_left(mine.keys, a, 2), _pad_left(theirs.keys, b, 2)])
            mine.values = torch.cat([_pad_left(mine.values, a, 2), _pad_left(theirs.values, b, 2)])
        self.mask = torch.cat([_pad_left(self.mask, a, 1), _pad_left(other.mask, b, 1)])
        self.rows = self.rows + other.rows

    def keep(self, keep: list[int]) -> None:
        """Keep only the rows at ``keep`` and drop leading columns that are padding for every kept row."""
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.cache, self.mask = None, None
            return
        assert self.mask is not None
        idx = torch.tensor(keep, device=self.mask.device)
        mask = self.mask.index_select(0, idx)
        first = int(mask.any(dim=0).int().argmax().item())  # first column some kept row still uses
        self.mask = mask[:, first:]
        for layer in self.cache.layers:
            layer.keys = layer.keys.index_select(0, idx)[:, :, first:]
            layer.values = layer.values.index_select(0, idx)[:, :, first:]


def _pad_left(t: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    if n == 0:
        return t
    shape = list(t.shape)
    shape[dim] = n
    return torch.cat([t.new_zeros(shape), t], dim=dim)
