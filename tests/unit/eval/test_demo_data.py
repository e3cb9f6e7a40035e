"""The shipped demo data is consistent: ids exist, answers are in their documents, the fine-tune set is current."""

from __future__ import annotations

import json
import re

from adept.demo import corpus_dir, document_ids, eval_questions_path, finetune_path
from adept.demo.make_finetune import DOC_CODES, FACTS, build_examples, render
from tools.eval.dataset import load_eval_set


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
