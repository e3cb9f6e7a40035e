"""What eval-gated promotion needs from ``adept eval``: the evaluation file checked, and an ``evaluate`` callable.

The kernel decides (``Platform.promote``); this module measures. A fine-tuning job that names an
``evaluation_file`` has it checked at create (``check_evaluation_file``: every bad line at once),
and after publishing its adapter inactive, the job owner calls::

    evaluate = make_evaluator(PlatformClient(gateway_url, tenant_key), eval_set, rag=True)
    outcome = await platform.promote(tenant, name, version, evaluate,
                                     metric=settings.promotion_metric, margin=settings.promotion_margin)

``evaluate("tenant/name@vN")`` asks every question of the set on that version through the tenant's
public API — the same requests, decoding and scoring ``adept eval`` uses — and returns the mean of
every metric.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from adept.errors import AdeptError, ConfigError, InvalidRequest
from tools.eval.dataset import EvalSet, parse_eval_lines
from tools.eval.routes import ROUTES, Decoding, RoutePlan, ask
from tools.eval.scoring import METRICS, RouteResult, score_question, summarise

Evaluate = Callable[[str], Awaitable[dict[str, float]]]


def check_evaluation_file(
    data: bytes, source: str = "evaluation_file", *, metric: str | None = None
) -> EvalSet:
    """The evaluation set in ``data``, or one ``InvalidRequest`` (``param="evaluation_file"``) naming every bad line.

    With ``metric``, the set must be able to measure it (``combined``/``format``/``terms`` need
    questions with ``expect``; answer metrics need gold answers).
    """
    try:
        eval_set = parse_eval_lines(data, source)
    except ConfigError as e:  # its message lists every bad line
        raise InvalidRequest(e.message, param="evaluation_file") from None
    if metric is not None:
        if metric not in METRICS:
            raise InvalidRequest(f"unknown promotion metric {metric!r}; choose from {', '.join(METRICS)}")
        needs_expect = metric in ("combined", "format", "terms")
        if needs_expect and not eval_set.has_expectations:
            raise InvalidRequest(
                f"{source}: promotion compares {metric!r}, but no question states `expect` (format, terms)",
                param="evaluation_file",
            )
        if metric in ("exact_match", "contains", "f1", "rouge_l") and not eval_set.has_answers:
            raise InvalidRequest(
                f"{source}: promotion compares {metric!r}, but no question has a gold `answer`",
                param="evaluation_file",
            )
    return eval_set


def score_model(
    client: Any, eval_set: EvalSet, model_id: str, *, rag: bool = True, decoding: Decoding | None = None
) -> dict[str, float]:
    """Ask every question on ``model_id`` (with RAG or not) and return each metric's mean."""
    dec = decoding or Decoding()
    route = ROUTES["rag+lora" if rag else "lora"]
    result = RouteResult(route.name, route.label, model_id)
    plan = RoutePlan(route, model_id)
    for item in eval_set.items:
        answer, error = None, None
        try:
            answer = ask(client, plan, item.question, dec)
        except AdeptError as e:
            error = e.message
        result.questions.append(score_question(item, route, answer, error, None, dec.top_k))
    summary = summarise(result, n_resamples=200)
    return {k: v["mean"] for k, v in summary["metrics"].items()}


def make_evaluator(
    client: Any, eval_set: EvalSet, *, rag: bool = True, decoding: Decoding | None = None
) -> Evaluate:
    """The ``evaluate`` callable ``Platform.promote`` takes (runs ``score_model`` off the event loop)."""

    async def evaluate(model_id: str) -> dict[str, float]:
        return await asyncio.to_thread(score_model, client, eval_set, model_id, rag=rag, decoding=decoding)

    return evaluate
