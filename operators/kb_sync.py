"""Bring one KnowledgeBase resource's documents in the tenant's knowledge base in line with its sources.

The operator reads the sources (shared volume, S3, inline) and hands the documents to the
platform through the gateway's admin API (``/admin/kb/{tenant}/...``), where the retrieval
deployment parses, chunks and embeds them: the operator itself loads no model and opens no
Milvus connection.

Document ids are ``<kb-name>/<relative path without extension>`` (files) or ``<kb-name>/<id>``
(inline documents), so one resource finds exactly its own documents when it resyncs or is deleted,
and never touches documents uploaded through the API or by another KnowledgeBase.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adept.admin_client import AdminClient
from adept.documents import document_id_from_name, walk_files
from adept.errors import InvalidRequest, NotFound
from operators.models import KnowledgeBaseSource, KnowledgeBaseSpec
from operators.resources import kb_document_prefix

_BATCH_BYTES = 8 * 1024 * 1024  # per upload request: bounded memory, and one 413 names one big file
_BATCH_FILES = 32


@dataclass
class SyncResult:
    documents: int = 0
    chunks: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)
    removed: int = 0


def resolve_path(shared_dir: str, path: str) -> Path:
    """``path`` inside the shared volume; anything resolving outside it (``..``, symlinks) is refused."""
    root = Path(shared_dir).resolve()
    target = (root / path.lstrip("/")).resolve()
    if target != root and root not in target.parents:
        raise InvalidRequest(f"source path {path!r} resolves outside the shared volume {root}")
    return target


def _files(
    source: KnowledgeBaseSource, shared_dir: str, s3_credentials: Callable[[str], dict[str, str]] | None
) -> Iterator[tuple[str, bytes]]:
    """``(relative name, bytes)`` for every file of a path or s3 source."""
    if source.path is not None:
        target = resolve_path(shared_dir, source.path)
        if not target.exists():
            raise NotFound(f"source path {source.path!r} does not exist on the shared volume")
        for name, p in walk_files([target]):
            yield name, p.read_bytes()
    elif source.s3 is not None:
        import fsspec

        options: dict[str, Any] = {}
        if source.s3.endpoint_url:
            options["client_kwargs"] = {"endpoint_url": source.s3.endpoint_url}
        if source.s3.secret_name and s3_credentials is not None:
            options.update(s3_credentials(source.s3.secret_name))
        fs = fsspec.filesystem("s3", **options)
        prefix = source.s3.uri.removeprefix("s3://").rstrip("/")
        for key in sorted(fs.find(prefix)):
            rel = key[len(prefix) :].lstrip("/") or Path(key).name
            if not any(part.startswith(".") for part in rel.split("/")):
                yield rel, fs.cat_file(key)


def _batches(files: Iterator[tuple[str, bytes]]) -> Iterator[list[tuple[str, bytes]]]:
    batch: list[tuple[str, bytes]] = []
    size = 0
    for name, data in files:
        if batch and (size + len(data) > _BATCH_BYTES or len(batch) >= _BATCH_FILES):
            yield batch
            batch, size = [], 0
        batch.append((name, data))
        size += len(data)
    if batch:
        yield batch


def _ingest(call: Any) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """``(documents, errors)`` of one ingest call; a batch where nothing went in is per-file errors too."""
    try:
        reply = call()
    except InvalidRequest as e:
        if not e.details:
            raise
        return [], list(e.details)
    return reply["documents"], reply["errors"]


def sync(
    client: AdminClient,
    tenant: str,
    name: str,
    spec: KnowledgeBaseSpec,
    *,
    shared_dir: str,
    s3_credentials: Callable[[str], dict[str, str]] | None = None,
) -> SyncResult:
    """Ingest every source (unchanged documents are skipped by content hash), drop vanished ones.

    ``s3_credentials(secret_name)`` returns ``{"key", "secret"}`` for an s3 source naming a Secret.

    The tenant's ``max_documents`` quota is the platform's to apply (it is the tenant's record).
    """
    prefix = kb_document_prefix(name)
    chunking = (
        (spec.retrieval.chunk_size_tokens, spec.retrieval.chunk_overlap_tokens) if spec.retrieval else None
    )
    result = SyncResult()
    keep: set[str] = set()
    for i, source in enumerate(spec.sources):
        if source.documents is not None:
            records = [
                {**r.model_dump(exclude_none=True), "id": prefix + (r.id or f"doc-{i}-{j}")}
                for j, r in enumerate(source.documents)
            ]
            docs, errors = _ingest(
                lambda records=records: client.ingest_records(tenant, records, chunking=chunking)
            )
            keep.update(d["id"] for d in docs)
            result.errors += errors
            continue
        try:
            for batch in _batches(
                (prefix + rel, data) for rel, data in _files(source, shared_dir, s3_credentials)
            ):
                docs, errors = _ingest(
                    lambda batch=batch: client.ingest_files(tenant, batch, chunking=chunking)
                )
                keep.update(d["id"] for d in docs)
                for err in errors:
                    # A file that failed to parse keeps its previous version rather than vanishing.
                    keep.add(document_id_from_name(err["source"].split(":", 1)[0]))
                    result.errors.append(
                        {"source": err["source"].removeprefix(prefix), "reason": err["reason"]}
                    )
        except (NotFound, InvalidRequest) as e:  # the source itself: missing, or outside the volume
            result.errors.append(
                {"source": source.path or str(source.s3 and source.s3.uri), "reason": e.message}
            )
    for doc in client.list_documents(tenant):
        if doc["id"].startswith(prefix) and doc["id"] not in keep:
            result.removed += _delete(client, tenant, doc["id"])
    owned = [d for d in client.list_documents(tenant) if d["id"].startswith(prefix)]
    result.documents, result.chunks = len(owned), sum(d["chunks"] for d in owned)
    return result


def _delete(client: AdminClient, tenant: str, document_id: str) -> int:
    """1 if the document was deleted, 0 if it was already gone (a concurrent delete)."""
    try:
        client.delete_document(tenant, document_id)
    except NotFound:
        return 0
    return 1


def remove(client: AdminClient, tenant: str, name: str) -> int:
    """Delete every document this resource owns; returns how many (0 once the tenant itself is gone)."""
    try:
        docs = client.list_documents(tenant)
    except NotFound:
        return 0  # the tenant is being deleted: its purge removes every document
    return sum(_delete(client, tenant, d["id"]) for d in docs if d["id"].startswith(kb_document_prefix(name)))
