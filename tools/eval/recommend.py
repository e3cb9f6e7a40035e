"""Recommend a route from the measurements, and say why in plain words.

The rule:
  1. Rank the routes that ran by the mean of the headline metric (token F1 when the eval set
     has gold answers, else groundedness).
  2. Compare the best route with every other route by a paired bootstrap over the questions
     (95 % interval of the mean difference; significant when it excludes zero).
  3. If a simpler route (base < base+RAG < adapter < adapter+RAG: fewer moving parts, no
     retraining) is not significantly worse than the best, recommend the simplest such route:
     a difference that may be noise does not pay for extra cost.

Next to the numbers the Phi-3 Cookbook's qualitative considerations are given: RAG for external
or changing knowledge and traceability; fine-tuning for fixed vocabulary and style at the cost
of retraining and of a black box; both for business automation.
"""

from __future__ import annotations

from typing import Any

from tools.eval.metrics import paired_bootstrap
from tools.eval.routes import ROUTES
from tools.eval.scoring import METRICS, RouteResult

CONSIDERATIONS: dict[str, str] = {
    "base": (
        "The base model alone is the cheapest to run and to maintain: no knowledge base, no training. "
        "It only knows what it learned in pre-training, so it cannot answer from your own documents."
    ),
    "rag": (
        "RAG suits knowledge that is external to the model or changes often (prices, procedures, codes): "
        "updating the knowledge base takes effect at once, with no retraining. Answers cite their sources, "
        "so every answer is traceable. The cost is a retrieval call and a longer prompt per request."
    ),
    "lora": (
        "Fine-tuning suits a fixed vocabulary, format and style that the base model lacks. The adapter is "
        "a black box (its answers carry no sources), and every change in the facts means retraining: "
        "preparing data, running a training job and publishing a new adapter version."
    ),
    "rag+lora": (
        "Combining both suits business automation that needs the domain's language and current facts: "
        "the adapter supplies vocabulary and style, retrieval supplies facts and citations. You pay both "
        "costs: the training cycle and the retrieval per request."
    ),
}


def _mean(route: RouteResult, metric: str) -> float | None:
    entry = route.summary.get("metrics", {}).get(metric)
    return entry["mean"] if entry else None


def compare(a: RouteResult, b: RouteResult, metric: str, *, seed: int = 0) -> dict[str, Any] | None:
    """Paired bootstrap of ``a - b`` on ``metric`` over the questions both routes answered."""
    result = paired_bootstrap(a.scores(metric), b.scores(metric), seed=seed)
    return None if result is None else {"a": a.name, "b": b.name, "metric": metric, **result}


def _fmt_diff(c: dict[str, Any]) -> str:
    return f"{c['diff']:+.3f} (95% CI {c['low']:+.3f} to {c['high']:+.3f}, p≈{c['p_value']:.3f})"


def recommend(routes: list[RouteResult], headline: str | None, *, seed: int = 0) -> dict[str, Any]:
    """The recommended route, the comparisons behind it, and the reasons in words."""
    ran = [r for r in routes if r.skipped is None and _mean(r, headline or "") is not None]
    skipped = [f"{r.label} was skipped: {r.skipped}" for r in routes if r.skipped]
    if headline is None or not ran:
        why = (
            "no route could be scored"
            if headline
            else "the eval set has no gold answers and no knowledge base"
        )
        return {
            "route": None,
            "label": None,
            "headline": headline,
            "reasons": [why, *skipped],
            "comparisons": [],
        }

    ranked = sorted(ran, key=lambda r: (-(_mean(r, headline) or 0.0), ROUTES[r.name].complexity))
    best = ranked[0]
    comparisons = [c for r in ranked[1:] if (c := compare(best, r, headline, seed=seed))]
    by_b = {c["b"]: c for c in comparisons}
    label = METRICS[headline]
    reasons = [f"{best.label} has the highest mean {label}: {_mean(best, headline):.3f}."]

    chosen = best
    simpler = sorted((r for r in ran if ROUTES[r.name].complexity < ROUTES[best.name].complexity),
                     key=lambda r: ROUTES[r.name].complexity)  # fmt: skip
    for r in simpler:
        c = by_b.get(r.name)
        if c is not None and not c["significant"]:
            chosen = r
            reasons.append(
                f"It is not significantly better than the simpler {r.label}: difference {_fmt_diff(c)}; "
                f"the interval includes zero, so {r.label} is recommended."
            )
            break
    for c in comparisons:
        other = next(r for r in ran if r.name == c["b"])
        if chosen is best or other is not chosen:
            verdict = "significant" if c["significant"] else "not significant"
            reasons.append(f"{best.label} vs {other.label}: {label} {_fmt_diff(c)} — {verdict}.")

    base = next((r for r in ran if r.name == "base"), None)
    vs_base = compare(chosen, base, headline, seed=seed) if base is not None and chosen is not base else None
    if chosen.name == "base" and len(ran) > 1:
        reasons.append("No route beats the base model significantly on this question set.")
    reasons.extend(_supporting(chosen, ran))
    reasons.extend(skipped)
    return {
        "route": chosen.name,
        "label": chosen.label,
        "why": explain(chosen, ran, headline, best=best),
        "headline": headline,
        "headline_mean": _mean(chosen, headline),
        "best_by_mean": best.name,
        "vs_base": vs_base,
        "comparisons": comparisons,
        "reasons": reasons,
        "considerations": {r: CONSIDERATIONS[r] for r in ROUTES},
    }


# What each part of the combined score measures, in words, and which route supplies it.
_PARTS = {"contains": "the facts", "format": "the house format", "terms": "the house vocabulary"}


def explain(
    chosen: RouteResult, ran: list[RouteResult], headline: str, *, best: RouteResult | None = None
) -> str:
    """One sentence: the recommended route, its headline score, and what it wins on (or why it is enough)."""
    label = METRICS[headline]
    head = f"{chosen.label} is recommended: {label} {_mean(chosen, headline):.2f}"
    if best is not None and best is not chosen:
        return (
            f"{head}, and {best.label}'s higher {_mean(best, headline):.2f} is not significantly better on "
            f"these {len(best.questions)} questions, so the simpler route is enough."
        )
    others = [r for r in ran if r is not chosen]
    if not others:
        return head + " (the only route that ran)."
    parts = [(k, _mean(chosen, k)) for k in ("contains", "format", "terms") if _mean(chosen, k) is not None]
    if headline == "combined" and parts:
        detail = ", ".join(f"{_PARTS[k]} {v:.2f}" for k, v in parts)
        # The parts where the chosen route beats the best of the others by a clear margin.
        wins = [_PARTS[k] for k, v in parts if v >= max((_mean(r, k) or 0.0) for r in others) + 0.1]
        tail = f", winning on {' and '.join(wins)}" if wins else ", no other route clearly better on any part"
        return f"{head} ({detail}){tail}."
    best_other = max(others, key=lambda r: _mean(r, headline) or 0.0)
    return f"{head} against {_mean(best_other, headline) or 0.0:.2f} for {best_other.label}, the next best."


def _supporting(chosen: RouteResult, ran: list[RouteResult]) -> list[str]:
    """Secondary metrics worth reading next to the headline: retrieval, citations, latency."""
    notes = []
    hit, cite = _mean(chosen, "hit_at_k"), _mean(chosen, "citation_precision")
    if hit is not None:
        notes.append(
            f"Retrieval found a reference document in the top k for {hit:.0%} of the questions (hit@k)."
        )
        if hit < 0.5:
            notes.append(
                "Retrieval often misses: better documents or chunking would help the RAG routes most."
            )
    if cite is not None:
        notes.append(f"{cite:.0%} of the cited documents are reference documents (citation precision).")
    base = next((r for r in ran if r.name == "base"), None)
    if base is not None and chosen is not base:
        p_chosen, p_base = chosen.summary["latency_s"]["p50"], base.summary["latency_s"]["p50"]
        if p_chosen and p_base:
            notes.append(f"Median latency is {p_chosen:.2f} s against {p_base:.2f} s for the base model.")
    return notes
