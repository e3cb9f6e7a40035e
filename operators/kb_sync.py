"""Bring one KnowledgeBase resource's documents in the tenant's partition in line with its sources.

Document ids are ``<kb-name>/<relative path without extension>`` (files) or ``<kb-name>/<id>``
(inline documents), so one resource finds exactly its own documents when it resyncs or is deleted,
and never touches documents uploaded through the API or by another KnowledgeBase.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adept.config.retrieval import RetrievalConfig
from adept.errors import InvalidRequest, NotFound
from operators.models import KnowledgeBaseSource, KnowledgeBaseSpec
from operators.resources import kb_document_prefix


@dataclass
class SyncResult:
    documents: int = 0
    chunks: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)
    removed: int = 0


def with_overrides(kb: Any, config: RetrievalConfig | None) -> Any:
    """A view of ``kb`` that chunks with ``config``; store, embedder and write lock stay shared.

    Milvus Lite allows one client per file, so per-resource chunking must reuse the one store.
    Index and search settings are collection-wide and cannot differ per resource.
    """
    if config is None or config == kb.config:
        return kb
    from services.retrieval.chunking import Chunker

    view = copy.copy(kb)
    view.config = config
    view.chunker = Chunker(
        kb.embedder.tokenizer, config.chunk_size_tokens, config.chunk_overlap_tokens, kb.embedder.max_tokens
    )
    return view


def resolve_path(shared_dir: str, path: str) -> Path:
    """``path`` inside the shared volume; anything resolving outside it (``..``, symlinks) is refused."""
    root = Path(shared_dir).resolve()
    target = (root / path.lstrip("/")).resolve()
    if target != root and root not in target.parents:
        raise InvalidRequest(f"source path {path!r} resolves outside the shared volume {root}")
    return target


def _files(
    source: KnowledgeBaseSource, shared_dir: str, s3_options: dict[str, Any]
) -> Iterator[tuple[str, bytes]]:
    """``(relative name, bytes)`` for every file of a path or s3 source."""
    if source.path is not None:
        from services.retrieval.ingest import walk_paths

        target = resolve_path(shared_dir, source.path)
        if not target.exists():
            raise NotFound(f"source path {source.path!r} does not exist on the shared volume")
        for name, p in walk_paths([target]):
            yield name, p.read_bytes()
    elif source.s3 is not None:
        import fsspec

        fs = fsspec.filesystem("s3", **s3_options)
        prefix = source.s3.uri.removeprefix("s3://").rstrip("/")
        for key in sorted(fs.find(prefix)):
            rel = key[len(prefix) :].lstrip("/") or Path(key).name
            if not any(part.startswith(".") for part in rel.split("/")):
                yield rel, fs.cat_file(key)


def sync(
    kb: Any,
    tenant: str,
    name: str,
    spec: KnowledgeBaseSpec,
    *,
    shared_dir: str,
    max_documents: int = 0,
    s3_options: dict[str, Any] | None = None,
) -> SyncResult:
    """Ingest every source (unchanged documents are skipped by content hash), drop vanished ones."""
    from services.retrieval.ingest import document_id_from_name

    view = with_overrides(kb, spec.retrieval)
    prefix = kb_document_prefix(name)
    result = SyncResult()
    keep: set[str] = set()
    for i, source in enumerate(spec.sources):
        if source.documents is not None:
            records = [
                {**r.model_dump(exclude_none=True), "id": prefix + (r.id or f"doc-{i}-{j}")}
                for j, r in enumerate(source.documents)
            ]
            out = view.ingest_records(tenant, records, max_documents=max_documents)
        else:
            try:
                files = [(prefix + rel, data) for rel, data in _files(source, shared_dir, s3_options or {})]
            except (NotFound, InvalidRequest) as e:
                result.errors.append(
                    {"source": source.path or str(source.s3 and source.s3.uri), "reason": e.message}
                )
                continue
            out = view.ingest_files(tenant, files, max_documents=max_documents)
        keep.update(d.id for d in out.documents)
        for err in out.errors:
            # A file that failed to parse keeps its previous version rather than vanishing.
            keep.add(
                document_id_from_name(err.source.split(":", 1)[0] if err.source.startswith(prefix) else "")
            )
            result.errors.append({"source": err.source.removeprefix(prefix), "reason": err.reason})
    for doc in kb.list_documents(tenant):
        if doc.id.startswith(prefix) and doc.id not in keep:
            try:
                kb.delete_document(tenant, doc.id)
                result.removed += 1
            except NotFound:
                pass
    owned = [d for d in kb.list_documents(tenant) if d.id.startswith(prefix)]
    result.documents, result.chunks = len(owned), sum(d.chunks for d in owned)
    return result


def remove(kb: Any, tenant: str, name: str) -> int:
    """Delete every document this resource owns; returns how many."""
    removed = 0
    for doc in kb.list_documents(tenant):
        if doc.id.startswith(kb_document_prefix(name)):
            try:
                kb.delete_document(tenant, doc.id)
                removed += 1
            except NotFound:
                pass
    return removed
