"""Highlights: the sentences of retrieved chunks that answer a query best (extractive captions).

A chunk holds several facts (a tariff section lists three charges); a small model shown the whole
chunk often copies the wrong one. A search may therefore rank each hit's sentences against the
query — the embedding model's cosine similarity plus a lexical BM25 term over the hits' sentences —
and return the best as ``SearchHit.highlights``: character spans into the hit's text, best first.
The LLM replica can then put only those sentences into a small model's prompt
(``llm.rag_passage_sentences``), and a citation quotes what the answer was drawn from.
"""

from __future__ import annotations

import re
from typing import Any

from services.retrieval import bm25

# A sentence ends at . ! or ? followed by space (a decimal point is not), unless the word before
# it is an abbreviation or an initial.
_SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s+(?=\S)")
_ABBREVIATION_RE = re.compile(
    r"(?:\b(?:e\.g|i\.e|etc|vs|approx|incl|no|nos|fig|figs|sec|art|dr|mr|mrs|ms|st|inc|ltd|co|corp)\.|"
    r"\b[A-Z]\.)$",
    re.IGNORECASE,
)
# A list item's marker ("- ", "* ", "1. ", "2) "), left out of the sentence it introduces.
_MARKER_RE = re.compile(r"[ \t]*(?:[-*+\u2022]|\d{1,3}[.)])[ \t]+")
_HEADING_RE = re.compile(r"[ \t]*#{1,6}[ \t]")
# Weight of the lexical term (BM25 over the candidate sentences, scaled to at most 1) beside the
# cosine similarity (-1..1): enough to prefer the sentence naming the question's codes and
# numbers among sentences the embedding model finds equally close (measured on the demo set).
LEXICAL_WEIGHT = 0.3


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` character spans of the sentences of ``text``, in order.

    Paragraphs (blank-line separated) and list items are split first, then sentence ends within
    them; a sentence wrapped over several lines stays one span. Headings, list markers and
    surrounding whitespace are left out, so ``text[start:end]`` is the sentence itself.
    """
    items: list[list[int]] = []  # [start, end] of each paragraph or list item
    pos = 0
    new_item = True
    for line in text.split("\n"):
        start, pos = pos, pos + len(line) + 1
        if not line.strip():
            new_item = True
            continue
        if _HEADING_RE.match(line):
            new_item = True
            continue
        marker = _MARKER_RE.match(line)
        if marker or new_item or not items:
            items.append([start + (marker.end() if marker else 0), start + len(line)])
        else:
            items[-1][1] = start + len(line)  # a wrapped line continues the item
        new_item = False
    spans: list[tuple[int, int]] = []
    for a, b in items:
        body = text[a:b]
        cut = 0
        ends = [m for m in _SENTENCE_END_RE.finditer(body) if not _ABBREVIATION_RE.search(body[: m.start()])]
        for m in [*ends, None]:
            end = m.start() if m is not None else len(body)
            piece = body[cut:end]
            lead = len(piece) - len(piece.lstrip())
            if piece.strip():
                spans.append((a + cut + lead, a + cut + len(piece.rstrip())))
            if m is not None:
                cut = m.end()
    return spans


def sentence_text(text: str, span: tuple[int, int]) -> str:
    """The sentence at ``span`` on one line (a sentence wrapped in the source is joined with spaces)."""
    return " ".join(text[span[0] : span[1]].split())


def score_sentences(query: str, query_vector: Any, sentences: list[str], vectors: Any) -> list[float]:
    """Relevance of each sentence to the query: cosine similarity of the (unit) embeddings plus
    ``LEXICAL_WEIGHT`` times BM25 over ``sentences`` taken as the corpus, scaled to at most 1."""
    if not sentences:
        return []
    cosine = (vectors @ query_vector).tolist()
    lexical = bm25.bm25_scores(query, sentences)
    top = max(lexical) or 1.0
    return [c + LEXICAL_WEIGHT * (lx / top) for c, lx in zip(cosine, lexical, strict=True)]
