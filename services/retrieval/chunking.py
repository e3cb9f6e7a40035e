"""Token-aware chunking with the embedding model's own tokenizer.

Chunks never cross a heading (each carries its heading path), prefer paragraph and then
sentence boundaries, repeat up to ``overlap`` tokens of whole trailing units, and are never
longer than the model can embed (checked with the real tokenizer after packing).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from services.retrieval.ingest import ParsedDocument

_SENTENCE_RE = re.compile(r"(?<=[.!?;:])\s+(?=\S)")


@dataclass(frozen=True)
class Chunk:
    index: int
    text: str
    heading_path: tuple[str, ...]
    tokens: int


@dataclass(frozen=True)
class _Unit:
    text: str
    tokens: int
    joiner: str  # what goes before it when it follows another unit in the same chunk


class Chunker:
    """Split documents into chunks of at most ``chunk_size`` tokens.

    Args:
        tokenizer: A Hugging Face (fast) tokenizer — the embedding model's own.
        chunk_size: Target tokens per chunk.
        overlap: Tokens of trailing whole units repeated at the start of the next chunk.
        max_tokens: Hard limit (the model's max sequence length minus its special tokens).
    """

    def __init__(self, tokenizer: Any, chunk_size: int, overlap: int, max_tokens: int) -> None:
        if overlap >= chunk_size:
            raise ValueError(f"overlap ({overlap}) must be smaller than chunk_size ({chunk_size})")
        self.tokenizer = tokenizer
        self.size = max(8, min(chunk_size, max_tokens))
        self.overlap = min(overlap, self.size // 2)
        self.max_tokens = max_tokens

    def count(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        enc = self.tokenizer(texts, add_special_tokens=False, return_attention_mask=False)
        return [len(ids) for ids in enc["input_ids"]]

    def chunk(self, doc: ParsedDocument) -> list[Chunk]:
        chunks: list[Chunk] = []
        for section in doc.sections:
            for text, tokens in self._pack(self._units(section.paragraphs)):
                chunks.append(Chunk(len(chunks), text, section.heading_path, tokens))
        return chunks

    def _units(self, paragraphs: list[str]) -> list[_Unit]:
        units: list[_Unit] = []
        for para, n in zip(paragraphs, self.count(paragraphs), strict=True):
            if n <= self.size:
                units.append(_Unit(para, n, "\n\n"))
                continue
            sentences = _SENTENCE_RE.split(para)
            for i, (sent, m) in enumerate(zip(sentences, self.count(sentences), strict=True)):
                joiner = "\n\n" if i == 0 else " "
                if m <= self.size:
                    units.append(_Unit(sent, m, joiner))
                else:
                    units.extend(
                        _Unit(w, t, joiner if j == 0 else " ") for j, (w, t) in enumerate(self._windows(sent))
                    )
        return units

    def _windows(self, text: str) -> list[tuple[str, int]]:
        """Cut one over-long sentence into token windows (by character offsets, so text stays verbatim)."""
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        step = max(1, self.size - self.overlap)
        out = []
        for start in range(0, len(offsets), step):
            piece = offsets[start : start + self.size]
            out.append((text[piece[0][0] : piece[-1][1]], len(piece)))
            if start + self.size >= len(offsets):
                break
        return out

    def _pack(self, units: list[_Unit]) -> list[tuple[str, int]]:
        packed: list[list[_Unit]] = []
        current: list[_Unit] = []
        total = 0
        for unit in units:
            if current and total + unit.tokens > self.size:
                packed.append(current)
                current = self._overlap_tail(current, unit.tokens)
                total = sum(u.tokens for u in current)
            current.append(unit)
            total += unit.tokens
        if current:
            packed.append(current)
        out = []
        for group in packed:
            text = group[0].text + "".join(u.joiner + u.text for u in group[1:])
            out.extend(self._enforce_limit(text))
        return out

    def _overlap_tail(self, previous: list[_Unit], next_tokens: int) -> list[_Unit]:
        tail: list[_Unit] = []
        budget = min(self.overlap, self.size - next_tokens)
        for unit in reversed(previous[1:] if len(previous) > 1 else []):
            if unit.tokens > budget:
                break
            tail.insert(0, unit)
            budget -= unit.tokens
        return tail

    def _enforce_limit(self, text: str) -> list[tuple[str, int]]:
        # Joining units can shift token counts by a few with some tokenizers: re-count with the real one.
        n = self.count([text])[0]
        if n <= self.max_tokens:
            return [(text, n)]
        return self._windows(text)
