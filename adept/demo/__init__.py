"""Demo data for a fictional electric utility, Lumen Grid Co.

The corpus holds invented facts (codes, prices, distances) that no base model can know, so
RAG visibly helps. Document ids are the corpus file stems (``safety-manual`` for
``corpus/safety-manual.md``); ``eval_questions.jsonl`` refers to documents by those ids.
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent

TENANT = "demo"


def corpus_dir() -> Path:
    """Directory of the demo corpus (``*.md``, one document per file; id = file stem)."""
    return _HERE / "corpus"


def eval_questions_path() -> Path:
    """The demo question set (JSONL, the ``adept eval`` format)."""
    return _HERE / "eval_questions.jsonl"


def finetune_path() -> Path:
    """The demo fine-tuning set (JSONL, OpenAI chat format ``{"messages": [...]}``)."""
    return _HERE / "finetune.jsonl"


def document_ids() -> list[str]:
    """Ids of the demo documents, sorted."""
    return sorted(p.stem for p in corpus_dir().glob("*.md"))
