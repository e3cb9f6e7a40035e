"""What fine-tuning is for, measured: per-question format and vocabulary expectations, scored per route."""

from __future__ import annotations

import pytest

from adept.errors import ConfigError
from adept.evalset import EvalItem, parse_eval_lines
from tests.unit.eval._builders import route_result
from tools.eval import metrics as m
from tools.eval.recommend import recommend
from tools.eval.routes import ROUTES
from tools.eval.scoring import RouteResult, headline_metric, score_question, summarise

HOUSE = r"^[^\n]{1,120} \((?:LGS-100|FR-7)\)\.(?: ?\[\d+\])*$"


class Answer:
    def __init__(self, text: str) -> None:
        self.text, self.latency_s, self.prompt_tokens, self.completion_tokens = text, 0.1, 10, 5
        self.cited_documents: list[str] = []


def _item(**expect) -> EvalItem:
    return EvalItem(question="What is R-11?", answer="ground fault trip", id="1", expect=expect)


def test_format_regex_and_json_schema() -> None:
    assert m.format_compliance("ground fault trip (FR-7).", HOUSE) == 1.0
    assert m.format_compliance("ground fault trip (FR-7). [1]", HOUSE) == 1.0
    assert m.format_compliance("R-11 means a ground fault trip.", HOUSE) == 0.0
    schema = {"type": "object", "required": ["code"], "properties": {"code": {"type": "string"}}}
    assert m.format_compliance('{"code": "R-11"}', schema=schema) == 1.0
    assert m.format_compliance('{"code": 11}', schema=schema) == 0.0
    assert m.format_compliance("not json", schema=schema) == 0.0
    assert m.format_compliance("x") is None


def test_terms_are_case_insensitive_and_on_word_boundaries() -> None:
    assert m.term_score("Trip (fr-7).", ["FR-7"]) == 1.0
    assert m.term_score("FR-70 applies", ["FR-7"]) == 0.0
    assert m.term_score("I'm sorry, FR-7", ["FR-7"], ["I'm sorry"]) == 0.0
    assert m.term_score("FR-7 and LGS-100", ["FR-7", "OP-210"], ["I'm sorry"]) == 0.5
    assert m.term_score("polite", [], ["I'm sorry"]) == 1.0
    assert m.term_score("x") is None


def test_expectations_are_scored_per_question_and_combined() -> None:
    item = _item(format=HOUSE, required_terms=["FR-7"], forbidden_terms=["I'm sorry"])
    good = score_question(item, ROUTES["rag+lora"], Answer("ground fault trip (FR-7)."), None, None, 4)
    assert good.scores["format"] == 1.0 and good.scores["terms"] == 1.0 and good.scores["combined"] == 1.0
    facts_only = score_question(item, ROUTES["rag"], Answer("A ground fault trip."), None, None, 4)
    assert facts_only.scores["format"] == 0.0 and facts_only.scores["terms"] == 0.0
    assert facts_only.scores["combined"] == pytest.approx(1.0 / 3)
    failed = score_question(item, ROUTES["lora"], None, "HTTP 503", None, 4)
    assert failed.scores["format"] == 0.0 and failed.scores["terms"] == 0.0
    plain = score_question(
        EvalItem(question="q", answer="a", id="2"), ROUTES["base"], Answer("a"), None, None, 4
    )
    assert plain.scores["format"] is None and plain.scores["combined"] is None


def test_bad_expectations_are_all_reported_with_their_lines() -> None:
    lines = "\n".join(
        [
            '{"question": "a", "expect": {"format": "(unclosed"}}',
            '{"question": "b", "expect": {}}',
            '{"question": "c", "expect": {"format": "x", "json_schema": {"type": "object"}}}',
            '{"question": "d", "expect": {"json_schema": {"type": 5}}}',
            '{"question": "e", "expect": {"required_terms": [" "]}}',
        ]
    )
    with pytest.raises(ConfigError) as e:
        parse_eval_lines(lines)
    text = "\n".join(e.value.details if hasattr(e.value, "details") else [str(e.value)])
    for n in range(1, 6):
        assert f"line {n}" in text or f"line {n}:" in str(e.value) + text


def test_headline_is_the_combined_score_when_questions_state_expectations() -> None:
    assert headline_metric(True, True, True) == "combined"
    assert headline_metric(True, True, False) == "f1"


def test_recommendation_weighs_the_parts_and_says_why_in_one_sentence() -> None:
    def route(name: str, contains: float, fmt: float, terms: float) -> RouteResult:
        parts = {"contains": contains, "format": fmt, "terms": terms}
        r = route_result(name, [0.5] * 8, extra={**parts, "combined": (contains + fmt + terms) / 3})
        return summarise(r, n_resamples=200) and r

    ran = [
        route("base", 0.1, 0.0, 0.1),
        route("rag", 0.9, 0.0, 0.4),
        route("lora", 0.1, 1.0, 0.8),
        route("rag+lora", 0.9, 1.0, 1.0),
    ]
    rec = recommend(ran, "combined")
    assert rec["route"] == "rag+lora"
    why = rec["why"]
    assert why.startswith("adapter+RAG is recommended: combined 0.97")
    assert (
        "the facts 0.90" in why
        and "the house format 1.00" in why
        and "winning on the house vocabulary" in why
    )
    assert why.count(".") <= 6 and why.endswith(".")


def test_an_evaluation_file_is_checked_whole_and_for_the_promotion_metric() -> None:
    from adept.errors import InvalidRequest
    from tools.eval.promotion import check_evaluation_file

    good = b'{"question": "q", "answer": "a", "expect": {"required_terms": ["FR-7"]}}\n'
    assert len(check_evaluation_file(good, metric="combined").items) == 1
    with pytest.raises(InvalidRequest) as e:
        check_evaluation_file(b'{"question": ""}\nnot json\n')
    assert e.value.param == "evaluation_file" and "line 1" in e.value.message and "line 2" in e.value.message
    with pytest.raises(InvalidRequest, match="no question states `expect`"):
        check_evaluation_file(b'{"question": "q", "answer": "a"}\n', metric="combined")
    with pytest.raises(InvalidRequest, match="unknown promotion metric"):
        check_evaluation_file(good, metric="bleu")


def test_the_why_names_the_better_route_when_a_simpler_one_is_recommended() -> None:
    ran = [
        route_result("lora", [0.2, 0.8, 0.3, 0.7, 0.5, 0.4, 0.6, 0.5]),
        route_result("rag+lora", [0.8, 0.2, 0.7, 0.3, 0.6, 0.5, 0.4, 0.7]),
    ]
    for r in ran:
        r.summary["metrics"]["combined"] = r.summary["metrics"]["f1"]
        for q in r.questions:
            q.scores["combined"] = q.scores["f1"]
    rec = recommend(ran, "combined")
    assert rec["route"] == "lora"
    assert "adapter+RAG's higher 0.53 is not significantly better on these 8 questions" in rec["why"]
