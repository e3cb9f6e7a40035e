"""Run an eval end to end: discover routes, retrieve, ask every question on every route, score, recommend.

Against a running platform (``--url`` + ``--api-key``), or against an embedded platform started
for the run (``services.embedded.start_platform``, demo tenant) and stopped afterwards.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from adept.errors import AdeptError, AuthenticationError, NotFound, PermissionDenied, Unavailable
from adept.evalset import EvalSet
from tools.eval import metrics as m
from tools.eval.client import PlatformClient
from tools.eval.recommend import compare, recommend
from tools.eval.routes import ROUTES, Decoding, Route, RoutePlan, ask, plan_routes, split_models
from tools.eval.scoring import Retrieved, RouteResult, headline_metric, score_question, summarise

# Errors that would fail every question the same way: stop the run instead of recording each.
_FATAL = (AuthenticationError, PermissionDenied, Unavailable)


@dataclass
class EvalOptions:
    routes: list[Route] = field(default_factory=lambda: list(ROUTES.values()))
    adapter: str | None = None
    decoding: Decoding = field(default_factory=Decoding)
    n_resamples: int = 2000
    seed: int = 0


def _count_documents(client: PlatformClient, probe: str, k: int) -> int:
    try:
        return len(client.list_documents())
    except NotFound:
        # A server without the listing endpoint: a search that finds anything means a non-empty KB.
        return len(client.search(probe, k))


def _progress(enabled: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description:<22}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not enabled,
    )


def run_eval(
    client: PlatformClient, eval_set: EvalSet, options: EvalOptions | None = None, *, progress: bool = True
) -> dict[str, Any]:
    """Run the eval and return the report (a JSON-serialisable dict)."""
    opts = options or EvalOptions()
    dec = opts.decoding
    started = time.perf_counter()
    items = eval_set.items
    base_model, adapters = split_models(client.list_models())
    kb_docs = _count_documents(client, items[0].question, dec.top_k)
    plans = plan_routes(
        opts.routes,
        base_model=base_model,
        adapters=adapters,
        wanted_adapter=opts.adapter,
        kb_documents=kb_docs,
    )
    runnable = [p for p in plans if p.skipped is None]

    retrieved: list[Retrieved | None] = [None] * len(items)
    with _progress(progress) as bar:
        if kb_docs:
            task = bar.add_task("retrieval (kb/search)", total=len(items))
            for i, item in enumerate(items):
                hits = client.search(item.question, dec.top_k)
                retrieved[i] = Retrieved(
                    [str(h.get("document_id")) for h in hits], [str(h.get("text", "")) for h in hits]
                )
                bar.advance(task)
        results = [_run_route(client, plan, eval_set, retrieved, dec, bar) for plan in plans]

    for r in results:
        if r.skipped is None:
            summarise(r, n_resamples=opts.n_resamples, seed=opts.seed)
    headline = headline_metric(eval_set.has_answers, kb_docs > 0, eval_set.has_expectations)
    rec = recommend(results, headline, seed=opts.seed)
    base = next((r for r in results if r.name == "base" and r.skipped is None), None)
    vs_base = [
        c for r in results if r.skipped is None and r is not base and base is not None and headline
        if (c := compare(r, base, headline, seed=opts.seed))
    ]  # fmt: skip
    return {
        "version": 1,
        "source": eval_set.source,
        "questions": len(items),
        "url": client.url,
        "base_model": base_model,
        "adapters": adapters,
        "kb_documents": kb_docs,
        "decoding": asdict(dec),
        "headline": headline,
        "retrieval": _retrieval_summary(retrieved, eval_set, dec.top_k),
        "routes": [_route_dict(r) for r in results],
        "vs_base": vs_base,
        "recommendation": rec,
        "runnable_routes": [p.route.name for p in runnable],
        "elapsed_s": round(time.perf_counter() - started, 3),
    }


def _run_route(
    client: PlatformClient,
    plan: RoutePlan,
    eval_set: EvalSet,
    retrieved: list[Retrieved | None],
    dec: Decoding,
    bar: Any,
) -> RouteResult:
    result = RouteResult(plan.route.name, plan.route.label, plan.model, plan.skipped)
    if plan.skipped:
        return result
    task = bar.add_task(f"{plan.route.label}", total=len(eval_set.items))
    for item, ret in zip(eval_set.items, retrieved, strict=True):
        answer, error = None, None
        try:
            answer = ask(client, plan, item.question, dec)
        except _FATAL:
            raise
        except AdeptError as e:
            error = e.message
        result.questions.append(score_question(item, plan.route, answer, error, ret, dec.top_k))
        bar.advance(task)
    return result


def _retrieval_summary(retrieved: list[Retrieved | None], eval_set: EvalSet, k: int) -> dict[str, Any]:
    pairs = [
        (r, i)
        for r, i in zip(retrieved, eval_set.items, strict=True)
        if r is not None and i.reference_documents
    ]
    return {
        "k": k,
        "n": len(pairs),
        "hit_at_k": m.mean(m.hit_at_k(r.document_ids, i.reference_documents, k) for r, i in pairs),
        "mrr": m.mean(m.reciprocal_rank(r.document_ids, i.reference_documents) for r, i in pairs),
    }


def _route_dict(r: RouteResult) -> dict[str, Any]:
    return {
        "name": r.name,
        "label": r.label,
        "model": r.model,
        "skipped": r.skipped,
        "summary": r.summary,
        "questions": [asdict(q) for q in r.questions],
    }


def corpus_files(paths: list[str | Path]) -> list[tuple[str, Path]]:
    """``(name, path)`` per file; a directory's files are named relative to its parent (``docs/a.md``),

    the same names the knowledge base derives document ids from when it ingests a folder.
    """
    out = []
    for raw in paths:
        root = Path(raw)
        if root.is_dir():
            for p in sorted(root.rglob("*")):
                rel = p.relative_to(root.parent)
                if p.is_file() and not any(part.startswith(".") for part in rel.parts):
                    out.append((rel.as_posix(), p))
        elif root.is_file():
            out.append((root.name, root))
        else:
            raise NotFound(f"corpus path not found: {root}")
    return out


def ingest_corpus(client: PlatformClient, paths: list[str | Path], batch: int = 8) -> dict[str, Any]:
    """Upload files into the tenant's knowledge base (unchanged documents are not re-ingested)."""
    files = corpus_files(paths)
    documents, errors = [], []
    for i in range(0, len(files), batch):
        reply = client.ingest([(name, p.read_bytes()) for name, p in files[i : i + batch]])
        documents += reply.get("documents", [])
        errors += reply.get("errors", [])
    return {"files": len(files), "documents": documents, "errors": errors}


@contextlib.contextmanager
def embedded_platform(
    data_dir: str | Path | None, overrides: list[str] | None = None, say: Any | None = None
) -> Iterator[tuple[str, str]]:
    """Start the embedded platform with the demo tenant for one run; yields ``(url, demo API key)``."""
    try:
        from services.embedded import start_platform
    except ModuleNotFoundError as e:
        raise Unavailable(f"embedded mode is not available ({e}); pass --url and --api-key instead") from None
    from adept.config.base import load_config
    from adept.config.serving import ServingConfig

    ov = [f"platform.data_dir={data_dir}"] if data_dir else []
    config = load_config(ServingConfig, os.environ.get("ADEPT_CONFIG"), [*ov, *(overrides or [])])
    platform = start_platform(config, demo=True, say=say)
    try:
        yield platform.url, platform.demo_key or ""
    finally:
        platform.stop()
