"""Retrieval at scale: ingestion, recall of the index actually used, QPS and latency, dense and hybrid.

On a generated industrial corpus (equipment sheets with part codes, limits and intervals; about
five chunks per sheet) and these Milvus backends:

* **Milvus Lite as the platform leaves it**: chunks go in through ``KnowledgeBase.ingest_records``
  into the Lite file, which the platform flushes once per upload; index ``auto`` (HNSW). BM25 is
  the platform's own (document half stored as a sparse vector, tenant-wide IDF at query time:
  ``services/retrieval/bm25.py``), so flushing does not change its scores;
* **Milvus Lite, FLAT** (exact) after ``flush()``: the same rows, the exact-search reference;
* **a Milvus server** (PyPI ``milvus``, a standalone Milvus 2.3, index ``auto`` = HNSW) started in a
  loopback-only network namespace, where that can be done here; Milvus 2.3 has no sparse vectors
  (2.4+), so the platform runs dense-only there.

Figures, each against a baseline measured in the same run:
1. ingestion chunks/s through ``KnowledgeBase.ingest_records`` (parse, chunk, embed, BM25, insert,
   flip, flush) vs ``SentenceTransformer.encode`` alone on the same chunk texts (a sample at large scales);
2. recall@10 of each backend's dense search vs exact search (numpy, on the vectors Milvus holds);
3. dense QPS and p50/p99 latency (one client, top-10, the platform's tenant-scoped
   ``ChunkStore.search``) vs exact numpy search; hybrid (dense + BM25, RRF) vs dense;
4. hit@5 hybrid vs dense on generated paraphrased questions, and on the demo question set.

    python bench/retrieval.py [--quick] [--scale N] [--queries Q]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench._common import Figure, Run, percentile, print_table, run_worker, worker_main
from bench._retrieval_corpus import demo_questions, make_corpus

TENANT = "bench"
INSERT_BATCH = 1024


# -- what every backend is measured with --------------------------------------------------------
def exact_top10(vectors: Any, queries: Any) -> tuple[list[list[int]], list[float]]:
    """Exact top-10 row indices per query (numpy inner product) and the per-query latency in ms."""
    import numpy as np

    tops, times = [], []
    for q in queries:
        t0 = time.perf_counter()
        scores = vectors @ q
        top = np.argpartition(-scores, 10)[:10]
        tops.append(top[np.argsort(-scores[top])].tolist())
        times.append((time.perf_counter() - t0) * 1000)
    return tops, times


def latency_stats(times_ms: list[float]) -> dict[str, float]:
    return {
        "qps": 1000 * len(times_ms) / sum(times_ms),
        "p50_ms": percentile(times_ms, 50),
        "p99_ms": percentile(times_ms, 99),
    }


def timed_queries(run_one: Any, items: list, desc: str, budget_s: float | None) -> list[float]:
    """Per-query latency in ms; stops after ``budget_s`` seconds (at least 5 queries) when given."""
    from tqdm import tqdm

    times: list[float] = []
    started = time.perf_counter()
    for item in tqdm(items, desc=desc, leave=False):
        t0 = time.perf_counter()
        run_one(item)
        times.append((time.perf_counter() - t0) * 1000)
        if budget_s is not None and len(times) >= 5 and time.perf_counter() - started > budget_s:
            break
    return times


def measure_store(
    store: Any,
    qvecs: list[list[float]],
    texts: list[str],
    exact: list[set[str]],
    budget_s: float | None = None,
) -> dict:
    """Dense (with recall@10 vs ``exact`` chunk ids) and, where the store has BM25, hybrid search;
    each mode stops after ``budget_s`` seconds when given (slow backends get fewer queries)."""
    for v, t in zip(qvecs[:3], texts[:3], strict=False):  # warm-up: connections, caches, lazy loads
        store.search(TENANT, v, limit=10)
        if store.has_sparse:
            store.search(TENANT, v, limit=10, query_text=t)
    recall: list[float] = []

    def dense(i: int) -> None:
        hits = store.search(TENANT, qvecs[i], limit=10)
        recall.append(len({h["chunk_id"] for h in hits} & exact[i]) / 10)

    times = timed_queries(dense, list(range(len(qvecs))), "dense", budget_s)
    out: dict[str, Any] = {
        "index": store.index_type,
        "search_params": store.search_params,
        "dense": latency_stats(times),
        "recall_at_10": sum(recall) / len(recall),
        "queries": len(times),
        "hybrid": None,
    }
    if store.has_sparse:
        pairs = list(zip(qvecs, texts, strict=True))
        times = timed_queries(
            lambda p: store.search(TENANT, p[0], limit=10, query_text=p[1]), pairs, "hybrid", budget_s
        )
        out["hybrid"] = {**latency_stats(times), "queries": len(times)}
    return out


def load_rows(store: Any, rows: list[dict], vectors: Any, *, upsert: bool = True) -> float:
    """Write the corpus' chunk rows with their vectors; returns seconds.

    ``upsert``: through ``ChunkStore.insert_chunks`` as the platform writes. Otherwise a plain
    Milvus ``insert`` of the same rows (same primary keys): Milvus 2.3's upsert ignores the partition
    key, so a tenant-filtered search there would only find the rows that hashed by luck.
    """
    from tqdm import tqdm

    from services.retrieval.store import _pk

    t0 = time.perf_counter()
    for start in tqdm(range(0, len(rows), INSERT_BATCH), desc="insert", leave=False):
        part = rows[start : start + INSERT_BATCH]
        batch = [
            {**r, "dense": v.tolist()}
            for r, v in zip(part, vectors[start : start + INSERT_BATCH], strict=True)
        ]
        if upsert or store.has_sparse:  # insert_chunks computes the BM25 vectors and term statistics
            store.insert_chunks(TENANT, batch)
        else:
            keyed = [{**r, "tenant": TENANT, "pk": _pk(TENANT, r["document_id"], r["generation"], r["chunk_id"])}
                     for r in batch]  # fmt: skip
            store.client.insert(store.collection, keyed)
    return time.perf_counter() - t0


def backend_run(uri: str, index: dict, data: dict, *, upsert: bool = True) -> dict:
    """Fill a fresh collection at ``uri`` with the corpus (with the platform's BM25 vectors), flush,
    wait for the index, measure."""
    from adept.config.retrieval import IndexConfig
    from services.retrieval.store import ChunkStore

    store = ChunkStore(uri, "bench_chunks", int(data["vectors"].shape[1]), index=IndexConfig(**index))
    try:
        insert_s = load_rows(store, data["rows"], data["vectors"], upsert=upsert)
        t0 = time.perf_counter()
        store.client.flush(store.collection)  # seal segments: an index applies only to flushed data
        indexed = wait_for_index(store, len(data["rows"]))
        flush_s = time.perf_counter() - t0
        out = measure_store(store, data["qvecs"], data["texts"], data["exact"])
    finally:
        store.close()
    return {**out, "insert_rows_per_s": len(data["rows"]) / insert_s, "flush_index_s": flush_s, **indexed}


def wait_for_index(store: Any, rows: int, timeout_s: float = 1800) -> dict:
    """Poll until the dense index covers every row (a server builds it asynchronously after flush)."""
    deadline = time.monotonic() + timeout_s
    while True:
        info = store.client.describe_index(store.collection, "dense")
        indexed, pending = info.get("indexed_rows"), info.get("pending_index_rows", 0)
        if indexed is None or (indexed >= rows and not pending) or time.monotonic() > deadline:
            return {"indexed_rows": indexed, "index_state": info.get("state")}
        time.sleep(1)


# -- workers ------------------------------------------------------------------------------------
def worker_server(spec: dict) -> dict:
    """In a loopback-only network namespace: start a Milvus server, load the corpus, measure."""
    from bench._milvus_server import IsolatedMilvus

    data = load_corpus(Path(spec["corpus"]))
    server = IsolatedMilvus(Path(spec["workdir"]))
    try:
        t0 = time.perf_counter()
        uri = server.start()
        started_s = time.perf_counter() - t0
        out = backend_run(uri, {}, data, upsert=False)
    finally:
        server.stop()
    import milvus

    return {
        **out,
        "server": f"Milvus {milvus.__version__} standalone (PyPI milvus)",
        "start_s": started_s,
        "written_with": "insert (Milvus 2.3's upsert ignores the partition key)",
    }


def save_corpus(
    dest: Path, rows: list[dict], vectors: Any, qvecs: Any, texts: list[str], exact: list
) -> Path:
    import json

    import numpy as np

    dest.mkdir(parents=True, exist_ok=True)
    np.save(dest / "vectors.npy", vectors)
    np.save(dest / "qvecs.npy", np.asarray(qvecs, dtype=np.float32))
    (dest / "rows.json").write_text(
        json.dumps({"rows": rows, "texts": texts, "exact": [sorted(e) for e in exact]})
    )
    return dest


def load_corpus(src: Path) -> dict:
    import json

    import numpy as np

    meta = json.loads((src / "rows.json").read_text())
    return {
        "rows": meta["rows"],
        "vectors": np.load(src / "vectors.npy"),
        "qvecs": np.load(src / "qvecs.npy").tolist(),
        "texts": meta["texts"],
        "exact": [set(e) for e in meta["exact"]],
    }


class InsertTap:
    """Keeps a copy of every chunk row the knowledge base inserts (vectors as float32), then inserts it.

    The real insert still happens; the copy lets the other backends load exactly the same rows.
    """

    def __init__(self, store: Any) -> None:
        from tqdm import tqdm

        self.rows: list[dict] = []
        self.vectors: list[Any] = []
        self._store, self._insert = store, store.insert_chunks
        self._bar = tqdm(desc="ingest (KnowledgeBase)", unit="chunk")
        store.insert_chunks = self

    def __call__(self, tenant: str, rows: list[dict]) -> None:
        import numpy as np

        self._insert(tenant, rows)
        self.rows += [{k: v for k, v in r.items() if k != "dense"} for r in rows]
        self.vectors.append(np.asarray([r["dense"] for r in rows], dtype=np.float32))
        self._bar.update(len(rows))

    def detach(self) -> tuple[list[dict], Any]:
        """Stop copying; returns the rows and their vectors as one float32 matrix."""
        import numpy as np

        self._store.insert_chunks = self._insert
        self._bar.close()
        return self.rows, np.concatenate(self.vectors)


def hit_at(kb: Any, questions: list[tuple[str, str]], mode: str, tenant: str, k: int = 5) -> float:
    kb.config = kb.config.model_copy(update={"search_mode": mode})
    hits = sum(doc in {h.document_id for h in kb.search(tenant, q, top_k=k)} for q, doc in questions)
    return hits / max(1, len(questions))


# -- the run ------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 chunks instead of 100,000 (the CI smoke)")
    parser.add_argument(
        "--scale", "--chunks", dest="scale", type=int, help="chunks to index (default 100000)"
    )
    parser.add_argument("--queries", type=int, help="queries per measurement (default 200, quick 50)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main({"server": worker_server}, args.worker, args.spec)
        return
    run = Run("retrieval", args)
    target = args.scale or (2_000 if args.quick else 100_000)
    n_queries = args.queries or (50 if args.quick else 200)
    result = measure(target, n_queries)
    report(run, result)


def measure(target: int, n_queries: int) -> dict:
    import numpy as np

    from adept.config.retrieval import RetrievalConfig
    from bench._milvus_server import isolation_prefix
    from services.retrieval.embedding import Embedder
    from services.retrieval.knowledge_base import KnowledgeBase

    tmp = Path(tempfile.mkdtemp(prefix="adept-bench-retrieval-"))
    # Each sheet makes 5 chunks of <= 48 tokens (short paragraphs pack together).
    config = RetrievalConfig(chunk_size_tokens=48, chunk_overlap_tokens=0, embedding_batch_size=64)
    records, questions = make_corpus(max(1, target // 5))
    embedder = Embedder("bundled:all-minilm-l6-v2", batch_size=config.embedding_batch_size)
    embedder.embed(["warm up"] * 64)
    kb = KnowledgeBase(config, milvus_uri=str(tmp / "lite.db"), embedder=embedder)
    tap = InsertTap(kb.store)

    # 1. ingestion through the knowledge base vs bare encode of the same texts
    t0 = time.perf_counter()
    ingested = kb.ingest_records(TENANT, records)
    ingest_s = time.perf_counter() - t0
    rows, vectors = tap.detach()
    n = len(rows)
    assert not ingested.errors and n == sum(d.chunks for d in ingested.documents), ingested.errors[:3]
    # Bare encode on a sample of the same texts: a rate needs thousands, not all 100k again.
    sample = random.Random(0).sample([r["text"] for r in rows], min(n, max(1_000, n // 10)))
    t0 = time.perf_counter()
    embedder.model.encode(sample, batch_size=config.embedding_batch_size, normalize_embeddings=True)
    encode_rate = len(sample) / (time.perf_counter() - t0)
    print(f"ingest {n / ingest_s:.0f} chunks/s, bare encode {encode_rate:.0f} chunks/s", flush=True)

    # 2.-3. queries: paraphrased questions, then chunk openings; exact answers from numpy
    rng = random.Random(1)
    texts = [q for q, _ in rng.sample(questions, min(n_queries, len(questions)))]
    texts += [rng.choice(rows)["text"][:80] for _ in range(n_queries - len(texts))]
    qvecs = embedder.embed(texts)
    tops, exact_ms = exact_top10(vectors, qvecs)
    exact = [{rows[i]["chunk_id"] for i in top} for top in tops]
    data = {"rows": rows, "vectors": vectors, "qvecs": qvecs.tolist(), "texts": texts, "exact": exact}
    # The platform flushed the Lite file once at the end of the upload: indexed search from here on.
    print(f"Milvus Lite as the platform leaves it (flushed, {kb.store.index_type}) ...", flush=True)
    budget = 120.0  # seconds per mode at most: a regression shows up as few queries, not as an hour
    backends: dict[str, Any] = {"lite_default": measure_store(kb.store, data["qvecs"], texts, exact, budget)}
    # End to end as a tenant sees it: embed + hybrid search + live-version check.
    kb_times = timed_queries(lambda q: kb.search(TENANT, q, top_k=10), texts, "KnowledgeBase.search", budget)

    # 4. answer quality, dense vs hybrid
    asked = random.Random(2).sample(questions, min(len(questions), n_queries))
    qa = {
        "generated": (
            hit_at(kb, asked, "dense", TENANT),
            hit_at(kb, asked, "hybrid", TENANT),
            len(asked),
        )
    }
    demo_records, demo_qs = demo_questions()
    kb.config = config
    kb.ingest_records("demo-bench", demo_records)
    qa["demo"] = (
        hit_at(kb, demo_qs, "dense", "demo-bench"),
        hit_at(kb, demo_qs, "hybrid", "demo-bench"),
        len(demo_qs),
    )
    kb.close()
    print(f"Lite (platform default) done; Lite FLAT (exact) after flush on {n} rows ...", flush=True)
    backends["lite_flat"] = backend_run(str(tmp / "lite-flat.db"), {"type": "FLAT"}, data)

    prefix, why_not = isolation_prefix()
    if prefix is None:
        print(f"Milvus server NOT measured: {why_not}", flush=True)
        backends["server"] = {"not_run": why_not}
    else:
        print("Milvus server in a loopback-only network namespace ...", flush=True)
        corpus = save_corpus(tmp / "corpus", rows, vectors, qvecs, texts, exact)
        spec = {"corpus": str(corpus), "workdir": str(tmp / "milvus-server")}
        backends["server"] = run_worker(__file__, "server", spec, prefix=prefix)
    return {
        "chunks": n,
        "documents": len(records),
        "ingest_chunks_per_s": n / ingest_s,
        "encode_chunks_per_s": encode_rate,
        "encode_sample": len(sample),
        "exact": latency_stats(exact_ms),
        "kb_search_ms": {"p50": percentile(kb_times, 50), "p99": percentile(kb_times, 99)},
        "backends": backends,
        "hit_at_5": {k: {"dense": d, "hybrid": h, "questions": q} for k, (d, h, q) in qa.items()},
        "embedding_dtype": str(next(embedder.model.parameters()).dtype).removeprefix("torch."),
        "vector_matrix_mb": vectors.nbytes / 2**20,
        "numpy": np.__version__,
    }


def report(run: Run, r: dict) -> None:
    figures = make_figures(r)
    rows = [(f.figure, f.value, f"{f.baseline_value:.4g} ({f.baseline})", f.ratio or "") for f in figures]
    print_table(
        f"Retrieval on {r['chunks']} chunks ({r['documents']} documents), top-10, one client",
        ["figure", "value", "baseline", "ratio"],
        rows,
    )
    if "not_run" in r["backends"]["server"]:
        print(f"Milvus server not measured: {r['backends']['server']['not_run']}")
    run.write(figures, dtype=r["embedding_dtype"], details=r)


def make_figures(r: dict) -> list[Figure]:
    """The report's rows: ingestion, then per backend recall, dense QPS and hybrid QPS, then hit@5."""
    size = f"{r['chunks'] / 1000:.0f}k chunks" if r["chunks"] >= 10_000 else f"{r['chunks']} chunks"
    exact = r["exact"]
    figures = [
        Figure(f"ingest chunks/s through the knowledge base ({size})", r["ingest_chunks_per_s"], "chunks/s",
               "bare SentenceTransformer.encode", r["encode_chunks_per_s"],
               note=f"parse, chunk, embed, insert, flip; encode timed on {r['encode_sample']} of the same texts"),
    ]  # fmt: skip
    names = {
        "lite_default": "Milvus Lite as the platform leaves it",
        "lite_flat": "Milvus Lite, exact",
        "server": "Milvus server",
    }
    for key, label in names.items():
        b = r["backends"].get(key)
        if b is None or "not_run" in b:
            continue
        where = f"{label} ({b['index']}{', ' + b['server'].split(' (')[0] if 'server' in b else ''}, {size})"
        figures += [
            Figure(f"recall@10, {where}", b["recall_at_10"], "", "exact search (numpy)", 1.0,
                   note=f"search params {b['search_params'] or '{}'}"),
            Figure(f"dense top-10 QPS, {where}", b["dense"]["qps"], "queries/s", "exact search (numpy)",
                   exact["qps"], note=f"p50 {b['dense']['p50_ms']:.1f} ms, p99 {b['dense']['p99_ms']:.1f} ms "
                   f"(numpy p50 {exact['p50_ms']:.1f}, p99 {exact['p99_ms']:.1f}); {b['queries']} queries"),
        ]  # fmt: skip
        if b["hybrid"]:
            figures.append(
                Figure(f"hybrid top-10 QPS, {where}", b["hybrid"]["qps"], "queries/s", "dense search, same backend",
                       b["dense"]["qps"], note=f"p50 {b['hybrid']['p50_ms']:.1f} ms, p99 {b['hybrid']['p99_ms']:.1f} ms")
            )  # fmt: skip
        elif key == "server":
            figures[
                -1
            ].note += "; no hybrid: Milvus 2.3 has no sparse vectors (2.4+), the platform runs dense-only"
    for name, qa in r["hit_at_5"].items():
        figures.append(
            Figure(f"hit@5 hybrid, {name} questions ({qa['questions']})", qa["hybrid"], "", "dense", qa["dense"],
                   note=f"end-to-end KnowledgeBase.search p50 {r['kb_search_ms']['p50']:.0f} ms" if name == "generated" else "")
        )  # fmt: skip
    return figures


if __name__ == "__main__":
    main()
