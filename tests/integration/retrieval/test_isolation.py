"""Tenant B never gets tenant A's chunks: search (dense and hybrid), list, delete by guessed id."""

from __future__ import annotations

import random

import numpy as np
import pytest

from adept.errors import NotFound
from tests.integration.retrieval.conftest import asset_files

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def two_tenants(kb):
    secret = [
        {"id": f"a-{i}", "text": f"SECRET-A {i}: the reactor code is {i * 7919} for gearbox oil and blades."}
        for i in range(30)
    ]
    kb.ingest_records("iso-a", secret)
    kb.ingest_files("iso-a", asset_files())  # A also holds the same public documents as B
    kb.ingest_files("iso-b", asset_files())
    return secret


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
def test_search_never_crosses_tenants(kb, two_tenants, mode) -> None:
    rng = random.Random(7)
    kb.config = kb.config.model_copy(update={"search_mode": mode})
    try:
        b_ids = {d.id for d in kb.list_documents("iso-b")}
        queries = [r["text"] for r in two_tenants] + ["SECRET-A reactor code", "gearbox oil", "a-3", "blades"]
        for _ in range(40):
            q = rng.choice(queries)
            flt = rng.choice([None, {"document_id": rng.choice(["a-1", "turbine"])}, {"category": "billing"}])
            hits = kb.search("iso-b", q, top_k=rng.randint(1, 100), filter=flt)
            assert all(h.document_id in b_ids and "SECRET-A" not in h.text for h in hits), (q, hits)
        # And A still finds its own secrets in the same mode.
        assert kb.search("iso-a", "SECRET-A reactor code 7919", top_k=5)[0].document_id.startswith("a-")
    finally:
        kb.config = kb.config.model_copy(update={"search_mode": "hybrid"})


def test_store_scoping_on_every_search_path(kb, two_tenants) -> None:
    """Many random probes straight at the store layer, dense and hybrid, with A's own vectors."""
    rng = np.random.default_rng(3)
    a_vectors = kb.embedder.embed([r["text"] for r in two_tenants])
    for i in range(200):
        vec = (
            a_vectors[i % len(a_vectors)]
            if i % 2
            else rng.standard_normal(kb.embedder.dim).astype(np.float32)
        )
        text = "SECRET-A reactor code" if i % 3 else None
        hits = kb.store.search("iso-b", vec.tolist(), limit=int(rng.integers(1, 200)), query_text=text)
        assert all(h["tenant"] == "iso-b" and not h["document_id"].startswith("a-") for h in hits)
    for query in ["SECRET-A reactor code gearbox oil", "a-0 reactor", "oil change interval code"]:
        hits = kb.store.keyword_search("iso-b", query, limit=200)  # BM25 alone, with B's own IDF
        assert all(h["tenant"] == "iso-b" and not h["document_id"].startswith("a-") for h in hits)
    assert kb.store.keyword_search("iso-a", "SECRET-A reactor code", limit=5)[0]["document_id"].startswith(
        "a-"
    )


def test_list_and_delete_by_guessed_id(kb, two_tenants) -> None:
    assert not any(d.id.startswith("a-") for d in kb.list_documents("iso-b"))
    for guess in ["a-0", "a-1", "a-29", "turbine/../a-0", "a-*"]:
        if guess == "turbine":
            continue
        with pytest.raises(NotFound):
            kb.delete_document("iso-b", guess)
    assert {f"a-{i}" for i in range(30)} <= {d.id for d in kb.list_documents("iso-a")}
    # B deleting its own "turbine" leaves A's "turbine" alone.
    kb.delete_document("iso-b", "turbine")
    assert "turbine" in {d.id for d in kb.list_documents("iso-a")}
    assert kb.search("iso-a", "gearbox oil change interval", top_k=3)[0].document_id == "turbine"
