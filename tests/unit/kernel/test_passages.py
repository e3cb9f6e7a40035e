"""How a passage is shown to a model: the source line after its text, added and taken off again."""

from __future__ import annotations

from adept.passages import sentence_spans, sentence_text, with_source, without_source


def test_the_source_line_round_trips():
    shown = with_source("The TX-9 clamp torque is 42 Nm.", "Clamp manual (CM-1)")
    assert shown == "The TX-9 clamp torque is 42 Nm.\n(Source: Clamp manual (CM-1))"
    assert without_source(shown) == "The TX-9 clamp torque is 42 Nm."
    assert with_source("No title.", None) == "No title." == without_source("No title.")
    # Text that merely mentions a source keeps it: only a trailing source line is taken off.
    quoted = "See the note\n(Source: page 4) for details."
    assert without_source(quoted) == quoted


def test_sentences_are_shared_by_retrieval_and_the_demo_data():
    text = "- The RS-1 basic charge is $11.40 per month.\n- Energy costs 12.8 cents\n  per kWh in winter."
    assert [sentence_text(text, s) for s in sentence_spans(text)] == [
        "The RS-1 basic charge is $11.40 per month.",
        "Energy costs 12.8 cents per kWh in winter.",
    ]
