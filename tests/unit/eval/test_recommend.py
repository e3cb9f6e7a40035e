"""The recommendation follows the numbers, and refuses to follow noise."""

from __future__ import annotations

from tests.unit.eval._builders import route_result, skipped
from tools.eval.recommend import recommend

N = 30


def test_clear_winner_is_recommended_with_significance() -> None:
    base = route_result("base", [0.0] * N)
    rag = route_result("rag", [1.0] * 25 + [0.0] * 5)
    rec = recommend([base, rag, skipped("lora", "no adapter")], "f1")
    assert rec["route"] == "rag" and rec["label"] == "base+RAG"
    assert rec["vs_base"]["significant"] and rec["vs_base"]["diff"] > 0.8
    assert any("significant." in r and "base+RAG vs base" in r for r in rec["reasons"])
    assert any("adapter was skipped: no adapter" in r for r in rec["reasons"])
    assert "RAG suits knowledge that is external" in rec["considerations"]["rag"]


def test_not_significant_prefers_the_simpler_route() -> None:
    # rag+lora is ahead by one question only: not significant, so the simpler rag wins.
    rag = route_result("rag", [1.0] * 20 + [0.0] * 10)
    both = route_result("rag+lora", [1.0] * 21 + [0.0] * 9)
    base = route_result("base", [0.0] * N)
    rec = recommend([base, rag, both], "f1")
    assert rec["best_by_mean"] == "rag+lora"
    assert rec["route"] == "rag"
    assert any("not significantly better than the simpler base+RAG" in r for r in rec["reasons"])


def test_nothing_beats_base() -> None:
    noisy = [1.0, 0.0] * (N // 2)
    base = route_result("base", noisy)
    lora = route_result("lora", noisy[1:] + noisy[:1])
    rec = recommend([base, lora], "f1")
    assert rec["route"] == "base"
    assert any("No route beats the base model significantly" in r for r in rec["reasons"])


def test_same_inputs_same_recommendation() -> None:
    routes = [route_result("base", [0.2, 0.4, 0.1] * 10), route_result("rag", [0.5, 0.3, 0.9] * 10)]
    assert recommend(routes, "f1", seed=3) == recommend(routes, "f1", seed=3)


def test_no_headline_or_no_routes() -> None:
    assert recommend([route_result("base", [1.0])], None)["route"] is None
    rec = recommend([skipped("rag", "the knowledge base is empty")], "f1")
    assert rec["route"] is None and "knowledge base is empty" in rec["reasons"][-1]
