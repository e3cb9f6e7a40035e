"""The optimized training forward (labelled logits only, per-document attention) equals the plain one.

Reference: the full-vocabulary logits of every position from transformers' own attention (which
builds a block-diagonal mask from packed ``position_ids``), then cross-entropy over labelled tokens.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from training.data import collate, doc_lengths, pack
from training.loss import token_loss_sum, use_packed_attention


def _reference_loss_sum(model, batch) -> torch.Tensor:
    inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "position_ids")}
    logits = model(**inputs, use_cache=False).logits
    return F.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.size(-1)),
        batch["labels"][:, 1:].reshape(-1),
        reduction="sum",
    )


def _examples(vocab: int, n: int = 9) -> list[tuple[list[int], list[int]]]:
    rng = random.Random(0)
    out = []
    for _ in range(n):
        length = rng.randint(5, 40)
        ids = [rng.randrange(3, vocab) for _ in range(length)]
        cut = rng.randint(1, length - 1)
        out.append((ids, [-100] * cut + ids[cut:]))  # prompt masked, completion labelled
    return out


def _model(tiny_phi3: Path):
    from training.builders import build_lora_model

    model = build_lora_model(tiny_phi3, rank=4, alpha=8, dropout=0.0, dtype="float32", seed=0)
    for name, p in model.named_parameters():  # non-zero LoRA B, so adapter gradients are not trivial
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)
    return model


def _grads(model) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out


def test_doc_lengths_follow_position_resets() -> None:
    pos = torch.tensor([[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 0, 1]])
    assert doc_lengths(pos) == [3, 2, 1, 4, 2]


@pytest.mark.parametrize("packed", [True, False])
def test_optimized_loss_and_gradients_equal_the_reference(tiny_phi3: Path, packed: bool) -> None:
    model = _model(tiny_phi3)
    model.train()
    vocab = model.config.vocab_size
    examples = _examples(vocab)
    if packed:
        rows = pack(examples, 64)
        assert len(rows) >= 3 and any(sum(r.position_ids == 0) > 1 for r in rows)  # several docs per row
        batch = collate(rows, pad_id=0, packed=True)
    else:
        import numpy as np

        from training.data import Row

        rows = [Row(np.asarray(i, np.int32), np.asarray(lab, np.int32), np.arange(len(i), dtype=np.int32))
                for i, lab in examples]  # fmt: skip
        batch = collate(rows, pad_id=0, packed=False)
    ref = _reference_loss_sum(model, batch)
    ref.backward()
    ref_grads = _grads(model)
    if packed:
        use_packed_attention(model)
    got = token_loss_sum(model, batch, torch.device("cpu"), packed_attention=packed)
    got.backward()
    got_grads = _grads(model)
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)
    assert ref_grads.keys() == got_grads.keys() and ref_grads
    for name, g in ref_grads.items():
        torch.testing.assert_close(got_grads[name], g, rtol=1e-4, atol=1e-6, msg=name)


def test_a_batch_without_labels_has_zero_loss(tiny_phi3: Path) -> None:
    model = _model(tiny_phi3)
    use_packed_attention(model)
    rows = pack([([5, 6, 7], [-100, -100, -100])], 16)
    batch = collate(rows, pad_id=0, packed=True)
    assert token_loss_sum(model, batch, torch.device("cpu"), packed_attention=True).item() == 0.0
