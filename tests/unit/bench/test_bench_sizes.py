"""What the benchmarks promise about their comparisons, checked without running them."""

from __future__ import annotations

import math
from pathlib import Path

from bench import retrieval, training


def test_training_packs_rows_so_both_trainers_take_equal_steps(tiny_phi3: Path, tmp_path: Path) -> None:
    from training.data import read_examples

    train, evals = training._bench_data(tmp_path, copies=1)
    spec = {"model": str(tiny_phi3), "train": str(train), "eval": str(evals), "max_len": 256}
    pack_len, rows = training._pack_len_for_steps(spec, batch_size=4, seed=0)
    assert rows == math.ceil(len(read_examples(str(train))[0]) / 4)  # TRL's padded batches per epoch
    assert training._pack_len_for_steps(spec, batch_size=4, seed=0) == (pack_len, rows)


def _backend(index: str, hybrid: bool) -> dict:
    stats = {"qps": 100.0, "p50_ms": 9.0, "p99_ms": 20.0}
    return {"index": index, "search_params": {}, "dense": stats, "recall_at_10": 0.99, "queries": 200,
            "hybrid": {"qps": 50.0, "p50_ms": 18.0, "p99_ms": 40.0} if hybrid else None}  # fmt: skip


def test_retrieval_figures_name_the_index_and_why_a_backend_is_missing() -> None:
    result = {
        "chunks": 100_000,
        "ingest_chunks_per_s": 190.0,
        "encode_chunks_per_s": 200.0,
        "encode_sample": 20_000,
        "exact": {"qps": 150.0, "p50_ms": 6.0, "p99_ms": 9.0},
        "kb_search_ms": {"p50": 30.0, "p99": 60.0},
        "backends": {
            "lite_default": _backend("HNSW", hybrid=True),
            "lite_flat": _backend("FLAT", hybrid=True),
            "server": {"not_run": "cannot create a network namespace"},
        },
        "hit_at_5": {"generated": {"dense": 0.8, "hybrid": 1.0, "questions": 160}},
    }
    names = [f.figure for f in retrieval.make_figures(result)]
    assert names[0] == "ingest chunks/s through the knowledge base (100k chunks)"
    assert "recall@10, Milvus Lite as the platform leaves it (HNSW, 100k chunks)" in names
    assert "dense top-10 QPS, Milvus Lite, exact (FLAT, 100k chunks)" in names
    assert "hybrid top-10 QPS, Milvus Lite as the platform leaves it (HNSW, 100k chunks)" in names
    assert not any("Milvus server" in n for n in names)
    result["backends"]["server"] = {
        **_backend("HNSW", hybrid=False),
        "server": "Milvus 2.3.5 standalone (PyPI milvus)",
    }
    figures = {f.figure: f for f in retrieval.make_figures(result)}
    dense = figures["dense top-10 QPS, Milvus server (HNSW, Milvus 2.3.5 standalone, 100k chunks)"]
    assert dense.ratio == 100 / 150 and "no hybrid" in dense.note
