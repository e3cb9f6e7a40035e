"""Shared fixtures: one real MiniLM embedder per session, one Milvus Lite file per module."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from adept.config.retrieval import RetrievalConfig

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "retrieval"
_names = itertools.count()


@pytest.fixture(scope="session")
def embedder():
    from services.retrieval.embedding import Embedder

    return Embedder("bundled:all-minilm-l6-v2", batch_size=32)


@pytest.fixture(scope="module")
def kb(embedder, tmp_path_factory):
    from services.retrieval.knowledge_base import KnowledgeBase

    kb = KnowledgeBase(
        RetrievalConfig(chunk_size_tokens=64, chunk_overlap_tokens=8),
        milvus_uri=str(tmp_path_factory.mktemp("milvus") / "kb.db"),
        embedder=embedder,
    )
    yield kb
    kb.close()


@pytest.fixture
def tenant() -> str:
    """A fresh tenant name per test: tests share one collection, as tenants do."""
    return f"t{next(_names)}-{id(object()) % 10_000}"


def asset_files() -> list[tuple[str, bytes]]:
    from tests.assets.retrieval.make_docs import make_docx, make_pdf

    files = [
        (p.name, p.read_bytes()) for p in sorted(ASSETS.iterdir()) if p.suffix in {".md", ".html", ".txt"}
    ]
    files.append(("faq.jsonl", (ASSETS / "faq.jsonl").read_bytes()))
    files.append(
        (
            "relay.pdf",
            make_pdf([["Relay R-7 trips at 420 amperes.", "Reset it from the panel."]], title="Relay sheet"),
        )
    )
    files.append(
        (
            "permits.docx",
            make_docx("Permit policy", {"Validity": ["A hot-work permit expires after 4 hours."]}),
        )
    )
    return files


def stored_chunks(kb, tenant: str) -> int:
    """Raw chunk rows of ``tenant`` in Milvus (live or not): what duplicates would show up in."""
    res = kb.store.client.query(
        kb.store.collection, filter=f'tenant == "{tenant}"', output_fields=["count(*)"]
    )
    return int(res[0]["count(*)"])
