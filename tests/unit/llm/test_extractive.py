"""Extractive RAG answers: the grammar of a verbatim run of a shown passage's words, and where it applies."""

from __future__ import annotations

import asyncio

import pytest

from adept.passages import with_source
from services.llm.extractive import (
    MAX_WORDS,
    REFUSAL,
    extractive_applies,
    extractive_enabled,
    extractive_grammar,
)
from services.llm.prompting import Prompt
from services.llm.protocol import GenerateRequest, Guided
from tests.unit.llm.conftest import chat, collect, run

PASSAGE = with_source(
    'Secondary work (below 600 V) needs "arc-rated" clothing of 8 cal/cm² \\ at least.', "LGS-100"
)


def test_auto_is_on_below_a_billion_parameters_only():
    assert extractive_enabled("auto", 135_000_000) and not extractive_enabled("auto", 3_800_000_000)
    assert not extractive_enabled("auto", None)  # size unknown (vLLM): off
    assert extractive_enabled(True, 3_800_000_000) and not extractive_enabled(False, 1)
    with pytest.raises(ValueError, match="rag_extractive"):
        extractive_enabled("sometimes", 1)


def _accepts(compiled, tokenizer, text: str) -> bool:
    """Whether the grammar takes ``text`` as a whole answer (its tokens, then end of turn)."""
    import xgrammar as xgr

    matcher = xgr.GrammarMatcher(compiled)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return all(matcher.accept_token(i) for i in ids) and matcher.accept_token(tokenizer.eos_token_id)


def test_the_grammar_takes_runs_of_the_passages_words_and_nothing_else(tiny_phi3):
    from transformers import AutoTokenizer

    from services.llm.structured import GrammarBook

    tok = AutoTokenizer.from_pretrained(tiny_phi3)
    book = GrammarBook(tok, vocab_size=len(tok), stop_ids={tok.eos_token_id})
    grammar = extractive_grammar([PASSAGE, "The RT-2 on-peak rate is 29.6 cents per kWh."])
    compiled = book.compile_ebnf(grammar)
    for answer in [
        "8 cal/cm²",
        "8 cal/cm² \\ at least",  # the sentence's full stop left off
        "8 cal/cm² \\ at least.",
        '"arc-rated" clothing',
        "29.6 cents per kWh.",
        REFUSAL,
    ]:
        assert _accepts(compiled, tok, answer), answer
    for answer in ["9 cal/cm²", "8 cal", "2 months", "LGS-100", "cents per kWh. 8 cal/cm²", "clothing  of"]:
        assert not _accepts(compiled, tok, answer), answer  # invented, cut mid-word, its source, two passages
    assert extractive_grammar([]) is None and extractive_grammar(["  "]) is None
    assert extractive_grammar([" ".join(["word"] * (MAX_WORDS + 1))]) is None


def test_an_adapters_answer_may_add_a_code_or_a_citation_after_the_quote(tiny_phi3):
    from transformers import AutoTokenizer

    from services.llm.structured import GrammarBook

    tok = AutoTokenizer.from_pretrained(tiny_phi3)
    book = GrammarBook(tok, vocab_size=len(tok), stop_ids={tok.eos_token_id})
    compiled = book.compile_ebnf(extractive_grammar([PASSAGE], tail=True))
    for answer in ["8 cal/cm² (LGS-100). [1]", "8 cal/cm² [1]", "8 cal/cm²", REFUSAL]:
        assert _accepts(compiled, tok, answer), answer
    for answer in ["$1.25 (Schedule C). [1]", "9 cal/cm² (LGS-100).", "8 cal/cm² per year"]:
        assert not _accepts(compiled, tok, answer), answer  # the opening quote is still the passage's


def test_it_applies_to_chat_rag_answers_only():
    shown = Prompt(ids=[1], passages_used=[0], shown=(PASSAGE,))
    rag = chat("how much arc rating?", passages=[PASSAGE])
    assert extractive_applies(True, rag, shown, "") is not None
    assert extractive_applies(False, rag, shown, "") is None
    # An adapter's answer may go on after the quote with what its tenant trained it to add.
    assert extractive_applies(True, rag, shown, "acme/style@v1") == extractive_grammar([PASSAGE], tail=True)
    assert extractive_applies(True, rag, Prompt(ids=[1], passages_used=[]), "") is None  # nothing shown
    json_req = chat("x", passages=[PASSAGE], guided=Guided(json_object=True))
    assert extractive_applies(True, json_req, shown, "") is None
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert extractive_applies(True, chat("x", passages=[PASSAGE], tools=tools), shown, "") is None
    completion = GenerateRequest(prompt="Q: arc rating?", passages=[PASSAGE])
    assert extractive_applies(True, completion, shown, "") is None


def _words_run(answer: str, passage: str) -> bool:
    """Whether ``answer`` is a run of consecutive words of ``passage`` (its last word may leave off the
    passage word's trailing punctuation)."""
    said, words = answer.split(), passage.split()
    for i in range(len(words) - len(said) + 1):
        run = words[i : i + len(said)]
        if said and run[:-1] == said[:-1] and said[-1] in (run[-1], run[-1].rstrip(".,;:!?")):
            return True
    return False


def test_the_engine_copies_rag_answers_from_the_shown_sentence(make_engine, lora_dirs):
    """The tiny random model writes noise; under the grammar its answer is still a run of the shown
    excerpt's words (or the refusal), an adapter's opens with one, and a free request beside them is
    untouched."""
    passages = [
        "OC-7 means a blown fuse on the lateral. Replace the fuse within 4 hours.",
        "Tariff B is 12 cents.",
    ]
    excerpts = [["Replace the fuse within 4 hours."], ["Tariff B is 12 cents."]]
    engine = make_engine(rag_extractive=True, rag_max_passages=1, rag_passage_sentences=1)
    free = make_engine(rag_extractive=False, rag_max_passages=1, rag_passage_sentences=1)

    def req(seed: int) -> GenerateRequest:
        return chat(
            "when is the fuse replaced",
            max_tokens=24,
            temperature=1.0,
            seed=seed,
            passages=passages,
            passage_excerpts=excerpts,
        )

    async def main():
        await engine.load_adapter("acme/a1@v1", lora_dirs["a1"])
        jobs = [collect(engine, req(seed)) for seed in range(4)]
        jobs.append(collect(engine, chat("free row", max_tokens=8)))
        jobs.append(collect(engine, req(0), "acme/a1@v1"))
        return await asyncio.gather(*jobs), await collect(free, req(0))

    results, unconstrained = run(main())
    sentence = excerpts[0][0]
    for text, last, _ in results[:4]:
        assert last.passages_used == [0]
        if last.finish_reason == "stop":
            assert text == REFUSAL or _words_run(text, sentence), text
        else:  # cut by max_tokens while still copying: part of the sentence all the same
            assert last.finish_reason == "length" and (text in sentence or REFUSAL.startswith(text)), text
    assert any(last.finish_reason == "stop" for _, last, _ in results[:4])
    assert results[4][0]  # the free row decodes unconstrained beside them
    adapter_text, adapter_last, _ = results[5]
    opening = adapter_text.split(" (")[0].split(" [")[0]
    assert opening and (opening in sentence or REFUSAL.startswith(adapter_text)), adapter_text
    if adapter_last.finish_reason == "stop" and adapter_text != REFUSAL:
        assert _words_run(opening, sentence), adapter_text
    assert not _words_run(unconstrained[0], excerpts[0][0])  # without the grammar the noise is not a quote
