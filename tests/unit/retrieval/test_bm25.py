"""The platform's BM25: the analyzer, and the two halves whose inner product is the BM25 score."""

from __future__ import annotations

import math

from services.retrieval import bm25


def test_analyzer_splits_codes_and_folds_case() -> None:
    assert bm25.tokens("Pump PU-1042: ＳＰ-77 at 3.5bar, Ärger_x") == [
        "pump", "pu", "1042", "sp", "77", "3", "5bar", "ärger", "x"
    ]  # fmt: skip
    assert bm25.tokens("") == [] and bm25.tokens("--- !!") == [] and bm25.tokens("The AND of it") == []


def test_term_ids_are_stable_uint32() -> None:
    import zlib

    assert bm25.term_id("pump") == zlib.crc32(b"pump") % 0xFFFFFFFF  # the same in every process
    ids = {bm25.term_id(t) for t in ("pump", "valve", "1042", "ärger")}
    assert len(ids) == 4 and all(0 <= i < 2**32 - 1 for i in ids)


def test_inner_product_of_the_halves_is_textbook_bm25() -> None:
    docs = ["the pump PU-1 leaks oil", "valve V-2 is shut", "pump pump pump", "oil change for the valve"]
    query = "pump oil leaks"
    scores = bm25.bm25_scores(query, docs)
    n = len(docs)
    avg = bm25.PIVOT_TOKENS

    def textbook(doc: str) -> float:
        toks = bm25.tokens(doc)
        total = 0.0
        for term in set(bm25.tokens(query)):
            df = sum(term in bm25.tokens(d) for d in docs)
            tf = toks.count(term)
            if df and tf:
                idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                total += idf * tf * (bm25.K1 + 1) / (tf + bm25.K1 * (1 - bm25.B + bm25.B * len(toks) / avg))
        return total

    assert all(abs(a - b) < 1e-9 for a, b in zip(scores, [textbook(d) for d in docs], strict=True))
    assert scores[0] > scores[2] > 0 and scores[1] == 0


def test_query_leaves_out_terms_no_chunk_has() -> None:
    df = {bm25.term_id("pump"): 3}
    q = bm25.query_vector("pump zebra pump", 10, df)
    assert list(q) == [bm25.term_id("pump")]
    assert q[bm25.term_id("pump")] == 2 * bm25.idf(10, 3)
    assert bm25.query_vector("zebra", 10, df) == {}


def test_document_vector_saturates_and_normalizes_length() -> None:
    short = bm25.document_vector(bm25.term_counts("pump"))
    long = bm25.document_vector(bm25.term_counts("pump " + "filler " * 200))
    many = bm25.document_vector(bm25.term_counts("pump " * 50))
    pid = bm25.term_id("pump")
    assert short[pid] > long[pid] > 0
    assert many[pid] < bm25.K1 + 1  # saturation bound
    assert bm25.document_vector({}) == {}


def test_idf_is_never_negative_even_mid_update() -> None:
    assert bm25.idf(10, 10) > 0 and bm25.idf(3, 7) == bm25.idf(7, 7) > 0
