"""The RAG prompt: the instruction as a prefix or as a template of the whole turn, citations by number."""

from __future__ import annotations

import pytest

from services.llm.prompting import PromptBuilder, cited_numbers, passage_budget, sentence_budget
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


def test_instruction_joins_the_system_turn_examples_come_first_and_the_question_last(tokenizer):
    example = {"question": "When?", "passages": "[1] At 8 am.", "answer": "8 am [1]"}
    builder = PromptBuilder(
        tokenizer, max_model_len=512, rag_instruction="Use the passages.", examples=[example]
    )
    text = builder.render(_req([]), ["FR-7\nR-14: lockout.", "CS-400\nCall us."])
    assert "Be brief.\n\nUse the passages." in text
    shot, ask = text.index("[1] At 8 am.\n\nQuestion: When?"), text.index("8 am [1]")
    question = text.index("[1] FR-7\nR-14: lockout.\n\n[2] CS-400\nCall us.\n\nQuestion: What is R-14?")
    assert shot < ask < question
    # Without a system turn the instruction is one; without passages nothing is added.
    bare = GenerateRequest(messages=[{"role": "user", "content": "What is R-14?"}], passages=[], max_tokens=8)
    assert "Use the passages." in builder.render(bare, ["x"])
    assert "Use the passages." not in builder.render(_req([]), []) and "8 am [1]" not in builder.render(
        _req([]), []
    )


def test_the_demo_adapter_is_trained_on_the_layout_the_server_renders(tokenizer):
    from adept.config.llm import DEFAULT_RAG_EXAMPLES, DEFAULT_RAG_INSTRUCTION
    from adept.demo.make_finetune import rag_examples

    messages = rag_examples()[0]["messages"]
    passages = [
        p.split("] ", 1)[1] for p in messages[-2]["content"].split("\n\nQuestion: ")[0].split("\n\n[")
    ]
    question = messages[-2]["content"].split("\n\nQuestion: ")[1]
    system = messages[0]["content"].removesuffix("\n\n" + DEFAULT_RAG_INSTRUCTION)
    req = GenerateRequest(
        messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
        passages=passages,
        max_tokens=8,
    )
    builder = PromptBuilder(
        tokenizer, max_model_len=2048, rag_instruction=DEFAULT_RAG_INSTRUCTION, examples=DEFAULT_RAG_EXAMPLES
    )
    served = builder.render(req, passages)
    trained = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False)
    assert served == trained


def test_the_passage_budget(tokenizer):
    builder = PromptBuilder(tokenizer, max_model_len=512, rag_instruction="Use them.", max_passages=1)
    assert builder.build(_req(["one", "two"]), 8).passages_used == [0]
    assert passage_budget("auto", 135_000_000) == 1
    assert passage_budget("auto", 3_800_000_000) is None and passage_budget("auto", None) is None
    assert passage_budget(3, 135_000_000) == 3


def test_a_sentence_budget_shows_each_passage_as_its_best_sentences(tokenizer):
    req = _req(["Intro. R-14 is a lockout. Other.", "Tariff B is 12 cents."])
    req.passage_excerpts = [["R-14 is a lockout.", "Intro. R-14 is a lockout."]]  # the second has none
    one = PromptBuilder(tokenizer, max_model_len=512, rag_instruction="Use them.", max_sentences=1)
    assert one.passage_texts(req) == ["R-14 is a lockout.", "Tariff B is 12 cents."]
    text = one.render(req, one.passage_texts(req))
    assert "[1] R-14 is a lockout.\n\n[2] Tariff B is 12 cents." in text and "Other." not in text
    assert one.build(req, 8).passages_used == [0, 1]
    # More sentences than a passage has excerpts: its longest excerpt; no budget: whole passages.
    three = PromptBuilder(tokenizer, max_model_len=512, rag_instruction="Use them.", max_sentences=3)
    assert three.passage_texts(req)[0] == "Intro. R-14 is a lockout."
    whole = PromptBuilder(tokenizer, max_model_len=512, rag_instruction="Use them.")
    assert whole.passage_texts(req) == req.passages
    assert sentence_budget("auto", 135_000_000) == 1 and sentence_budget("auto", 3_800_000_000) is None
    assert sentence_budget("all", 135_000_000) is None and sentence_budget(2, 3_800_000_000) == 2


def test_excerpts_for_more_passages_than_there_are_is_refused():
    with pytest.raises(ValueError, match="passage_excerpts"):
        GenerateRequest(prompt="x", passages=["a"], passage_excerpts=[["a"], ["b"]])


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


def test_rag_settings_are_checked():
    from pydantic import ValidationError

    from adept.config.llm import DEFAULT_RAG_EXAMPLES, LLMConfig

    assert (
        LLMConfig().rag_max_passages == "auto"
        and len(LLMConfig().rag_examples) == len(DEFAULT_RAG_EXAMPLES) == 3
    )
    assert LLMConfig(rag_max_passages=2, rag_examples=[]).rag_examples == []
    for bad in ({"rag_max_passages": 0}, {"rag_max_passages": "all"}, {"rag_examples": [{"question": "q"}]}):
        with pytest.raises(ValidationError):
            LLMConfig(**bad)
