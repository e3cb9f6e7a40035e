"""Next-token sampling for a whole batch at once, on the model's device.

Greedy, temperature and nucleus (top-p) rows are sampled in one vectorized pass: softmax with
per-row temperatures, a per-row top-p mask, then the exponential race ``argmax(p / q)`` with
``q ~ Exp(1)`` (what vLLM's sampler does), which draws from ``p`` exactly. Each request's noise
comes from its own ``torch.Generator``, so a seeded request samples the same tokens in any batch.
One device-to-host copy per step returns the tokens and which rows had non-finite logits.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator per request on ``device``; huge or negative seeds fold into torch's 64-bit range."""
    g = torch.Generator(device=device)
    g.manual_seed((seed if seed is not None else random.getrandbits(63)) % 2**63)
    return g


def adjust_logits(
    logits: torch.Tensor,
    generated: Sequence[Sequence[int]],
    presence: Sequence[float],
    frequency: Sequence[float],
    biases: Sequence[dict[int, float] | None],
) -> torch.Tensor:
    """OpenAI's penalties and ``logit_bias`` per row: ``logit - presence * [seen] - frequency * count + bias``.

    Penalties count the tokens generated so far (as OpenAI and vLLM do). Rows with nothing to
    adjust are left as they are; the result is a new float32 tensor when anything changes.
    """
    rows = [i for i in range(len(generated)) if presence[i] or frequency[i] or biases[i]]
    if not rows:
        return logits
    logits = logits.float().clone()
    vocab = logits.shape[-1]
    for i in rows:
        if (presence[i] or frequency[i]) and generated[i]:
            counts = torch.bincount(torch.tensor(generated[i], device=logits.device), minlength=vocab)[:vocab]
            logits[i] -= frequency[i] * counts + presence[i] * (counts > 0)
        if biases[i]:
            ids = torch.tensor(list(biases[i]), device=logits.device)
            logits[i, ids] += torch.tensor(list(biases[i].values()), device=logits.device)
    return logits


def sample_batch(
    logits: torch.Tensor,
    temperatures: Sequence[float],
    top_ps: Sequence[float],
    generators: Sequence[torch.Generator],
    finite: torch.Tensor | None = None,
) -> tuple[list[int], list[bool]]:
    """Next token of every row of ``logits`` ``[rows, vocab]``, and whether that row's logits were finite.

    A row with temperature 0 is greedy. Rows with NaN or infinite logits get a token anyway (so
    the batch shape holds) but are reported, so the caller fails those requests alone. A caller
    that masked logits to ``-inf`` (an output grammar) passes ``finite`` computed before masking.
    """
    device = logits.device
    if finite is None:
        finite = torch.isfinite(logits).all(dim=-1)
    greedy = torch.argmax(logits, dim=-1)
    sampled_rows = [i for i, t in enumerate(temperatures) if t > 0]
    if sampled_rows:
        idx = torch.tensor(sampled_rows, device=device)
        temps = torch.tensor([temperatures[i] for i in sampled_rows], device=device, dtype=torch.float32)
        probs = torch.softmax(logits.index_select(0, idx).float() / temps[:, None], dim=-1)
        tops = [top_ps[i] for i in sampled_rows]
        if any(p < 1.0 for p in tops):
            sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
            top = torch.tensor(tops, device=device, dtype=torch.float32)[:, None]
            # Drop tokens outside the smallest prefix whose mass reaches top_p (the first always stays).
            drop = torch.cumsum(sorted_probs, dim=-1) - sorted_probs >= top
            probs = probs.scatter(1, order, sorted_probs.masked_fill(drop, 0.0))
        noise = torch.empty_like(probs)
        for k, i in enumerate(sampled_rows):
            noise[k].exponential_(generator=generators[i])  # per request: same draws in any batch
        noise.clamp_(min=torch.finfo(noise.dtype).tiny)  # an exact 0 would turn p/q into NaN
        chosen = torch.argmax(probs / noise, dim=-1)
        greedy = greedy.index_copy(0, idx, chosen)
    both = torch.stack([greedy, finite.long()]).tolist()  # one device sync for the whole batch
    return both[0], [bool(f) for f in both[1]]
