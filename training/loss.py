"""The training forward and loss: logits only where a label is, attention only within a document.

Two wastes of the plain ``model(**batch).logits`` + cross-entropy forward, both removed here:

* **Logits for every position.** The vocabulary projection and its softmax are the largest single
  cost of a small model's step, and only assistant tokens carry labels (about a quarter of a
  packed row in the bundled data). ``token_loss_sum`` passes transformers a boolean
  ``logits_to_keep`` mask, so ``lm_head`` runs on labelled positions only.
* **Attention across packed documents.** A packed row holds several examples; transformers turns
  ``position_ids`` into a block-diagonal mask and SDPA then scores all L² pairs. The ``adept_packed``
  attention (registered by ``use_packed_attention``) instead runs causal SDPA per document from the
  batch's ``doc_lengths`` (``training.data.collate``): the batch is flattened into one row, no mask
  is built, and each document attends to itself only (the same result, sum(len_i²) work).

``token_loss_sum`` returns the *sum* of next-token cross-entropy over labelled tokens, so callers
divide by the step's label count (a global per-token mean across micro-batches and workers).
"""

from __future__ import annotations

from typing import Any

IGNORE_INDEX = -100
PACKED_ATTENTION = "adept_packed"
_DOC_LENGTHS = "adept_doc_lengths"


def packed_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """Causal SDPA within each document of a flattened packed row (transformers' attention signature).

    ``query`` is ``(1, heads, N, d)``, ``key``/``value`` ``(1, kv_heads, N, d)``; the document
    lengths (summing to N) come as the ``adept_doc_lengths`` keyword. Without them (not a packed
    batch) this is plain SDPA with the mask transformers made.
    """
    import torch
    import torch.nn.functional as F

    lengths = kwargs.get(_DOC_LENGTHS)
    if lengths is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling
        )
    gqa = query.shape[1] != key.shape[1]
    p = dropout if module.training else 0.0
    parts = [
        F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True, scale=scaling, enable_gqa=gqa)
        for q, k, v in zip(
            query.split(lengths, dim=2), key.split(lengths, dim=2), value.split(lengths, dim=2), strict=True
        )
    ]
    out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)
    return out.transpose(1, 2).contiguous(), None


def use_packed_attention(model: Any) -> None:
    """Make ``model`` (a transformers model, or a PEFT model around one) use ``adept_packed`` attention.

    Registered for attention only, not for mask creation, so transformers builds no L x L mask.
    """
    from transformers import AttentionInterface

    AttentionInterface.register(PACKED_ATTENTION, packed_attention)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.config._attn_implementation = PACKED_ATTENTION
    for sub in base.modules():  # sub-configs (and modules that cached the config) follow the top one
        cfg = getattr(sub, "config", None)
        if cfg is not None and hasattr(cfg, "_attn_implementation"):
            cfg._attn_implementation = PACKED_ATTENTION


def shifted_targets(labels: Any) -> Any:
    """Next-token targets: position i predicts label i + 1; the last position predicts nothing."""
    import torch

    targets = torch.full_like(labels, IGNORE_INDEX)
    targets[:, :-1] = labels[:, 1:]
    return targets


def token_loss_sum(model: Any, batch: dict[str, Any], device: Any, *, packed_attention: bool = False) -> Any:
    """Sum of next-token cross-entropy over labelled tokens of one micro-batch (a 0-d float32 tensor).

    ``packed_attention``: the model uses ``adept_packed`` (``use_packed_attention``) and ``batch``
    is packed (``position_ids`` and ``doc_lengths`` from ``collate``): the rows are flattened into
    one and attention stays within each document.
    """
    import torch.nn.functional as F

    targets = shifted_targets(batch["labels"])
    keep = targets != IGNORE_INDEX  # on the host: no device sync to find the labelled positions
    if packed_attention and "doc_lengths" in batch:
        inputs = {
            "input_ids": batch["input_ids"].reshape(1, -1).to(device),
            "position_ids": batch["position_ids"].reshape(1, -1).to(device),
            _DOC_LENGTHS: list(batch["doc_lengths"]),
        }
        keep, targets = keep.reshape(1, -1), targets.reshape(1, -1)
    else:
        inputs = {
            k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "position_ids")
        }
    wanted = targets[keep].to(device)
    logits = model(**inputs, use_cache=False, logits_to_keep=keep.to(device)).logits
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), wanted, reduction="sum")
