"""The shipped demo data is consistent: ids exist, answers are in their documents, the fine-tune set is current."""

from __future__ import annotations

import json
import re

from adept.demo import corpus_dir, document_ids, eval_questions_path, finetune_path
from adept.demo.make_finetune import DOC_CODES, FACTS, build_examples, render
from adept.evalset import load_eval_set


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def test_corpus_documents_have_titles_and_sections() -> None:
    ids = document_ids()
    assert 8 <= len(ids) <= 12
    for doc_id in ids:
        text = (corpus_dir() / f"{doc_id}.md").read_text(encoding="utf-8")
        assert text.startswith("# Lumen Grid Co."), doc_id
        assert text.count("\n## ") >= 3, doc_id


def test_eval_questions_validate_and_answers_are_in_reference_documents() -> None:
    s = load_eval_set(eval_questions_path())
    assert 30 <= len(s.items) <= 40
    ids = set(document_ids())
    for it in s.items:
        assert it.answer and it.reference_documents and it.tags
        assert set(it.reference_documents) <= ids, it.reference_documents
        text = " ".join(
            _flat((corpus_dir() / f"{d}.md").read_text(encoding="utf-8")) for d in it.reference_documents
        )
        assert it.answer.lower() in text.lower(), it.answer


def test_finetune_file_is_what_the_script_writes() -> None:
    shipped = finetune_path().read_text(encoding="utf-8")
    assert shipped == render(build_examples())
    lines = shipped.splitlines()
    assert 150 <= len(lines) <= 300
    first = json.loads(lines[0])
    assert [m["role"] for m in first["messages"]] == ["system", "user", "assistant"]


def test_finetune_facts_are_in_their_documents() -> None:
    assert set(DOC_CODES) == set(document_ids())
    for doc_id, _subject, answer in FACTS:
        text = _flat((corpus_dir() / f"{doc_id}.md").read_text(encoding="utf-8"))
        assert answer in text, (doc_id, answer)
        assert DOC_CODES[doc_id] in text


def test_each_route_has_something_to_win() -> None:
    """Facts of the eval questions are only in the documents; the house format only in the training examples."""
    import re as _re

    from adept.demo.make_finetune import SYSTEM_PROMPT, house_format_regex, with_expectations
    from tools.eval.routes import DEFAULT_SYSTEM_PROMPT

    assert SYSTEM_PROMPT == DEFAULT_SYSTEM_PROMPT  # the adapter is asked the way it was taught
    s = load_eval_set(eval_questions_path())
    trained = finetune_path().read_text(encoding="utf-8")
    fmt = _re.compile(house_format_regex())
    for it in s.items:
        # No eval answer is a training target: the adapter alone cannot know the facts.
        assert f'"content": "{it.answer} (' not in trained, it.answer
        assert it.expect is not None and it.expect.format == house_format_regex()
        assert it.expect.required_terms == [DOC_CODES[it.reference_documents[0]]]
    # Every training answer is in the house format; no document states it.
    for line in trained.splitlines():
        assert fmt.search(json.loads(line)["messages"][-1]["content"])
    for doc_id in document_ids():
        assert not fmt.search((corpus_dir() / f"{doc_id}.md").read_text(encoding="utf-8"))
    # Prompts are tuned on one half and reported on the other.
    tags = [t for it in s.items for t in it.tags if t in ("tune", "heldout")]
    assert tags.count("tune") == tags.count("heldout") == len(s.items) // 2
    shipped = [json.loads(line) for line in eval_questions_path().read_text(encoding="utf-8").splitlines()]
    assert with_expectations(shipped) == shipped  # the script's output is what ships


def test_rag_examples_cite_the_passage_that_states_the_fact() -> None:
    from adept.config.llm import DEFAULT_RAG_INSTRUCTION
    from adept.demo.make_finetune import rag_examples

    examples = rag_examples()
    assert len(examples) == len(FACTS)
    for ex, (_doc, _subject, answer) in zip(examples, FACTS, strict=True):
        system, user, reply = (ex["messages"][i]["content"] for i in (0, -2, -1))
        assert system.endswith("\n\n" + DEFAULT_RAG_INSTRUCTION)
        assert user.startswith("[1] ")
        n = int(re.search(r"\[(\d)\]$", reply).group(1))
        cited = user.split(f"[{n}] ", 1)[1].split("\n\n[", 1)[0]
        assert answer in cited
