"""Per-row token sampling and incremental detokenization with stop strings."""

from __future__ import annotations

import random
from typing import Any

import torch


def make_generator(seed: int | None) -> torch.Generator:
    """A CPU generator per request, so a seeded request samples the same tokens in any batch."""
    g = torch.Generator()
    # torch takes a 64-bit seed; fold anything larger (or negative) into range instead of raising.
    g.manual_seed((seed if seed is not None else random.getrandbits(63)) % 2**63)
    return g


def sample(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> int:
    """Next token from one row of logits: greedy at temperature 0, else temperature + nucleus sampling."""
    if temperature <= 0:
        return int(torch.argmax(logits).item())
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
        drop = torch.cumsum(sorted_probs, dim=-1) - sorted_probs >= top_p
        sorted_probs[drop] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator).item())


class TextStream:
    """Turns generated token ids into text deltas, holding back what might still become a stop string.

    Text is decoded from all generated ids each time (byte-level BPE splits characters across
    tokens), a trailing replacement character waits for the rest of its bytes, and a suffix that
    is a prefix of a stop string waits until it is known not to be one.
    """

    def __init__(self, tokenizer: Any, stop: list[str]) -> None:
        self.tokenizer = tokenizer
        self.stop = stop
        self.ids: list[int] = []
        self.emitted = 0
        self.text = ""

    def push(self, token_id: int) -> tuple[str, bool]:
        """Add a token; return ``(delta, stopped)``. On a stop string the text ends just before it."""
        self.ids.append(token_id)
        self.text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        hits = [i for i in (self.text.find(s, max(0, self.emitted - len(s))) for s in self.stop) if i >= 0]
        if hits:
            end = min(hits)
            delta, self.text = self.text[self.emitted : end], self.text[:end]
            self.emitted = end
            return delta, True
        end = len(self.text)
        if self.text.endswith("\ufffd"):
            end -= 1
        hold = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, end), 0, -1):
                if self.text[:end].endswith(s[:k]):
                    hold = max(hold, k)
                    break
        end = max(self.emitted, end - hold)
        delta = self.text[self.emitted : end]
        self.emitted = end
        return delta, False

    def flush(self) -> str:
        """The rest of the text (at the end of generation)."""
        delta = self.text[self.emitted :]
        self.emitted = len(self.text)
        return delta
