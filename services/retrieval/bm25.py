"""BM25 computed by the platform, so a score never depends on how Milvus lays rows out in segments.

Milvus Lite (3.2.x) scores its BM25 function with each sealed segment's own statistics, so the
same chunk scores differently depending on which flush it landed in (ENVIRONMENT.md). Here BM25
is split in two halves whose inner product is the BM25 score:

* the **document side**, fixed when a chunk is written: for each term of the chunk,
  ``tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / PIVOT))``, stored as a sparse vector keyed by the
  term's hash. The length normalization pivots on a constant rather than the running average
  length, so a stored vector never needs rewriting (chunks are bounded in length by the chunker,
  so a fixed pivot is what the average would converge to anyway);
* the **query side**, built per search: each query term weighted by its IDF,
  ``ln(1 + (N - df + 0.5) / (df + 0.5))``, from the *tenant's* chunk count ``N`` and document
  frequencies ``df`` (``TermStats``, kept by the store on every insert and delete).

Milvus then ranks by exact inner product on the sparse field (metric ``IP``), which is the same
in one segment or a hundred, on Milvus Lite or a server. Another tenant's chunks never change a
tenant's IDF.

The analyzer is Unicode word tokens (letters and digits), lowercased and NFKC-folded: part codes
such as ``PU-1042`` become ``pu`` and ``1042``, like Milvus' standard analyzer; Lucene's English
stop words are dropped. They carry almost no IDF, but their posting lists are the longest by far
(``the`` is in nearly every chunk) and Milvus Lite walks a query term's postings in Python.
"""

from __future__ import annotations

import math
import re
import unicodedata
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping

K1 = 1.2
B = 0.75
PIVOT_TOKENS = 64.0  # length normalization pivot (analyzer tokens); a constant so vectors are final
MAX_TOKEN_CHARS = 64  # longer "words" (hashes, base64) are cut: they match only themselves anyway
_TOKEN_RE = re.compile(r"[^\W_]+", re.UNICODE)
# Lucene's EnglishAnalyzer stop set (also Elasticsearch's `_english_`).
STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "for",
        "if",
        "in",
        "into",
        "is",
        "it",
        "no",
        "not",
        "of",
        "on",
        "or",
        "such",
        "that",
        "the",
        "their",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "will",
        "with",
    ]
)


def tokens(text: str) -> list[str]:
    """The analyzer: lowercased Unicode word tokens (letters and digits; ``_`` and punctuation split),
    English stop words left out."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return [t[:MAX_TOKEN_CHARS] for t in _TOKEN_RE.findall(folded) if t not in STOP_WORDS]


def term_id(token: str) -> int:
    """The sparse dimension of a token: CRC-32 (stable across processes, unlike ``hash``).

    Milvus sparse indices are uint32 below 2**32 - 1. Two tokens may share an id (about one pair
    in 10^5 distinct terms); both halves of BM25 then treat them as one term, consistently.
    """
    return zlib.crc32(token.encode()) % 0xFFFFFFFF


def term_counts(text: str) -> Counter[int]:
    """Term id -> frequency in ``text``."""
    return Counter(term_id(t) for t in tokens(text))


def document_vector(counts: Mapping[int, int]) -> dict[int, float]:
    """The document half of BM25 for a chunk's term counts (empty for a chunk without words)."""
    length = sum(counts.values())
    norm = K1 * (1 - B + B * length / PIVOT_TOKENS)
    return {t: tf * (K1 + 1) / (tf + norm) for t, tf in counts.items()}


def idf(n_docs: int, df: int) -> float:
    """BM25's IDF (Lucene's, never negative: statistics read mid-update may have ``df > n_docs``)."""
    n_docs = max(n_docs, df)
    return math.log(1 + (n_docs - df + 0.5) / (df + 0.5))


def query_vector(text: str, n_docs: int, df: Mapping[int, int]) -> dict[int, float]:
    """The query half: each term that some chunk of the tenant has, weighted by IDF times its count.

    Terms no chunk has cannot match and are left out (Milvus refuses an empty sparse vector only
    when it has no entries at all; the caller skips the sparse search then).
    """
    out: dict[int, float] = {}
    for t, qtf in term_counts(text).items():
        d = df.get(t, 0)
        if d > 0:
            out[t] = qtf * idf(n_docs, d)
    return out


def bm25_scores(query: str, docs: Iterable[str]) -> list[float]:
    """Reference BM25 of ``query`` against ``docs`` taken as the whole corpus (tests, checks)."""
    counts = [term_counts(d) for d in docs]
    df: Counter[int] = Counter()
    for c in counts:
        df.update(c.keys())
    q = query_vector(query, len(counts), df)
    return [sum(w * document_vector(c).get(t, 0.0) for t, w in q.items()) for c in counts]
