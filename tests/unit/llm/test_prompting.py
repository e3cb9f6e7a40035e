"""The RAG prompt: the instruction as a prefix or as a template of the whole turn, citations by number."""

from __future__ import annotations

import pytest

from services.llm.prompting import PromptBuilder, cited_numbers
from services.llm.protocol import GenerateRequest


@pytest.fixture(scope="module")
def tokenizer(tiny_phi3):
    from adept.models import load_tokenizer

    return load_tokenizer(tiny_phi3)


def _req(passages):
    return GenerateRequest(
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is R-14?"}],
        passages=passages,
        max_tokens=8,
    )


def test_prefix_instruction_puts_the_question_last(tokenizer):
    text = PromptBuilder(tokenizer, max_model_len=512, rag_instruction="Use the passages.").render(
        _req([]), ["FR-7\nR-14: lockout.", "CS-400\nCall us."]
    )
    assert (
        "Use the passages.\n\n[1] FR-7\nR-14: lockout.\n\n[2] CS-400\nCall us.\n\nQuestion: What is R-14?"
        in text
    )
    assert "Be brief." in text


def test_template_instruction_places_passages_and_question(tokenizer):
    template = "{passages}\n\nQuestion: {question}\nAnswer, then cite [n]."
    builder = PromptBuilder(tokenizer, max_model_len=512, rag_instruction=template)
    text = builder.render(_req([]), ["FR-7\nR-14: lockout."])
    assert "[1] FR-7\nR-14: lockout.\n\nQuestion: What is R-14?\nAnswer, then cite [n]." in text
    assert "{passages}" not in text and "{question}" not in text
    # Without passages the question goes in unchanged.
    assert "{passages}" not in builder.render(_req([]), []) and "Answer, then cite" not in builder.render(
        _req([]), []
    )


def test_passages_that_do_not_fit_are_left_out(tokenizer):
    builder = PromptBuilder(tokenizer, max_model_len=160, rag_instruction="{passages}\n\nQ: {question}")
    prompt = builder.build(_req(["short one", "x " * 400, "short two"]), 8)
    assert prompt.passages_used == [0, 2]


def test_cited_numbers():
    assert cited_numbers("0.80 m [2]. Also [1, 3] and [2] again, not [7].", 3) == [2, 1, 3]
    assert cited_numbers("no citation", 3) == []
    assert cited_numbers("[0] [4]", 3) == []
