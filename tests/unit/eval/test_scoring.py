"""Per-question scoring and per-route summaries."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.unit.eval._builders import item, route_result
from tools.eval.routes import ROUTES
from tools.eval.scoring import Retrieved, headline_metric, score_question


def _answer(text: str, cited: list[str] | None = None):
    return SimpleNamespace(
        text=text, latency_s=0.2, prompt_tokens=30, completion_tokens=4, cited_documents=cited or []
    )


def test_rag_route_gets_retrieval_and_citation_scores() -> None:
    ret = Retrieved(["metering", "customer-service"], ["A meter test is free every 36 months."])
    q = score_question(
        item("How often?", "every 36 months", ["metering"]),
        ROUTES["rag"],
        _answer("Every 36 months.", ["metering", "x"]),
        None,
        ret,
        4,
    )
    assert q.scores["exact_match"] == 1.0 and q.scores["f1"] == 1.0
    assert q.scores["hit_at_k"] == 1.0 and q.scores["mrr"] == 1.0
    assert q.scores["citation_precision"] == 0.5
    assert q.scores["groundedness"] == 1.0  # "36", "months" (every is a stop-word) are in the passage


def test_base_route_has_no_retrieval_scores_but_is_grounded_on_the_same_passages() -> None:
    ret = Retrieved(["metering"], ["A meter test is free every 36 months."])
    q = score_question(
        item("How often?", "every 36 months", ["metering"]), ROUTES["base"], _answer("Yearly"), None, ret, 4
    )
    assert q.scores["hit_at_k"] is None and q.scores["citation_precision"] is None
    assert q.scores["groundedness"] == 0.0 and q.scores["f1"] == 0.0


def test_failed_request_scores_zero_and_is_recorded() -> None:
    q = score_question(item(), ROUTES["lora"], None, "HTTP 400: too long", None, 4)
    assert q.error == "HTTP 400: too long" and q.scores["f1"] == 0.0 and q.scores["groundedness"] is None


def test_summary_has_intervals_tags_and_latency() -> None:
    r = route_result("rag", [1.0, 0.0, 1.0, 1.0])
    s = r.summary
    f1 = s["metrics"]["f1"]
    assert f1["mean"] == 0.75 and f1["low"] <= 0.75 <= f1["high"] and f1["n"] == 4
    assert s["by_tag"]["even"]["f1"] == 1.0 and s["by_tag"]["odd"]["f1"] == 0.5
    assert s["latency_s"]["p50"] == pytest.approx(0.515)
    assert s["tokens"] == {"prompt_mean": 10.0, "completion_mean": 5.0}


def test_headline_metric_choice() -> None:
    assert headline_metric(True, False) == "f1"
    assert headline_metric(False, True) == "groundedness"
    assert headline_metric(False, False) is None
