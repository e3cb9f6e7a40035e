"""BM25 ranking does not depend on how chunks fall into Milvus segments, and old collections migrate.

Milvus Lite's own BM25 function scores each sealed segment with its own statistics; the platform
computes BM25 itself (services/retrieval/bm25.py). The same corpus ingested in one upload, in one
upload per document (a flush after each: many segments) and without any flush must rank and
score the same, and match BM25 computed directly over the tenant's chunk texts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from services.retrieval import bm25

pytestmark = pytest.mark.integration

CORPUS = sorted((Path(__file__).resolve().parents[3] / "adept" / "demo" / "corpus").glob("*.md"))
QUERIES = [
    "When must the transformer oil be sampled?",
    "lockout tagout isolation procedure",
    "breaker trip current",
    "Which spare part fits the pump seal?",
]


def _ranking(kb, tenant: str, query: str) -> list[tuple[str, float]]:
    """Every matching chunk by score (ties by chunk id: Milvus orders equal scores arbitrarily)."""
    hits = kb.store.keyword_search(tenant, query, limit=1000)
    return sorted(((h["chunk_id"], round(h["score"], 4)) for h in hits), key=lambda x: (-x[1], x[0]))


def test_bm25_is_the_same_whatever_the_segment_layout(kb, tenant, monkeypatch) -> None:
    records = [{"id": p.stem, "text": p.read_text()} for p in CORPUS]
    one, many, unflushed = f"{tenant}-one", f"{tenant}-many", f"{tenant}-unflushed"
    kb.ingest_records(one, records)  # one upload, one flush
    for r in records:  # one upload (one flush, one more segment) per document
        kb.ingest_records(many, [r])
    monkeypatch.setattr(kb.store, "seal", lambda: None)
    for r in reversed(records):  # never flushed, in another order
        kb.ingest_records(unflushed, [r])
    chunks = kb.store.client.query(
        kb.store.collection, filter=f'tenant == "{one}"', output_fields=["chunk_id", "text"], limit=10_000
    )
    for query in QUERIES:
        expected = _ranking(kb, one, query)
        assert expected, query
        assert _ranking(kb, many, query) == expected, query
        assert _ranking(kb, unflushed, query) == expected, query
        # ... and it is BM25 over the tenant's chunks, computed directly
        direct = dict(
            zip(
                [c["chunk_id"] for c in chunks],
                bm25.bm25_scores(query, [c["text"] for c in chunks]),
                strict=True,
            )
        )
        for chunk_id, score in expected:
            assert score == pytest.approx(direct[chunk_id], rel=1e-4, abs=1e-4)
        best = max(direct.values())
        assert expected[0][1] == pytest.approx(best, rel=1e-4, abs=1e-4)


def test_term_statistics_follow_updates_and_deletes(kb, tenant) -> None:
    kb.ingest_records(tenant, [{"id": "a", "text": "zebra pump"}, {"id": "b", "text": "zebra valve"}])
    n, df = kb.store.terms.get(tenant)
    assert n == 2 and df[bm25.term_id("zebra")] == 2 and df[bm25.term_id("pump")] == 1
    kb.ingest_records(tenant, [{"id": "a", "text": "okapi pump"}])  # replaced: zebra leaves a
    n, df = kb.store.terms.get(tenant)
    assert n == 2 and df[bm25.term_id("zebra")] == 1 and df[bm25.term_id("okapi")] == 1
    kb.delete_document(tenant, "b")
    n, df = kb.store.terms.get(tenant)
    assert n == 1 and bm25.term_id("zebra") not in df and bm25.term_id("valve") not in df
    # what is kept equals a recount from the stored chunks, and survives a reload
    kept = kb.store.terms.get(tenant)
    kb.store.terms._cache.clear()
    assert kb.store.terms.get(tenant) == kept
    kb.store.rebuild_term_stats(tenant)
    assert kb.store.terms.get(tenant) == kept
    kb.delete_tenant(tenant)
    assert kb.store.terms.get(tenant) == (0, {})


def test_other_tenants_do_not_change_a_tenants_scores(kb, tenant) -> None:
    a, b = f"{tenant}-a", f"{tenant}-b"
    kb.ingest_records(
        a, [{"id": "x", "text": "gearbox oil every 6 months"}, {"id": "y", "text": "valve check"}]
    )
    before = _ranking(kb, a, "gearbox oil")
    kb.ingest_records(b, [{"id": f"d{i}", "text": f"gearbox oil note {i}"} for i in range(30)])
    assert _ranking(kb, a, "gearbox oil") == before
    assert {h["tenant"] for h in kb.store.keyword_search(a, "gearbox oil note", limit=50)} == {a}


def test_a_collection_with_milvus_bm25_function_is_migrated(embedder, tmp_path) -> None:
    """A collection made by the previous release (Milvus' BM25 function) is rewritten once, in place."""
    from pymilvus import DataType, Function, FunctionType, MilvusClient

    from services.retrieval.knowledge_base import KnowledgeBase
    from services.retrieval.store import _pk

    uri = str(tmp_path / "old.db")
    client = MilvusClient(uri)
    schema = client.create_schema(auto_id=False)
    for name, kw in [("pk", {"datatype": DataType.VARCHAR, "is_primary": True, "max_length": 64}),
                     ("tenant", {"datatype": DataType.VARCHAR, "max_length": 64, "is_partition_key": True}),
                     ("document_id", {"datatype": DataType.VARCHAR, "max_length": 1024}),
                     ("chunk_id", {"datatype": DataType.VARCHAR, "max_length": 1100}),
                     ("generation", {"datatype": DataType.INT64}),
                     ("title", {"datatype": DataType.VARCHAR, "max_length": 4096}),
                     ("heading_path", {"datatype": DataType.VARCHAR, "max_length": 4096}),
                     ("text", {"datatype": DataType.VARCHAR, "max_length": 65535, "enable_analyzer": True}),
                     ("metadata", {"datatype": DataType.JSON}),
                     ("content_hash", {"datatype": DataType.VARCHAR, "max_length": 64}),
                     ("dense", {"datatype": DataType.FLOAT_VECTOR, "dim": embedder.dim}),
                     ("sparse", {"datatype": DataType.SPARSE_FLOAT_VECTOR})]:  # fmt: skip
        schema.add_field(name, **kw)
    schema.add_function(Function(name="text_bm25", function_type=FunctionType.BM25, input_field_names=["text"],
                                 output_field_names=["sparse"]))  # fmt: skip
    index = client.prepare_index_params()
    index.add_index("dense", index_type="FLAT", metric_type="IP")
    index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
    client.create_collection("adept_chunks", schema=schema, index_params=index)
    texts = {"pump": "The pump PU-7 seal is replaced yearly.", "valve": "Valve V-9 is greased monthly."}
    vecs = embedder.embed(list(texts.values()))
    client.insert("adept_chunks", [
        {"pk": _pk("old", d, 1, f"{d}#0"), "tenant": "old", "document_id": d, "chunk_id": f"{d}#0", "generation": 1,
         "title": d, "heading_path": "", "text": t, "metadata": {}, "content_hash": d, "dense": v.tolist()}
        for (d, t), v in zip(texts.items(), vecs, strict=True)
    ])  # fmt: skip
    client.close()
    # The records collection is the current one; only the chunk collection changed layout.
    kb = KnowledgeBase(milvus_uri=uri, embedder=embedder)
    try:
        kb.store.put_records("old", [
            {"document_id": d, "generation": 1, "title": d, "content_hash": d, "chunks": 1, "metadata": {}}
            for d in texts
        ])  # fmt: skip
        assert not kb.store.client.describe_collection("adept_chunks").get("functions")
        assert kb.store.terms.get("old")[0] == 2
        assert [h.document_id for h in kb.search("old", "PU-7 seal", top_k=1)] == ["pump"]
        assert kb.store.keyword_search("old", "greased monthly", limit=1)[0]["document_id"] == "valve"
    finally:
        kb.close()
