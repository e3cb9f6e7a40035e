"""Build scored route results from plain per-question values (test data, not mocks)."""

from __future__ import annotations

from adept.evalset import EvalItem
from tools.eval.routes import ROUTES
from tools.eval.scoring import QuestionResult, RouteResult, summarise


def route_result(
    name: str, f1: list[float], *, latency: float = 0.5, extra: dict | None = None
) -> RouteResult:
    route = ROUTES[name]
    r = RouteResult(name, route.label, "model")
    for i, v in enumerate(f1):
        scores = {"f1": v, "exact_match": float(v == 1.0), **(extra or {})}
        r.questions.append(
            QuestionResult(
                id=str(i),
                question=f"q{i}",
                answer="a",
                tags=["even" if i % 2 == 0 else "odd"],
                reference_documents=["d"],
                prediction="p",
                latency_s=latency + i * 0.01,
                prompt_tokens=10,
                completion_tokens=5,
                scores=scores,
            )
        )
    summarise(r, n_resamples=500)
    return r


def skipped(name: str, reason: str) -> RouteResult:
    route = ROUTES[name]
    return RouteResult(name, route.label, None, skipped=reason)


def item(question: str = "q", answer: str | None = "yes", refs: list[str] | None = None) -> EvalItem:
    return EvalItem(question=question, answer=answer, reference_documents=refs or [], id="1")
