"""Answer, retrieval and citation metrics, latency percentiles and seeded bootstrap intervals.

Every metric is a pure, deterministic function of its inputs. Per-question metrics return
``None`` when they do not apply (no gold answer, no reference documents, no citations), and
``mean`` skips those, so a question never counts as a zero for a metric it cannot have.

Definitions:
  * normalisation (SQuAD): lower-case, drop punctuation, drop the articles a/an/the,
    collapse whitespace;
  * exact match: normalised prediction == normalised answer;
  * contains: the normalised answer occurs in the normalised prediction (a lenient
    exact match for chatty models that wrap the right answer in a sentence);
  * token F1 (SQuAD): harmonic mean of token precision and recall, tokens counted with
    multiplicity;
  * ROUGE-L: F1 of the longest common subsequence of normalised tokens;
  * hit@k: 1 if any of the top-k retrieved chunks belongs to a reference document;
  * MRR: 1 / rank of the first retrieved chunk from a reference document (0 if none);
  * citation precision: share of the distinct cited documents that are reference documents;
  * groundedness: share of the answer's content tokens (normalised, stop-words and tokens
    copied from the question removed) that occur in the passages retrieved for the question;
  * format compliance: 1 if the stripped answer matches the expected regular expression (or
    parses as JSON valid against the expected schema), else 0;
  * terms: share of the required terms the answer uses, 0 if it uses a forbidden term
    (case-insensitive, on word boundaries where the term starts/ends with a letter or digit).
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import PurePosixPath

_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)

# A small, fixed English stop-word list (deterministic; no NLTK download).
STOP_WORDS = frozenset(
    [
        "a",
        "about",
        "above",
        "after",
        "again",
        "against",
        "all",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "few",
        "for",
        "from",
        "further",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "herself",
        "him",
        "himself",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "just",
        "me",
        "more",
        "most",
        "my",
        "myself",
        "no",
        "nor",
        "not",
        "now",
        "of",
        "off",
        "on",
        "once",
        "only",
        "or",
        "other",
        "our",
        "ours",
        "ourselves",
        "out",
        "over",
        "own",
        "same",
        "she",
        "should",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "theirs",
        "them",
        "themselves",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "very",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
        "yourself",
        "yourselves",
        "per",
        "also",
        "may",
        "must",
        "each",
        "every",
        "any",
    ]
)


# -- answers ---------------------------------------------------------------------------------------
def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower-case, strip punctuation and articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    text = _ARTICLES_RE.sub(" ", text)
    return " ".join(text.split())


def tokens(text: str) -> list[str]:
    """Normalised tokens."""
    return normalize_answer(text).split()


def exact_match(prediction: str, answer: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(answer))


def contains(prediction: str, answer: str) -> float:
    """1.0 if the normalised answer appears, on token boundaries, in the normalised prediction."""
    gold = normalize_answer(answer)
    return float(bool(gold) and f" {gold} " in f" {normalize_answer(prediction)} ")


def token_f1(prediction: str, answer: str) -> float:
    """SQuAD token F1. Two empty strings match (1.0); one empty string scores 0.0."""
    pred, gold = tokens(prediction), tokens(answer)
    if not pred or not gold:
        return float(pred == gold)
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (dynamic programming, O(len(a)·len(b)) time, O(len(b)) memory)."""
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, start=1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, answer: str) -> float:
    """ROUGE-L F1 over normalised tokens."""
    pred, gold = tokens(prediction), tokens(answer)
    if not pred or not gold:
        return float(pred == gold)
    lcs = lcs_length(pred, gold)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(gold)
    return 2 * precision * recall / (precision + recall)


# -- retrieval and citations -----------------------------------------------------------------------
def document_matches(retrieved_id: str, reference_id: str) -> bool:
    """Whether a retrieved document id names the reference document.

    Equal ids match; so do ids whose file stems match, so ``corpus/safety-manual.md`` (an id
    derived from an uploaded path) matches the reference ``safety-manual`` (the file-stem
    convention of question sets).
    """
    if retrieved_id == reference_id:
        return True
    return _stem(retrieved_id) == _stem(reference_id)


def _stem(doc_id: str) -> str:
    return PurePosixPath(doc_id.replace("\\", "/")).stem.lower()


def _is_reference(doc_id: str, references: Iterable[str]) -> bool:
    return any(document_matches(doc_id, ref) for ref in references)


def hit_at_k(retrieved: Sequence[str], references: Sequence[str], k: int) -> float | None:
    """1.0 if a reference document is among the first ``k`` retrieved document ids; None without references."""
    if not references:
        return None
    return float(any(_is_reference(d, references) for d in retrieved[:k]))


def reciprocal_rank(retrieved: Sequence[str], references: Sequence[str]) -> float | None:
    """1 / rank of the first retrieved id from a reference document (0.0 if none); None without references."""
    if not references:
        return None
    for rank, doc_id in enumerate(retrieved, start=1):
        if _is_reference(doc_id, references):
            return 1.0 / rank
    return 0.0


def citation_precision(cited: Sequence[str], references: Sequence[str]) -> float | None:
    """Share of distinct cited documents that are reference documents; None without citations or references."""
    docs = list(dict.fromkeys(cited))
    if not docs or not references:
        return None
    return sum(_is_reference(d, references) for d in docs) / len(docs)


def content_tokens(text: str) -> list[str]:
    """Normalised tokens with stop-words removed."""
    return [t for t in tokens(text) if t not in STOP_WORDS]


def groundedness(prediction: str, passages: Sequence[str], question: str = "") -> float | None:
    """Share of the prediction's content tokens that occur in ``passages``; None if either is empty.

    Tokens the answer merely repeats from ``question`` are left out: echoing the question is
    not support from the documents, and would make any answer look grounded.
    """
    echoed = set(tokens(question))
    content = [t for t in content_tokens(prediction) if t not in echoed]
    if not content or not passages:
        return None
    vocabulary = set(tokens(" ".join(passages)))
    return sum(t in vocabulary for t in content) / len(content)


# -- expectations (what fine-tuning is for) --------------------------------------------------------
def format_compliance(
    prediction: str, pattern: str | None = None, schema: dict | None = None
) -> float | None:
    """1.0 if the answer matches ``pattern`` (``re.search`` on the stripped text) or is JSON valid
    against ``schema``; None when neither is given."""
    text = prediction.strip()
    if pattern is not None:
        return float(re.search(pattern, text, flags=re.DOTALL) is not None)
    if schema is not None:
        import json

        import jsonschema

        try:
            jsonschema.validate(json.loads(text), schema)
        except (ValueError, jsonschema.ValidationError):
            return 0.0
        return 1.0
    return None


def _has_term(text: str, term: str) -> bool:
    left = r"\b" if term[:1].isalnum() else ""
    right = r"\b" if term[-1:].isalnum() else ""
    return re.search(left + re.escape(term) + right, text, flags=re.IGNORECASE) is not None


def term_score(prediction: str, required: Sequence[str] = (), forbidden: Sequence[str] = ()) -> float | None:
    """Share of the required terms the answer uses; 0 when it uses a forbidden one; None without terms.

    With forbidden terms only: 1 when it uses none. (Absent forbidden terms earn nothing when there are
    required ones: an answer that never names the house's vocabulary must not score for staying polite.)
    """
    if not required and not forbidden:
        return None
    if any(_has_term(prediction, t) for t in forbidden):
        return 0.0
    if not required:
        return 1.0
    return sum(_has_term(prediction, t) for t in required) / len(required)


# -- aggregation -----------------------------------------------------------------------------------
def mean(values: Iterable[float | None]) -> float | None:
    """Mean of the values that are not None; None when there are none."""
    xs = [v for v in values if v is not None]
    return sum(xs) / len(xs) if xs else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """``q``-th percentile (0..100) with linear interpolation between order statistics (NumPy's default)."""
    xs = sorted(values)
    if not xs:
        return None
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def bootstrap_ci(
    values: Sequence[float],
    *,
    statistic: Callable[[Sequence[float]], float] | None = None,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean (or ``statistic``); seeded, so reruns agree."""
    import numpy as np

    xs = np.asarray([v for v in values if v is not None], dtype=float)
    if xs.size == 0:
        return None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, xs.size, size=(n_resamples, xs.size))
    samples = xs[idx]
    stats = samples.mean(axis=1) if statistic is None else np.apply_along_axis(statistic, 1, samples)
    alpha = (1 - confidence) / 2
    return float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))


def paired_bootstrap(
    a: Sequence[float | None],
    b: Sequence[float | None],
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float | int | bool] | None:
    """Bootstrap the mean paired difference ``a - b`` over questions scored on both routes.

    Returns ``{"diff", "low", "high", "p_value", "n", "significant"}``: ``p_value`` is the
    two-sided share of resampled differences on the other side of zero, ``significant`` is true
    when the interval excludes zero. None when no question has both scores.
    """
    import numpy as np

    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    if not pairs:
        return None
    d = np.asarray([x - y for x, y in pairs], dtype=float)
    rng = np.random.default_rng(seed)
    stats = d[rng.integers(0, d.size, size=(n_resamples, d.size))].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))
    p_one = min(float((stats <= 0).mean()), float((stats >= 0).mean()))
    return {
        "diff": float(d.mean()),
        "low": low,
        "high": high,
        "p_value": min(1.0, 2 * p_one),
        "n": int(d.size),
        "significant": bool(low > 0 or high < 0),
    }
