"""The running batch: one row per sequence in a preallocated KV cache, rows of any adapter mixed.

Row ``i`` of the batch is row ``i`` of the ``SlotKVCache``; rows stay contiguous (``0 .. n-1``):
newcomers are added at the end and a leaving row is filled by the last one (one row's data
moves). Every row keeps its own positions, which are also its cache columns. Rows beyond the
running ones are always zero: a row is cleared when its sequence leaves (finished, failed or
cancelled), so no later sequence can read what an earlier one stored.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from services.llm.kv_cache import SlotKVCache
from services.llm.streaming import TextStream


@dataclass(eq=False)
class Sequence:
    """One request being generated."""

    request_id: str
    tenant: str
    prompt_ids: list[int]
    slot: int  # the adapter's LoRA slot, or -1 (``lora_slots.BASE``) for the base model
    adapter_id: str  # "" for the base model
    max_tokens: int
    temperature: float
    top_p: float
    generator: torch.Generator
    stream: TextStream
    queue: asyncio.Queue
    passages_used: list[int]
    ignore_eos: bool = False
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] | None = None
    logprobs: int | None = None  # report log-probabilities with this many alternatives
    pending_logprobs: list[Any] = field(default_factory=list)  # not yet delivered
    grammar: Any = None  # an xgrammar matcher: the row's logits are masked to what it allows
    submitted: float = field(default_factory=time.monotonic)
    generated: list[int] = field(default_factory=list)
    cache_len: int = 0  # tokens of this row held in the KV cache (= the position of its next token)
    prefilled: int = 0  # context tokens written so far by a chunked prefill
    finish_reason: str | None = None  # "stop", "length", or "error"
    cancelled: bool = False
    released: bool = False  # its adapter use was given back (exactly once)
    preemptions: int = 0

    @property
    def cost(self) -> int:
        """KV tokens this request may occupy (what admission reserves; fair share charges service)."""
        return len(self.prompt_ids) + self.max_tokens

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def context_ids(self) -> list[int]:
        """What a prefill processes: the prompt, plus the tokens generated before a preemption."""
        return self.prompt_ids + self.generated

    @property
    def done(self) -> bool:
        return self.finish_reason is not None or self.cancelled


class RunningBatch:
    """The rows being decoded together and the cache that holds them."""

    def __init__(self, cache: SlotKVCache) -> None:
        self.cache = cache
        self.rows: list[Sequence] = []
        # A long prompt being prefilled a slice per step (chunked prefill); its row follows the running rows.
        self.filling: Sequence | None = None

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def holders(self) -> list[Sequence]:
        """Every sequence holding a cache row: the running rows, then the one being prefilled in chunks."""
        return [*self.rows, *([self.filling] if self.filling is not None else [])]

    def fits(self, keep: list[Sequence], add: list[Sequence]) -> bool:
        """Whether ``keep`` + ``add`` (+ the filling row) fit the cache budget (rows x the widest reservation)."""
        rows = [*keep, *add, *([self.filling] if self.filling is not None else [])]
        return not rows or self.cache.fits(len(rows), max(s.cost for s in rows))

    def reserve(self, add: list[Sequence]) -> int:
        """Make room for ``add`` after the running rows; return the first row index they get.

        The filling row (if any) moves to after them, so the running rows stay contiguous.
        """
        holders = self.holders
        rows = [*holders, *add]
        self.cache.reserve(len(rows), max(s.cost for s in rows), keep_rows=len(holders))
        start = len(self.rows)
        if self.filling is not None and add:
            self.cache.move_row(start, start + len(add))
            self.cache.clear_rows(start, start + 1)
        return start

    def unreserve(self, start: int, count: int) -> None:
        """Undo ``reserve``'s move of the filling row (its newcomers' prefill failed)."""
        if self.filling is not None and count:
            self.cache.move_row(start + count, start)

    def clear_free_rows(self) -> None:
        """Zero every allocated row beyond the ones held (after a prefill that failed part-way)."""
        self.cache.clear_rows(len(self.holders), self.cache.rows)

    def remove(self, gone: set[Sequence]) -> None:
        """Drop ``gone`` rows; rows from the end fill the holes so the rest stay where they are."""
        if not gone:
            return
        held = len(self.holders)
        kept = [s for s in self.rows if s not in gone]
        n = len(kept)
        holes = [i for i, s in enumerate(self.rows[:n]) if s in gone]
        movers = [i for i, s in enumerate(self.rows) if i >= n and s not in gone]
        rows = self.rows[:n]
        for hole, src in zip(holes, movers, strict=True):
            self.cache.move_row(src, hole)
            rows[hole] = self.rows[src]
        filling_at = len(self.rows)
        self.rows = rows
        if self.filling is not None and self.filling in gone:
            self.filling = None
        elif self.filling is not None and filling_at != n:
            self.cache.move_row(filling_at, n)
        if not self.holders:
            self.cache.release()
        else:
            self.cache.clear_rows(len(self.holders), held)  # finished, failed or cancelled: nothing stays
