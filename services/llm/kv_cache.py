"""A preallocated KV cache with one row per running sequence, tokens stored at their own positions.

Row ``i`` holds sequence ``i``'s keys and values in columns ``0 .. len_i - 1`` (column = position),
so nothing is padded on the left and no row ever moves when others join or leave:

- a decode step writes each row's new key/value at its own column (one indexed write per layer)
  and attention reads a view ``[:rows, :, :width]`` of the preallocated tensors — no ``torch.cat``;
- newcomers are prefilled straight into free rows at the end;
- a finished row is replaced by the last running row (one row's data moves, never the cache).

The tensors grow (geometrically, within the KV budget) only when a newcomer needs more rows or
columns than were allocated, and are freed when the replica goes idle. Attention masks are 4D and
built by the engine (``decode_mask``/``prefill_mask``), which also makes sliding windows exact.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

ROW_CHUNK = 4
COL_CHUNK = 128


def kv_bytes_per_token(config: Any, dtype: torch.dtype) -> int:
    """Bytes one token occupies in the KV cache of a model with ``config`` (all layers, keys and values)."""
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return 2 * config.num_hidden_layers * heads * head_dim * torch.empty((), dtype=dtype).element_size()


def free_memory_bytes(device: torch.device) -> int:
    """Memory free for the KV cache on ``device`` now (GPU: free device memory; CPU: available RAM)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


class _SlotLayer(CacheLayerMixin):
    """One layer's view of the shared tensors; transformers' attention calls ``update`` on it."""

    is_sliding = False
    is_compileable = False

    def __init__(self, owner: SlotKVCache, index: int) -> None:
        super().__init__()
        self.owner, self.index = owner, index
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        return None  # the owner allocates all layers at once

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
        return self.owner.write(self.index, key_states, value_states)

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.owner.width, 0

    def get_seq_length(self) -> int:
        return 0  # callers always pass position_ids and a 4D mask

    def get_max_length(self) -> int:
        return self.owner.cols


_FREED = torch.empty(0)  # what a layer's old tensor is replaced by once copied


class SlotKVCache(Cache):
    """KV tensors, per layer ``[rows, kv_heads, cols, head_dim]``, shared by the running batch.

    Args:
        num_layers, kv_heads, head_dim: the model's attention shape.
        dtype, device: where the cache lives (the model's).
        max_rows: most rows ever needed (the batch size limit).
        max_cols: most columns a row can need (the context window).
        budget_tokens: rows x cols may never exceed this (the KV-token budget).
    """

    def __init__(
        self,
        *,
        num_layers: int,
        kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
        max_rows: int,
        max_cols: int,
        budget_tokens: int,
    ) -> None:
        super().__init__(layers=[_SlotLayer(self, i) for i in range(num_layers)])
        self.shape = (num_layers, kv_heads, head_dim)
        self.dtype, self.device = dtype, device
        self.max_rows, self.max_cols, self.budget_tokens = max_rows, max_cols, budget_tokens
        # One tensor per layer ([rows, kv_heads, cols, head_dim]), so growing copies layer by layer.
        self.keys_all: list[torch.Tensor] | None = None
        self.values_all: list[torch.Tensor] | None = None
        self.rows = self.cols = 0
        self.peak_tokens = 0
        # The window the next forward pass reads and writes: rows [start, stop), `width` columns.
        self.start = self.stop = self.width = 0
        self._positions: torch.Tensor | None = None  # decode: the column each row writes
        self._offset = 0  # prefill: the first column written (a chunk of a long prompt starts later)
        self._row_index: torch.Tensor | None = None

    @classmethod
    def for_model(cls, model: Any, *, max_rows: int, max_cols: int, budget_tokens: int) -> SlotKVCache:
        config = model.config
        heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        param = next(model.parameters())
        return cls(
            num_layers=config.num_hidden_layers,
            kv_heads=heads,
            head_dim=head_dim,
            dtype=param.dtype,
            device=param.device,
            max_rows=max_rows,
            max_cols=max_cols,
            budget_tokens=budget_tokens,
        )

    # -- capacity --------------------------------------------------------------------------------
    @property
    def bytes_per_token(self) -> int:
        layers, heads, head_dim = self.shape
        return 2 * layers * heads * head_dim * torch.empty((), dtype=self.dtype).element_size()

    @property
    def allocated_tokens(self) -> int:
        return self.rows * self.cols

    def _rounded(self, rows: int, cols: int) -> tuple[int, int]:
        return (
            min(self.max_rows, math.ceil(rows / ROW_CHUNK) * ROW_CHUNK),
            min(self.max_cols, math.ceil(cols / COL_CHUNK) * COL_CHUNK),
        )

    def fits(self, rows: int, cols: int) -> bool:
        """Whether ``rows`` rows of ``cols`` columns stay within the budget (the allocation adapts)."""
        return rows * cols <= self.budget_tokens

    def reserve(self, rows: int, cols: int, keep_rows: int) -> None:
        """Make room for ``rows`` x ``cols``; reallocating keeps the first ``keep_rows`` rows' data.

        Grows geometrically while the budget allows (so a stream of newcomers reallocates rarely),
        and falls back to exactly what is needed (possibly narrower in one dimension) near the budget.
        """
        if rows <= self.rows and cols <= self.cols:
            return
        covering = (max(rows, self.rows), max(cols, self.cols))
        grown = self._rounded(
            max(covering[0], 2 * self.rows if rows > self.rows else 0),
            max(covering[1], 2 * self.cols if cols > self.cols else 0),
        )
        options = (grown, self._rounded(*covering), covering, (rows, cols))
        r, c = next((rc for rc in options if rc[0] * rc[1] <= self.budget_tokens), (rows, cols))
        _layers, heads, head_dim = self.shape
        old_k, old_v = self.keys_all, self.values_all
        width = min(c, self.cols)  # kept rows use fewer columns than `cols`, which covers them all
        keys: list[torch.Tensor] = []
        values: list[torch.Tensor] = []
        # Layer by layer, each old layer freed once copied: the old and the new cache never coexist
        # whole (peak = the larger of the two + one layer, not their sum).
        try:
            for layer in range(_layers):
                k = torch.zeros((r, heads, c, head_dim), dtype=self.dtype, device=self.device)
                v = torch.zeros((r, heads, c, head_dim), dtype=self.dtype, device=self.device)
                if old_k is not None and old_v is not None:
                    if keep_rows:
                        k[:keep_rows, :, :width] = old_k[layer][:keep_rows, :, :width]
                        v[:keep_rows, :, :width] = old_v[layer][:keep_rows, :, :width]
                    old_k[layer] = old_v[layer] = _FREED
                keys.append(k)
                values.append(v)
        except BaseException:
            # Out of memory part-way: put the moved layers back in the old shape (their memory was
            # just released), so the running rows keep a whole cache and only the newcomer fails.
            if old_k is not None and old_v is not None:
                for layer, (k, v) in enumerate(zip(keys, values, strict=True)):
                    shape = (self.rows, heads, self.cols, head_dim)
                    old_k[layer] = torch.zeros(shape, dtype=self.dtype, device=self.device)
                    old_v[layer] = torch.zeros(shape, dtype=self.dtype, device=self.device)
                    old_k[layer][:keep_rows, :, :width] = k[:keep_rows, :, :width]
                    old_v[layer][:keep_rows, :, :width] = v[:keep_rows, :, :width]
            raise
        self.keys_all, self.values_all, self.rows, self.cols = keys, values, r, c
        self.peak_tokens = max(self.peak_tokens, r * c)

    def release(self) -> None:
        """Free the tensors (the replica is idle)."""
        self.keys_all = self.values_all = None
        self.rows = self.cols = 0

    def move_row(self, src: int, dst: int) -> None:
        """Copy row ``src`` whole into row ``dst`` (to keep running rows contiguous).

        Whole, not just ``src``'s length: the columns beyond it must overwrite what ``dst``'s
        previous sequence left there, which a later row reading a wider window would see.
        """
        assert self.keys_all is not None and self.values_all is not None
        for k, v in zip(self.keys_all, self.values_all, strict=True):
            k[dst] = k[src]
            v[dst] = v[src]

    def clear_rows(self, start: int, stop: int) -> None:
        """Zero rows ``[start, stop)``: a sequence that left must leave nothing a later one could read.

        Attention masks are additive, and a masked NaN or inf (a broken adapter's keys) is still
        NaN in the scores: an uncleared row would fail the next request placed in it.
        """
        if self.keys_all is None or self.values_all is None or start >= stop:
            return
        for k, v in zip(self.keys_all, self.values_all, strict=True):
            k[start:stop].zero_()
            v[start:stop].zero_()

    # -- the window of one forward pass ---------------------------------------------------------------
    def for_prefill(self, start: int, stop: int, width: int) -> SlotKVCache:
        """The next forward writes ``width`` columns of rows ``[start, stop)`` from column 0."""
        self.start, self.stop, self.width = start, stop, width
        self._positions = self._row_index = None
        self._offset = 0
        return self

    def for_chunk(self, row: int, offset: int, width: int) -> SlotKVCache:
        """The next forward writes one slice of row ``row``'s prompt from column ``offset``, attends over ``width``."""
        self.start, self.stop, self.width = row, row + 1, width
        self._positions = self._row_index = None
        self._offset = offset
        return self

    def for_decode(self, start: int, stop: int, positions: torch.Tensor, width: int) -> SlotKVCache:
        """The next forward writes one column per row of ``[start, stop)`` (``positions``), attends over ``width``."""
        self.start, self.stop, self.width = start, stop, width
        self._positions = positions
        self._row_index = torch.arange(start, stop, device=positions.device)
        return self

    def write(
        self, layer: int, keys: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.keys_all is not None and self.values_all is not None
        k_all, v_all = self.keys_all[layer], self.values_all[layer]
        a, b = self.start, self.stop
        if self._positions is None:
            o = self._offset
            k_all[a:b, :, o : o + keys.shape[2]] = keys
            v_all[a:b, :, o : o + values.shape[2]] = values
        else:
            k_all[self._row_index, :, self._positions] = keys[:, :, 0]
            v_all[self._row_index, :, self._positions] = values[:, :, 0]
        return k_all[a:b, :, : self.width], v_all[a:b, :, : self.width]


def decode_mask(
    lengths: torch.Tensor, width: int, dtype: torch.dtype, sliding_window: int | None
) -> torch.Tensor:
    """Additive mask ``[rows, 1, 1, width]``: row ``i`` sees columns ``< lengths[i]`` (its new token included)."""
    cols = torch.arange(width, device=lengths.device)
    allowed = cols[None, :] < lengths[:, None]
    if sliding_window:
        allowed &= cols[None, :] > lengths[:, None] - 1 - sliding_window
    return _additive(allowed[:, None, None, :], dtype)


def prefill_mask(
    lengths: torch.Tensor, width: int, dtype: torch.dtype, sliding_window: int | None
) -> torch.Tensor:
    """Additive mask ``[rows, 1, width, width]``: causal, and keys beyond each row's length hidden."""
    pos = torch.arange(width, device=lengths.device)
    allowed = (pos[None, :] <= pos[:, None])[None] & (pos[None, None, :] < lengths[:, None, None])
    if sliding_window:
        allowed &= (pos[:, None] - pos[None, :] < sliding_window)[None]
    return _additive(allowed[:, None], dtype)


def chunk_mask(
    start: int, length: int, width: int, dtype: torch.dtype, sliding_window: int | None, device: Any
) -> torch.Tensor:
    """Additive mask ``[1, 1, length, width]`` for prompt positions ``start ..`` over columns ``0 .. width-1``."""
    q = torch.arange(start, start + length, device=device)[:, None]
    k = torch.arange(width, device=device)[None, :]
    allowed = k <= q
    if sliding_window:
        allowed &= q - k < sliding_window
    return _additive(allowed[None, None], dtype)


def _additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)
