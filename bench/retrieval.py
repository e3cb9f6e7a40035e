"""Retrieval: ingestion throughput, query latency, index recall, and dense vs hybrid hit@5.

On a generated industrial corpus (equipment sheets with part codes, limits and intervals):
1. ingestion chunks/s through ``KnowledgeBase.ingest_records`` (parse, chunk, embed, insert,
   flip) vs the baseline ``SentenceTransformer.encode`` alone on the very same chunk texts;
2. query latency p50/p99 for top-10 (hybrid and dense);
3. recall@10 of the configured Milvus index vs exact brute force (numpy) on the same vectors;
4. hit@5 dense vs hybrid on a generated QA set whose questions paraphrase the documents, and on
   the demo question set (``adept/demo``) when present.

    python bench/retrieval.py [--quick] [--chunks N]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench._common import percentile, print_table, write_result

EQUIPMENT = [
    "pump",
    "valve",
    "transformer",
    "breaker",
    "compressor",
    "relay",
    "boiler",
    "turbine",
    "chiller",
    "inverter",
]
SUPPLIERS = ["Norvik", "Halden", "Strand", "Ostera", "Kalmar", "Vesta", "Lumen", "Arden"]
SITES = ["north plant", "harbour depot", "east substation", "river station", "hill yard", "central works"]


def make_corpus(n_docs: int, seed: int = 0) -> tuple[list[dict], list[tuple[str, str]]]:
    """``(records, questions)``: Markdown equipment sheets and paraphrased questions ``(question, doc id)``."""
    rng = random.Random(seed)
    records, questions = [], []
    for i in range(n_docs):
        kind = rng.choice(EQUIPMENT)
        code = f"{kind[:2].upper()}-{1000 + i}"
        months, torque, temp = rng.randint(2, 36), rng.randint(10, 900), rng.randint(40, 180)
        supplier, site, spare = rng.choice(SUPPLIERS), rng.choice(SITES), f"SP-{rng.randint(10000, 99999)}"
        text = (
            f"# {kind.title()} {code} maintenance sheet\n\n"
            f"## Inspection\n\nThe {kind} {code} at the {site} must be inspected every {months} months by a "
            f"certified technician, who records the readings in the asset log.\n\n"
            f"Vibration above the alarm band on {code} means the inspection is brought forward.\n\n"
            f"## Limits\n\nThe {kind} {code} must not run above {temp} degrees Celsius; at that point the "
            f"controller trips it and the control room is alerted.\n\n"
            f"Flange bolts on {code} are tightened to {torque} newton metres in a star pattern.\n\n"
            f"## Parts\n\nThe seal kit for {code} is spare part {spare}, supplied by {supplier}, and two kits "
            f"are kept in stock at the {site}.\n\n"
            f"## Safety\n\nBefore opening {code}, isolate it, lock it out and prove it dead; a second person "
            f"checks the isolation.\n"
        )
        doc_id = f"sheet-{i}"
        records.append({"id": doc_id, "title": f"{kind.title()} {code}", "text": text})
        if i % max(1, n_docs // 40) == 0:  # ~160 questions, spread over the corpus
            questions += [
                (f"How frequently does {code} need an inspection?", doc_id),
                (f"What is the highest temperature {code} may operate at?", doc_id),
                (f"Which torque applies to the bolts of {code}?", doc_id),
                (f"Who supplies the seal kit of {code} and what is its part number?", doc_id),
            ]
    return records, questions


def demo_questions() -> tuple[list[dict], list[tuple[str, str]]]:
    """The demo corpus and its questions, when the demo package is present."""
    try:
        import json

        from adept.demo import corpus_dir, eval_questions_path
    except ImportError:
        return [], []
    records = [{"id": p.stem, "text": p.read_text()} for p in sorted(corpus_dir().glob("*.md"))]
    qs = []
    for line in eval_questions_path().read_text().splitlines():
        if line.strip():
            q = json.loads(line)
            qs += [(q["question"], q["reference_documents"][0])] if q.get("reference_documents") else []
    return records, qs


def hit_at(kb, tenant: str, questions: list[tuple[str, str]], mode: str, k: int = 5) -> float:
    kb.config = kb.config.model_copy(update={"search_mode": mode})
    hits = sum(doc in {h.document_id for h in kb.search(tenant, q, top_k=k)} for q, doc in questions)
    return hits / max(1, len(questions))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="~5k chunks instead of >= 100k")
    parser.add_argument("--chunks", type=int, default=None, help="target chunk count (overrides --quick)")
    parser.add_argument("--queries", type=int, default=None, help="latency / recall queries")
    args = parser.parse_args()
    target = args.chunks or (5_000 if args.quick else 100_000)
    n_queries = args.queries or (50 if args.quick else 200)

    import numpy as np

    from adept.config.retrieval import RetrievalConfig
    from services.retrieval.embedding import Embedder
    from services.retrieval.ingest import record_to_document
    from services.retrieval.knowledge_base import KnowledgeBase
    from services.retrieval.protocol import IngestRecord

    # Each sheet makes 5 chunks of <= 48 tokens (short paragraphs pack together).
    config = RetrievalConfig(chunk_size_tokens=48, chunk_overlap_tokens=0, embedding_batch_size=64)
    records, questions = make_corpus(max(1, target // 5))
    embedder = Embedder("bundled:all-minilm-l6-v2", batch_size=config.embedding_batch_size)
    embedder.embed(["warm up"] * 64)
    tmp = Path(tempfile.mkdtemp(prefix="adept-bench-"))
    kb = KnowledgeBase(config, milvus_uri=str(tmp / "bench.db"), embedder=embedder)

    print(f"ingesting {len(records)} documents ...", flush=True)
    # 1. ingestion vs raw encode on the same chunk texts
    chunked = [
        (f"{r['id']}#{c.index}", c.text)
        for r in records
        for c in kb.chunker.chunk(record_to_document(IngestRecord(**r), r["id"]))
    ]
    chunk_ids, texts = [c for c, _ in chunked], [t for _, t in chunked]
    t0 = time.perf_counter()
    result = kb.ingest_records("bench", records)
    ingest_s = time.perf_counter() - t0
    n_chunks = sum(d.chunks for d in result.documents)
    assert n_chunks == len(texts) and not result.errors, (n_chunks, len(texts), result.errors[:3])
    t0 = time.perf_counter()
    raw = embedder.model.encode(texts, batch_size=config.embedding_batch_size, normalize_embeddings=True)
    encode_s = time.perf_counter() - t0
    ingest_rate, encode_rate = n_chunks / ingest_s, len(texts) / encode_s

    print(f"ingest {ingest_rate:.1f} chunks/s, encode {encode_rate:.1f} chunks/s; querying ...", flush=True)
    # 2. latency, 3. recall vs brute force on the vectors Milvus holds
    rng = random.Random(1)
    probe = [q for q, _ in rng.sample(questions, min(n_queries, len(questions)))]
    probe += [rng.choice(texts)[:80] for _ in range(n_queries - len(probe))]
    latency = {}
    for mode in ("hybrid", "dense"):
        kb.config = kb.config.model_copy(update={"search_mode": mode})
        times = []
        for q in probe:
            t0 = time.perf_counter()
            kb.search("bench", q, top_k=10)
            times.append((time.perf_counter() - t0) * 1000)
        latency[mode] = (percentile(times, 50), percentile(times, 99))
    known = set(chunk_ids)
    qvecs = embedder.embed(probe)
    recall = []
    for q, vec in zip(probe, qvecs, strict=True):
        got = {h["chunk_id"] for h in kb.store.search("bench", vec.tolist(), limit=10)}
        exact = {chunk_ids[i] for i in np.argsort(-(raw @ vec))[:10]}
        recall.append(len(got & exact) / 10)
        assert got <= known, q

    # 4. QA hit@5, dense vs hybrid, on the generated set and the demo set
    qa = {"generated": (hit_at(kb, "bench", questions, "dense"), hit_at(kb, "bench", questions, "hybrid"))}
    demo_records, demo_qs = demo_questions()
    if demo_qs:
        kb.config = config
        kb.ingest_records("demo-bench", demo_records)
        qa["demo"] = (hit_at(kb, "demo-bench", demo_qs, "dense"), hit_at(kb, "demo-bench", demo_qs, "hybrid"))
    kb.close()

    index_type = kb.store.index_type
    print_table(
        f"Retrieval on {n_chunks} chunks ({len(records)} documents), Milvus Lite, index {index_type}",
        ["measure", "value", "baseline", "ratio"],
        [
            ["ingest chunks/s (KnowledgeBase)", ingest_rate, f"{encode_rate:.1f} (encode only)", ingest_rate / encode_rate],
            ["query p50 ms top-10 hybrid", latency["hybrid"][0], "", ""],
            ["query p99 ms top-10 hybrid", latency["hybrid"][1], "", ""],
            ["query p50 ms top-10 dense", latency["dense"][0], "", ""],
            ["query p99 ms top-10 dense", latency["dense"][1], "", ""],
            [f"recall@10 {index_type} vs brute force", float(np.mean(recall)), "1.0 (exact)", float(np.mean(recall))],
            *[[f"hit@5 {name} ({len(questions) if name == 'generated' else len(demo_qs)} q)", h, f"{d:.3f} (dense)", h / max(d, 1e-9)]
              for name, (d, h) in qa.items()],
        ],
    )  # fmt: skip
    write_result(
        "retrieval",
        {
            "chunks": n_chunks,
            "documents": len(records),
            "index": index_type,
            "ingest_chunks_per_s": ingest_rate,
            "encode_chunks_per_s": encode_rate,
            "ingest_vs_encode_ratio": ingest_rate / encode_rate,
            "latency_ms": {m: {"p50": p50, "p99": p99} for m, (p50, p99) in latency.items()},
            "recall_at_10": float(np.mean(recall)),
            "hit_at_5": {name: {"dense": d, "hybrid": h} for name, (d, h) in qa.items()},
            "quick": args.quick,
        },
    )


if __name__ == "__main__":
    main()
