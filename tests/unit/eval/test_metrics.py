"""Metric functions against cases computed by hand."""

from __future__ import annotations

import pytest

from tools.eval import metrics as m


def test_normalize_answer_follows_squad() -> None:
    assert m.normalize_answer("The  Basic charge, is $11.40!") == "basic charge is 1140"
    assert m.normalize_answer("An apple a day") == "apple day"


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ("The $11.40", "$11.40", 1.0),
        ("11.40 dollars", "$11.40", 0.0),
        ("", "", 1.0),
    ],
)
def test_exact_match(pred: str, gold: str, expected: float) -> None:
    assert m.exact_match(pred, gold) == expected


def test_contains_respects_token_boundaries() -> None:
    assert m.contains("It is 0.80 m for 12.47 kV.", "0.80 m") == 1.0
    assert m.contains("about 10.80 m", "0.80 m") == 0.0  # "1080" is not "080"
    assert m.contains("anything", "") == 0.0


def test_token_f1_hand_computed() -> None:
    # pred tokens: [the-dropped] cat sat on mat -> {cat, sat, on, mat}; gold: cat sat -> common 2
    # precision 2/4, recall 2/2 -> F1 = 2*0.5*1/(1.5) = 2/3
    assert m.token_f1("The cat sat on the mat", "cat sat") == pytest.approx(2 / 3)
    assert m.token_f1("x y", "z") == 0.0
    assert m.token_f1("", "z") == 0.0
    assert m.token_f1("", "") == 1.0
    # Multiplicity counts: pred "a1 a1 b" vs gold "a1 b b": common = min(2,1)+min(1,2) = 2 -> P=R=2/3
    assert m.token_f1("a1 a1 b", "a1 b b") == pytest.approx(2 / 3)


def test_lcs_and_rouge_l_hand_computed() -> None:
    assert m.lcs_length(["a", "b", "c", "d", "e"], ["a", "c", "e"]) == 3
    assert m.lcs_length([], ["a"]) == 0
    # pred: police killed gunman (3), gold: police kill gunman (3) -> LCS "police gunman" = 2 -> P=R=2/3
    assert m.rouge_l("police killed the gunman", "police kill the gunman") == pytest.approx(2 / 3)
    # Order matters for ROUGE-L, not for F1.
    assert m.rouge_l("z y x", "x y z") == pytest.approx(1 / 3)
    assert m.token_f1("z y x", "x y z") == 1.0


def test_document_matching_accepts_file_stems() -> None:
    assert m.document_matches("safety-manual", "safety-manual")
    assert m.document_matches("corpus/safety-manual.md", "safety-manual")
    assert not m.document_matches("corpus/safety-manual.md", "metering")


def test_hit_at_k_and_mrr() -> None:
    ranked = ["metering", "corpus/fault-codes.md", "safety-manual", "fault-codes"]
    assert m.hit_at_k(ranked, ["fault-codes"], 1) == 0.0
    assert m.hit_at_k(ranked, ["fault-codes"], 2) == 1.0
    assert m.reciprocal_rank(ranked, ["fault-codes"]) == 0.5
    assert m.reciprocal_rank(ranked, ["safety-manual", "metering"]) == 1.0
    assert m.reciprocal_rank(ranked, ["tariff"]) == 0.0
    assert m.hit_at_k(ranked, [], 3) is None
    assert m.reciprocal_rank(ranked, []) is None


def test_citation_precision_counts_distinct_documents() -> None:
    assert m.citation_precision(["a", "a", "b"], ["a"]) == 0.5
    assert m.citation_precision(["a"], ["a", "b"]) == 1.0
    assert m.citation_precision([], ["a"]) is None
    assert m.citation_precision(["a"], []) is None


def test_groundedness_ignores_stop_words() -> None:
    passages = ["The RS-1 basic service charge is $11.40 per month."]
    # content tokens of the answer: basic, charge, 1140, euros -> 3 of 4 in the passage
    assert m.groundedness("The basic charge is 11.40 euros", passages) == pytest.approx(3 / 4)
    # Words copied from the question do not count as support.
    assert m.groundedness("The basic charge is 11.40 euros", passages, "What is the basic charge?") == 0.5
    assert m.groundedness("the of and", passages) is None
    assert m.groundedness("anything", []) is None


def test_mean_and_percentile() -> None:
    assert m.mean([1.0, None, 3.0]) == 2.0
    assert m.mean([None]) is None
    assert m.percentile([1, 2, 3, 4], 50) == 2.5
    assert m.percentile([10.0], 95) == 10.0
    assert m.percentile(list(range(1, 11)), 95) == pytest.approx(9.55)
    assert m.percentile([], 50) is None


def test_bootstrap_is_seeded_and_brackets_the_mean() -> None:
    values = [0.0, 1.0, 1.0, 0.0, 1.0, 0.5, 0.25, 0.75]
    a = m.bootstrap_ci(values, seed=7)
    assert a == m.bootstrap_ci(values, seed=7)
    assert a != m.bootstrap_ci(values, seed=8)
    assert a[0] <= sum(values) / len(values) <= a[1]
    assert m.bootstrap_ci([0.5] * 5) == (0.5, 0.5)
    assert m.bootstrap_ci([]) is None


def test_paired_bootstrap_detects_a_clear_difference() -> None:
    a = [1.0] * 20
    b = [0.0] * 18 + [1.0, 1.0]
    r = m.paired_bootstrap(a, b, seed=0)
    assert r["diff"] == pytest.approx(0.9)
    assert r["significant"] and r["low"] > 0
    assert r == m.paired_bootstrap(a, b, seed=0)


def test_paired_bootstrap_not_significant_for_noise() -> None:
    a = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    b = [0.0, 1.0, 1.0, 0.0, 0.0, 1.0]
    r = m.paired_bootstrap(a, b, seed=0)
    assert r["diff"] == 0.0
    assert not r["significant"]
    assert r["low"] < 0 < r["high"]


def test_paired_bootstrap_skips_unpaired_questions() -> None:
    r = m.paired_bootstrap([1.0, None, 0.5], [0.0, 1.0, None])
    assert r["n"] == 1
    assert m.paired_bootstrap([None], [1.0]) is None
