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

# Weight of the lexical term (BM25 over the candidate sentences, scaled to at most 1) beside the
# cosine similarity (-1..1): the sentence naming the question's codes and numbers wins over one the
# embedding model finds about as close. Chosen on the demo's tune questions (answer in the best
# sentence of the best passage, with the compound terms below and passages ordered by best sentence):
# 0.90 at 0.3, 0.95 at 0.5, 1.0 and 2.0.
LEXICAL_WEIGHT = 1.0
# Hyphenated and coded terms ("on-peak", "NM-1", "RT-2") are also matched whole: the analyzer splits
# them into parts, and "on" is a stop word, so "on-peak" and "off-peak" would otherwise both be "peak".
_COMPOUND_RE = re.compile(r"[^\W_]+(?:[-/][^\W_]+)+", re.UNICODE)


def states_a_fact(sentence: str) -> bool:
    """False for a sentence that only introduces what follows ("The distances are:"): ranked after
    the sentences that state something, however many of the query's words it repeats."""
    return not sentence.rstrip().endswith(":")


def _with_compounds(text: str) -> str:
    """``text`` plus each hyphenated or coded term joined into one word, for the lexical term."""
    joined = [re.sub(r"[-/]", "", m.group()) for m in _COMPOUND_RE.finditer(text)]
    return f"{text} {' '.join(joined)}" if joined else text


def score_sentences(query: str, query_vector: Any, sentences: list[str], vectors: Any) -> list[float]:
    """Relevance of each sentence to the query: cosine similarity of the (unit) embeddings plus
    ``LEXICAL_WEIGHT`` times BM25 over ``sentences`` taken as the corpus (compound terms also
    matched whole), scaled to at most 1."""
    if not sentences:
        return []
    cosine = (vectors @ query_vector).tolist()
    lexical = bm25.bm25_scores(_with_compounds(query), [_with_compounds(s) for s in sentences])
    top = max(lexical) or 1.0
    return [c + LEXICAL_WEIGHT * (lx / top) for c, lx in zip(cosine, lexical, strict=True)]
