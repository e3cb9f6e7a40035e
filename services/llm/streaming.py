"""Token ids to streamed text: incremental detokenization for every script, and stop strings.

Decoding token by token breaks characters: a byte-fallback tokenizer (Phi-3's, Llama's) spells
``€`` as three tokens ``<0xE2> <0x82> <0xAC>`` and decodes a prefix ending inside it to one
U+FFFD per pending byte; byte-level BPE (SmolLM2's, GPT-2's) splits Thai, CJK and emoji across
tokens the same way. ``IncrementalDetokenizer`` keeps two offsets into the ids (as HF TGI's
``decode_token`` and vLLM's ``detokenize_incrementally`` do): it decodes only the few tokens
from ``prefix_offset`` on, emits the text beyond what ``prefix_offset:read_offset`` decoded to,
and holds everything back while the decoded window ends in U+FFFD. Work per token is the size
of that window, so a whole answer costs O(total), not O(n²) re-decoding, and the concatenated
deltas equal ``tokenizer.decode(all_ids)``.

The prompt's last tokens are the detokenizer's starting context (as vLLM primes its decode
stream): SentencePiece decoders (Phi-3, Llama, Mistral) strip the first space of any decode, so
a first generated token ``▁Paris`` decoded alone is ``"Paris"`` and a completion of ``"... is"``
would read ``"isParis"``; decoded after the prompt's tail it is ``" Paris"``. Both engines stream
through this one class, so they return the same text for the same tokens.
"""

from __future__ import annotations

from typing import Any

REPLACEMENT = "\ufffd"


def token_text_of(tokenizer: Any) -> Any:
    """``token id -> its text`` with the leading space a SentencePiece decoder strips from a lone token.

    ``decode([▁grid])`` is ``"grid"``; decoded after an anchor token and the anchor's text cut off,
    it is ``" grid"`` (byte-level BPE keeps the space either way). Log-probabilities name tokens
    this way on both engines, so their texts add up to the generated text.
    """
    anchor = tokenizer("a", add_special_tokens=False)["input_ids"][-1:]

    def decode(ids: list[int]) -> str:
        return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    head = decode(anchor)

    def text(token_id: int) -> str:
        both = decode([*anchor, token_id])
        return both[len(head) :] if head and both.startswith(head) else decode([token_id])

    return text


class IncrementalDetokenizer:
    """Decodes a growing list of token ids into text deltas that never split a character.

    Args:
        tokenizer: a transformers tokenizer.
        skip_special_tokens: leave special tokens (end-of-turn markers) out of the text.
        prompt_ids: the prompt; its last few tokens are the context the first tokens decode after.
    """

    def __init__(
        self, tokenizer: Any, *, skip_special_tokens: bool = True, prompt_ids: list[int] | None = None
    ) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = self._context(list(prompt_ids or []))
        self.prefix_offset = 0  # the window decoded each step starts here
        self.read_offset = len(self.ids)  # text of ids[prefix_offset:read_offset] has been emitted
        # decode(ids[prefix_offset:read_offset]), kept so each step decodes once
        self._prefix_text = self._decode(self.ids) if self.ids else ""

    def _context(self, prompt: list[int]) -> list[int]:
        """The prompt's shortest tail of 4+ tokens that decodes to whole characters (vLLM's choice)."""
        for n in range(min(4, len(prompt)), min(24, len(prompt)) + 1):
            if REPLACEMENT not in self._decode(prompt[-n:]):
                return prompt[-n:]
        return []

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(
            ids, skip_special_tokens=self.skip_special_tokens, clean_up_tokenization_spaces=False
        )

    def push(self, token_id: int) -> str:
        """Add a token; return the text it completes (``""`` while a character is still incomplete)."""
        self.ids.append(token_id)
        return self._advance(final=False)

    def flush(self) -> str:
        """Everything not emitted yet, incomplete characters included (as U+FFFD), at the end of generation."""
        return self._advance(final=True)

    def _advance(self, *, final: bool) -> str:
        if self.read_offset == len(self.ids):
            return ""
        new_text = self._decode(self.ids[self.prefix_offset :])
        if not final and (len(new_text) <= len(self._prefix_text) or new_text.endswith(REPLACEMENT)):
            return ""  # a character is still open (or the token decoded to nothing yet): wait
        delta = new_text[len(self._prefix_text) :]
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        self._prefix_text = self._decode(self.ids[self.prefix_offset : self.read_offset])
        return delta


class TextStream:
    """Text deltas of one generation, holding back what might still become a stop string.

    Stop strings are found on decoded text (so they work across token boundaries); the output
    ends just before the first one. Only the not-yet-emitted tail is searched: text already
    emitted can never start a stop string, because a suffix that is a prefix of one is held back.
    """

    def __init__(self, tokenizer: Any, stop: list[str], *, prompt_ids: list[int] | None = None) -> None:
        self.detokenizer = IncrementalDetokenizer(tokenizer, prompt_ids=prompt_ids)
        self.stop = stop
        self.pending = ""  # decoded, not emitted: a possible start of a stop string
        self.stopped = False

    def push(self, token_id: int) -> tuple[str, bool]:
        """Add a token; return ``(delta, stopped)``. On a stop string the text ends just before it."""
        return self._emit(self.detokenizer.push(token_id), final=False)

    def flush(self) -> tuple[str, bool]:
        """The rest of the text at the end of generation; ``stopped`` if it completed a stop string."""
        return self._emit(self.detokenizer.flush(), final=True)

    def _emit(self, text: str, *, final: bool) -> tuple[str, bool]:
        if self.stopped:
            return "", True
        self.pending += text
        hits = [i for i in (self.pending.find(s) for s in self.stop) if i >= 0]
        if hits:
            self.stopped = True
            delta, self.pending = self.pending[: min(hits)], ""
            return delta, True
        hold = 0 if final else _stop_prefix_len(self.pending, self.stop)
        cut = len(self.pending) - hold
        delta, self.pending = self.pending[:cut], self.pending[cut:]
        return delta, False


def _stop_prefix_len(text: str, stops: list[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of some stop string."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best
