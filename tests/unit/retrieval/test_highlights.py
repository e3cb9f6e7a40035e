"""Highlights: sentence spans of a chunk and their ranking against a query."""

from __future__ import annotations

import numpy as np

from adept.passages import sentence_spans, sentence_text
from services.retrieval.highlights import score_sentences, states_a_fact

CHUNK = (
    "For customers whose demand is from 50 kW to 500 kW.\n\n"
    "- The GS-2 basic service charge is $85.00 per month.\n"
    "- The GS-2 demand charge is $14.20 per kW of billing demand.\n"
    "* GS-2 energy costs 8.7 cents per kWh.\n\n"
    "## Demand ratchet\n"
    "Billing demand is never less than 75% of the highest demand measured in the previous\n"
    "11 months. Lumen Grid Co. reviews it e.g. yearly, per J. Smith. Why? Because 1.5 kW matters!"
)


def sentences(text: str) -> list[str]:
    return [text[a:b] for a, b in sentence_spans(text)]


def test_paragraphs_list_items_and_sentences_are_split_and_markers_left_out() -> None:
    assert sentences(CHUNK) == [
        "For customers whose demand is from 50 kW to 500 kW.",
        "The GS-2 basic service charge is $85.00 per month.",
        "The GS-2 demand charge is $14.20 per kW of billing demand.",
        "GS-2 energy costs 8.7 cents per kWh.",
        "Billing demand is never less than 75% of the highest demand measured in the previous\n11 months.",
        "Lumen Grid Co. reviews it e.g. yearly, per J. Smith.",
        "Why?",
        "Because 1.5 kW matters!",
    ]


def test_a_sentence_wrapped_over_lines_is_one_line_of_text() -> None:
    spans = sentence_spans(CHUNK)
    assert sentence_text(CHUNK, spans[4]) == (
        "Billing demand is never less than 75% of the highest demand measured in the previous 11 months."
    )


def test_spans_index_the_original_text() -> None:
    for a, b in sentence_spans(CHUNK):
        assert CHUNK[a:b] == CHUNK[a:b].strip() and CHUNK[a:b]
    assert sentence_spans("") == [] and sentence_spans("\n\n## Only a heading\n") == []
    assert sentences("no end mark") == ["no end mark"]
    assert sentences("1. first item\n2) second item") == ["first item", "second item"]


def test_the_lexical_term_breaks_ties_between_equally_close_sentences() -> None:
    texts = ["The GS-2 demand charge is $14.20 per kW.", "The LP-4 demand charge is $18.75 per kW."]
    vectors = np.array([[1.0, 0.0], [1.0, 0.0]], dtype=np.float32)  # the embedding cannot tell them apart
    scores = score_sentences("What is the GS-2 demand charge?", np.array([1.0, 0.0]), texts, vectors)
    assert scores[0] > scores[1]
    assert score_sentences("anything", np.array([1.0, 0.0]), [], np.zeros((0, 2))) == []


def test_the_embedding_decides_when_no_word_is_shared() -> None:
    texts = ["Crews restore power first to hospitals.", "Meters are read monthly."]
    vectors = np.array([[0.9, 0.1], [0.1, 0.9]], dtype=np.float32)
    scores = score_sentences("who gets electricity back soonest", np.array([1.0, 0.0]), texts, vectors)
    assert scores[0] > scores[1]


def test_hyphenated_terms_are_matched_whole() -> None:
    """'on' is a stop word and the analyzer splits 'on-peak': without the joined term, on-peak and
    off-peak would both read as 'peak' and the embedding (here: no help) would pick the first."""
    texts = [
        "The RT-2 off-peak rate, for all other hours, is 10.1 cents per kWh.",
        "The RT-2 on-peak hours are 4 pm to 9 pm on weekdays, at 29.6 cents per kWh.",
    ]
    vectors = np.array([[1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    scores = score_sentences("What is the on-peak price of RT-2?", np.array([1.0, 0.0]), texts, vectors)
    assert scores[1] > scores[0]


def test_a_sentence_that_only_introduces_a_list_states_no_fact() -> None:
    assert not states_a_fact("The minimum approach distances for qualified line workers are:")
    assert states_a_fact("The minimum approach distance on 12.47 kV circuits is 0.80 m.")
    assert states_a_fact("Why?")
