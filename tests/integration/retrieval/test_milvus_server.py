"""The chunk store on a real Milvus server (PyPI ``milvus``, standalone 2.3) in a loopback-only namespace.

Milvus 2.3 has no BM25 function: the store must fall back to dense-only (it used to fail with
"create duplicate collection with different parameters", leaving no way to use a 2.3 server).
This runs the retrieval benchmark's own server worker on a small random corpus.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench import retrieval
from bench._common import run_worker
from bench._milvus_server import isolation_prefix

pytestmark = pytest.mark.integration


def test_dense_only_store_on_a_milvus_2_3_server_finds_the_exact_neighbours(tmp_path: Path) -> None:
    prefix, why_not = isolation_prefix()
    if prefix is None:
        pytest.skip(f"no isolated Milvus server here: {why_not}")
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((600, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = [
        {"document_id": f"d{i}", "chunk_id": f"d{i}#0", "generation": 1, "title": "t", "heading_path": "",
         "text": f"pump PU-{i}", "metadata": {}, "content_hash": "h"}
        for i in range(len(vectors))
    ]  # fmt: skip
    queries = vectors[:20] + 0.05 * rng.standard_normal((20, 32)).astype(np.float32)
    tops, _ = retrieval.exact_top10(vectors, queries)
    exact = [{rows[i]["chunk_id"] for i in top} for top in tops]
    corpus = retrieval.save_corpus(tmp_path / "corpus", rows, vectors, queries, ["pump"] * 20, exact)
    spec = {"corpus": str(corpus), "workdir": str(tmp_path / "server")}

    out = run_worker(Path(retrieval.__file__), "server", spec, prefix=prefix, timeout_s=600)

    assert out["index"] == "HNSW" and out["indexed_rows"] == len(rows)
    assert out["hybrid"] is None  # no BM25 on 2.3: dense only, and said so
    assert out["recall_at_10"] >= 0.9
    assert out["server"].startswith("Milvus 2.3")
    assert not (tmp_path / "server").exists()  # binaries, config and data removed with the server
