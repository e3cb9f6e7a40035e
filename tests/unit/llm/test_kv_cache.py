"""The KV cache grows without holding the old and the new tensors whole at once, and keeps the running rows."""

from __future__ import annotations

import weakref

import torch

from services.llm.kv_cache import SlotKVCache


def test_growing_the_cache_copies_layer_by_layer_not_old_plus_new(monkeypatch):
    layers, heads, dim = 6, 2, 8
    cache = SlotKVCache(
        num_layers=layers,
        kv_heads=heads,
        head_dim=dim,
        dtype=torch.float32,
        device=torch.device("cpu"),
        max_rows=16,
        max_cols=512,
        budget_tokens=16 * 512,
    )
    cache.reserve(4, 128, keep_rows=0)
    for layer in range(layers):
        cache.keys_all[layer].normal_()
        cache.values_all[layer].normal_()
    before = [cache.keys_all[layer][:4, :, :128].clone() for layer in range(layers)]
    old_total = 2 * layers * cache.rows * heads * cache.cols * dim * 4

    live = {"bytes": old_total, "peak": old_total}

    def track(t: torch.Tensor) -> None:
        n = t.nelement() * t.element_size()
        live["bytes"] += n
        live["peak"] = max(live["peak"], live["bytes"])
        weakref.finalize(t, lambda: live.__setitem__("bytes", live["bytes"] - n))

    for t in [*cache.keys_all, *cache.values_all]:
        n = t.nelement() * t.element_size()
        weakref.finalize(t, lambda n=n: live.__setitem__("bytes", live["bytes"] - n))
    del t
    real_zeros = torch.zeros

    def zeros(*args, **kwargs):
        t = real_zeros(*args, **kwargs)
        track(t)
        return t

    monkeypatch.setattr(torch, "zeros", zeros)  # a spy: the real allocation, counted
    cache.reserve(8, 256, keep_rows=4)
    monkeypatch.undo()
    new_total = 2 * layers * cache.rows * heads * cache.cols * dim * 4
    new_layer = 2 * cache.rows * heads * cache.cols * dim * 4
    assert live["peak"] <= max(old_total, new_total) + new_layer < old_total + new_total
    for layer in range(layers):
        assert torch.equal(cache.keys_all[layer][:4, :, :128], before[layer])  # the running rows kept
        assert not cache.keys_all[layer][4:].any() and not cache.keys_all[layer][:, :, 128:].any()
