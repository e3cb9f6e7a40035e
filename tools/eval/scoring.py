"""Score each answer, then summarise each route: means with bootstrap intervals, per tag, latency, tokens."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from adept.evalset import EvalItem
from tools.eval import metrics as m
from tools.eval.routes import Route

# Metric keys, in display order, with their labels.
METRICS: dict[str, str] = {
    "exact_match": "EM",
    "contains": "contains",
    "f1": "F1",
    "rouge_l": "ROUGE-L",
    "hit_at_k": "hit@k",
    "mrr": "MRR",
    "citation_precision": "cite prec",
    "groundedness": "grounded",
    "format": "format",
    "terms": "terms",
    "combined": "combined",
}

# The combined score: facts (the gold answer is in the answer), format and vocabulary, equally weighted.
COMBINED_PARTS = ("contains", "format", "terms")


@dataclass
class Retrieved:
    """What ``/v1/kb/search`` returned for one question (the same top-k the RAG routes use)."""

    document_ids: list[str]
    passages: list[str]


@dataclass
class QuestionResult:
    """One question answered on one route, with its scores."""

    id: str
    question: str
    answer: str | None
    tags: list[str]
    reference_documents: list[str]
    prediction: str = ""
    error: str | None = None
    latency_s: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cited_documents: list[str] = field(default_factory=list)
    retrieved_documents: list[str] = field(default_factory=list)
    scores: dict[str, float | None] = field(default_factory=dict)


@dataclass
class RouteResult:
    """Everything measured on one route (or why it was skipped)."""

    name: str
    label: str
    model: str | None
    skipped: str | None = None
    questions: list[QuestionResult] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    def scores(self, metric: str) -> list[float | None]:
        return [q.scores.get(metric) for q in self.questions]


def score_question(
    item: EvalItem, route: Route, answer: Any | None, error: str | None, retrieved: Retrieved | None, k: int
) -> QuestionResult:
    """Scores for one answer. A failed request scores 0 on answer metrics and is counted as an error."""
    result = QuestionResult(
        id=str(item.id),
        question=item.question,
        answer=item.answer,
        tags=list(item.tags),
        reference_documents=list(item.reference_documents),
        error=error,
    )
    if answer is not None:
        result.prediction = answer.text
        result.latency_s = answer.latency_s
        result.prompt_tokens = answer.prompt_tokens
        result.completion_tokens = answer.completion_tokens
        result.cited_documents = list(dict.fromkeys(answer.cited_documents))
    pred, gold, refs = result.prediction, item.answer, item.reference_documents
    s: dict[str, float | None] = {}
    answer_metrics = {
        "exact_match": m.exact_match,
        "contains": m.contains,
        "f1": m.token_f1,
        "rouge_l": m.rouge_l,
    }
    for key, fn in answer_metrics.items():
        s[key] = None if not gold else 0.0 if error is not None else fn(pred, gold)
    # Retrieval quality only means something on the routes that retrieve.
    ranked = retrieved.document_ids if (retrieved and route.rag) else None
    result.retrieved_documents = list(ranked or [])
    s["hit_at_k"] = m.hit_at_k(ranked, refs, k) if ranked is not None else None
    s["mrr"] = m.reciprocal_rank(ranked, refs) if ranked is not None else None
    s["citation_precision"] = m.citation_precision(result.cited_documents, refs) if route.rag else None
    # Groundedness is measured against the same retrieved passages on every route, so the
    # routes are compared on one scale: how much of the answer the tenant's documents support.
    s["groundedness"] = (
        m.groundedness(pred, retrieved.passages, item.question) if (retrieved and error is None) else None
    )
    exp = item.expect
    failed = error is not None
    s["format"] = (
        None
        if exp is None or (exp.format is None and exp.json_schema is None)
        else 0.0
        if failed
        else m.format_compliance(pred, exp.format, exp.json_schema)
    )
    terms = m.term_score(pred, exp.required_terms, exp.forbidden_terms) if exp is not None else None
    s["terms"] = None if terms is None else 0.0 if failed else terms
    # Only questions with expectations get a combined score: without them it would just repeat `contains`.
    s["combined"] = m.mean(s[k] for k in COMBINED_PARTS) if exp is not None else None
    result.scores = s
    return result


def summarise(route: RouteResult, *, n_resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Means with 95 % bootstrap intervals per metric, per-tag means, latency percentiles, token means."""
    qs = route.questions
    metrics: dict[str, Any] = {}
    for key in METRICS:
        values = [v for v in route.scores(key) if v is not None]
        if not values:
            continue
        ci = m.bootstrap_ci(values, n_resamples=n_resamples, seed=seed)
        metrics[key] = {"mean": m.mean(values), "low": ci[0], "high": ci[1], "n": len(values)}
    by_tag: dict[str, dict[str, float]] = {}
    for tag in sorted({t for q in qs for t in q.tags}):
        tagged = [q for q in qs if tag in q.tags]
        means = {k: m.mean(q.scores.get(k) for q in tagged) for k in METRICS}
        by_tag[tag] = {"n": len(tagged), **{k: v for k, v in means.items() if v is not None}}
    latencies = [q.latency_s for q in qs if q.latency_s is not None]
    summary = {
        "n": len(qs),
        "errors": sum(q.error is not None for q in qs),
        "metrics": metrics,
        "by_tag": by_tag,
        "latency_s": {
            "p50": m.percentile(latencies, 50),
            "p95": m.percentile(latencies, 95),
            "mean": m.mean(latencies),
        },
        "tokens": {
            "prompt_mean": m.mean(q.prompt_tokens for q in qs),
            "completion_mean": m.mean(q.completion_tokens for q in qs),
        },
    }
    route.summary = summary
    return summary


def headline_metric(has_answers: bool, has_retrieval: bool, has_expectations: bool = False) -> str | None:
    """The combined score when questions state expectations (format, vocabulary); else F1 when there
    are gold answers; else groundedness when there is a knowledge base; else nothing."""
    if has_expectations:
        return "combined"
    if has_answers:
        return "f1"
    if has_retrieval:
        return "groundedness"
    return None
