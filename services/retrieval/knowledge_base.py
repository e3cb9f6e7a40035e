"""The knowledge-base logic layer: ingest, search, list, delete — per tenant, without HTTP.

Atomic replace, as seen by search. A document's chunks carry a *generation*; a separate record
per (document, generation) says which generations exist, and the live one is the highest.
An ingest (1) inserts the new chunks under a new, higher generation G — invisible, since no
record names G yet; (2) writes the record for G — one row, so the flip is one write; (3) deletes
chunks and records of generations below G (once per upload, after its last batch). Search
keeps only hits whose generation is their document's live one. A search that read chunks just
before a flip and records just after it sees hits of an older generation: it then searches
again (the new chunks were inserted before the flip, so the second read has them). So a query never sees both versions, nor neither.
A crash between any two steps leaves only invisible leftovers; the next ingest of the same
folder finds the hash (unchanged: it retires old generations) or not (re-ingests under a higher
generation, whose step 3 removes every leftover): no duplicates, no gaps.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from adept.config.retrieval import RetrievalConfig
from adept.documents import check_document_id, walk_files
from adept.errors import InvalidRequest, NotFound
from adept.passages import sentence_spans, sentence_text
from services.retrieval.chunking import Chunker
from services.retrieval.embedding import Embedder
from services.retrieval.highlights import score_sentences, states_a_fact
from services.retrieval.ingest import ParsedDocument, ParseError, parse_file, record_to_document
from services.retrieval.protocol import (
    MAX_HIGHLIGHTS,
    Chunking,
    DocumentInfo,
    Highlight,
    IngestError,
    IngestRecord,
    IngestResult,
    SearchHit,
)
from services.retrieval.store import ChunkStore, quote_literal

Progress = Callable[[str, int, int], None]
_FLUSH_CHUNKS = 2048  # chunks embedded and inserted together; bounds memory on big folders
# Characters of document ids per retire expression: few expressions, since on Milvus Lite each
# one scans the whole collection whatever its length, yet short enough for a Milvus server.
_RETIRE_EXPR_CHARS = 64 * 1024


class KnowledgeBase:
    """Every tenant's documents in one Milvus collection, scoped by tenant in ``ChunkStore``.

    Args:
        config: Chunking, limits and search settings.
        milvus_uri: File path (Milvus Lite) or ``http(s)://host:19530``.
        collection: Chunk collection name.
        embedding_model: sentence-transformers reference (``bundled:all-minilm-l6-v2``, a path, an id).
        device: ``cpu`` or ``cuda`` for the embedding model.
        milvus_token: Token for a secured Milvus server.
        milvus_options: More ``MilvusClient`` arguments (TLS verification).
        embedder: An already loaded ``Embedder`` to use instead of loading ``embedding_model``.
    """

    def __init__(
        self,
        config: RetrievalConfig | None = None,
        *,
        milvus_uri: str,
        collection: str = "adept_chunks",
        embedding_model: str = "bundled:all-minilm-l6-v2",
        device: str = "cpu",
        milvus_token: str | None = None,
        milvus_options: dict[str, Any] | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        self.config = config or RetrievalConfig()
        # An Embedder may be shared (tests, benchmarks); a replica builds its own, once.
        self.embedder = embedder or Embedder(
            embedding_model, device=device, batch_size=self.config.embedding_batch_size
        )
        self.chunker = Chunker(
            self.embedder.tokenizer,
            self.config.chunk_size_tokens,
            self.config.chunk_overlap_tokens,
            self.embedder.max_tokens,
        )
        if milvus_uri and "://" not in milvus_uri:
            Path(milvus_uri).expanduser().parent.mkdir(parents=True, exist_ok=True)
        self.store = ChunkStore(
            milvus_uri,
            collection,
            self.embedder.dim,
            token=milvus_token,
            index=self.config.index,
            client_options=milvus_options,
        )
        self._write_lock = threading.Lock()  # one writer per replica: flips of one document never interleave

    @classmethod
    def from_platform(cls, platform: Any, config: RetrievalConfig | None = None) -> KnowledgeBase:
        """Build from an ``adept.config.platform.PlatformConfig``."""
        return cls(
            config,
            milvus_uri=platform.resolved_milvus_uri,
            collection=platform.collection,
            embedding_model=platform.embedding_model,
            device=platform.resolved_device(),
            milvus_token=platform.milvus_token,
            milvus_options=platform.milvus_client_options(),
        )

    # ---- ingest -------------------------------------------------------------------------------
    def ingest_files(
        self,
        tenant: str,
        files: Sequence[tuple[str, bytes]],
        *,
        max_documents: int = 0,
        progress: Progress | None = None,
        chunking: Chunking | None = None,
    ) -> IngestResult:
        """Ingest uploaded files ``[(filename, bytes)]``; bad files are reported, the rest go in.

        ``chunking`` overrides the configured chunk size and overlap for these documents.
        """

        def items() -> Iterator[ParsedDocument | IngestError]:
            for i, (name, data) in enumerate(files, start=1):
                yield from self._parse(name, data)
                if progress:
                    progress(name, i, len(files))

        return self._ingest(tenant, items(), max_documents, chunking)

    def ingest_records(
        self,
        tenant: str,
        records: Sequence[IngestRecord | dict[str, Any]],
        *,
        max_documents: int = 0,
        chunking: Chunking | None = None,
    ) -> IngestResult:
        """Ingest JSON records ``{id?, title?, text, metadata?}``; a record without id gets a hash of its text."""
        import hashlib

        from pydantic import ValidationError

        def items() -> Iterator[ParsedDocument | IngestError]:
            for i, raw in enumerate(records):
                try:
                    rec = raw if isinstance(raw, IngestRecord) else IngestRecord.model_validate(raw)
                    default_id = "rec-" + hashlib.sha256(rec.text.encode()).hexdigest()[:16]
                    yield record_to_document(rec, default_id)
                except ValidationError as e:
                    problems = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
                    yield IngestError(source=f"records[{i}]", reason=f"invalid record ({problems})")
                except ParseError as e:
                    yield IngestError(source=f"records[{i}]", reason=str(e))

        return self._ingest(tenant, items(), max_documents, chunking)

    def ingest_paths(
        self,
        tenant: str,
        paths: Iterable[str | Path],
        *,
        progress: Progress | None = None,
        max_documents: int = 0,
    ) -> IngestResult:
        """Ingest files and directories (recursively) from the local filesystem."""
        found = list(walk_files(paths))

        def items() -> Iterator[ParsedDocument | IngestError]:
            for i, (name, path) in enumerate(found, start=1):
                try:
                    size = path.stat().st_size
                    if size > self.config.max_file_bytes:
                        yield IngestError(
                            source=name,
                            reason=f"too large: {size} bytes (limit {self.config.max_file_bytes})",
                        )
                    else:
                        yield from self._parse(name, path.read_bytes())
                except OSError as e:
                    yield IngestError(source=name, reason=f"cannot read: {e.strerror or e}")
                if progress:
                    progress(name, i, len(found))

        return self._ingest(tenant, items(), max_documents)

    def _parse(self, name: str, data: bytes) -> Iterator[ParsedDocument | IngestError]:
        try:
            yield from parse_file(
                name, data, max_bytes=self.config.max_file_bytes, extensions=self.config.supported_extensions
            )
        except Exception as e:  # a parser bug on one odd file must not sink the batch
            yield IngestError(source=name, reason=f"could not parse ({type(e).__name__}: {e})")

    def _chunker(self, chunking: Chunking | None) -> Chunker:
        if chunking is None or (chunking.size_tokens, chunking.overlap_tokens) == (
            self.config.chunk_size_tokens,
            self.config.chunk_overlap_tokens,
        ):
            return self.chunker
        return Chunker(
            self.embedder.tokenizer, chunking.size_tokens, chunking.overlap_tokens, self.embedder.max_tokens
        )

    def _ingest(
        self,
        tenant: str,
        items: Iterable[ParsedDocument | IngestError],
        max_documents: int,
        chunking: Chunking | None = None,
    ) -> IngestResult:
        result = IngestResult()
        chunker = self._chunker(chunking)
        with self._write_lock:
            live = self._live(tenant)
            count = len(live)
            seen: set[str] = set()
            unchanged: dict[str, int] = {}
            committed: dict[str, int] = {}  # document -> its new live generation, retired at the end
            batch: list[tuple[ParsedDocument, list]] = []
            pending = 0
            try:
                for item in items:
                    if isinstance(item, IngestError):
                        result.errors.append(item)
                        continue
                    doc = item
                    source = str(doc.metadata.get("source", doc.id))
                    if doc.id in seen:
                        result.errors.append(
                            IngestError(
                                source=source, reason=f"duplicate document id {doc.id!r} in this batch"
                            )
                        )
                        continue
                    seen.add(doc.id)
                    current = live.get(doc.id)
                    if current and current["content_hash"] == doc.content_hash:
                        # Retired below: finishes an interrupted run.
                        unchanged[doc.id] = current["generation"]
                        result.documents.append(_info(current, "unchanged"))
                        continue
                    if current is None and max_documents and count >= max_documents:
                        result.errors.append(
                            IngestError(
                                source=source, reason=f"document quota reached ({max_documents} documents)"
                            )
                        )
                        continue
                    chunks = chunker.chunk(doc)
                    if not chunks:
                        result.errors.append(IngestError(source=source, reason="empty: no text to index"))
                        continue
                    count += current is None
                    batch.append((doc, chunks))
                    pending += len(chunks)
                    if pending >= _FLUSH_CHUNKS:
                        result.documents.extend(self._commit(tenant, batch, live, committed))
                        batch, pending = [], 0
                if batch:
                    result.documents.extend(self._commit(tenant, batch, live, committed))
            except BaseException:
                if committed:  # batches flipped before the failure: do not leave their old versions behind
                    with contextlib.suppress(Exception):
                        self._retire(tenant, committed)
                raise
            if result.documents:
                # One flush per upload: Milvus Lite then searches the new rows through its index
                # rather than by brute force. BM25 does not depend on segments (services/retrieval/bm25.py).
                self.store.seal()
            # Older generations go once per upload, after the flush: on Milvus Lite every retire
            # expression scans the whole collection (flushed segments about 5x faster than the
            # unflushed rows), so retiring after each batch made a big upload quadratic (at 100k
            # chunks, more time than embedding). Until then they are invisible, as after a crash.
            if committed or unchanged:
                self._retire(tenant, {**unchanged, **committed})
        return result

    def _commit(
        self,
        tenant: str,
        batch: list[tuple[ParsedDocument, list]],
        live: dict[str, dict],
        committed: dict[str, int],
    ) -> list[DocumentInfo]:
        """Embed and insert a batch under a fresh generation and flip each document's record.

        Adds each document's new generation to ``committed``: the caller retires older ones.
        """
        oldest_allowed = max((live[d.id]["generation"] for d, _ in batch if d.id in live), default=0)
        generation = max(time.time_ns(), oldest_allowed + 1)
        rows = [
            {
                "document_id": doc.id,
                "chunk_id": f"{doc.id}#{c.index}",
                "generation": generation,
                "title": doc.title[:1000],
                "heading_path": " > ".join(c.heading_path)[:1000],
                "text": c.text[:16000],  # Milvus VARCHAR max 65535 bytes; only [UNK]-long "words" get here
                "metadata": doc.metadata,
                "content_hash": doc.content_hash,
            }
            for doc, chunks in batch
            for c in chunks
        ]
        vectors = self.embedder.embed([r["text"] for r in rows])
        step = self.config.insert_batch_size
        for start in range(0, len(rows), step):
            part = rows[start : start + step]
            for row, vec in zip(part, vectors[start : start + step], strict=True):
                row["dense"] = vec.tolist()
            self.store.insert_chunks(tenant, part)
        records = [
            {
                "document_id": doc.id,
                "generation": generation,
                "title": doc.title[:1000],
                "content_hash": doc.content_hash,
                "chunks": len(chunks),
                "metadata": doc.metadata,
            }
            for doc, chunks in batch
        ]
        # The flip, for the whole batch in one write: from here on search sees only these versions.
        self.store.put_records(tenant, records)
        infos = [_info(rec, "updated" if rec["document_id"] in live else "created") for rec in records]
        live.update((rec["document_id"], rec) for rec in records)
        # New documents are retired too: a crashed earlier run may have left invisible chunks of theirs.
        committed.update((doc.id, generation) for doc, _ in batch)
        return infos

    def _retire(self, tenant: str, generations: dict[str, int]) -> None:
        """Delete chunks and records of generations older than each document's live one.

        Documents sharing a generation (an upload batch) share one clause; as many documents go
        in one expression as ``_RETIRE_EXPR_CHARS`` allows.
        """
        by_generation: dict[int, list[str]] = {}
        size = 0
        for doc_id, g in generations.items():
            literal = quote_literal(doc_id)
            if size and size + len(literal) > _RETIRE_EXPR_CHARS:
                self.store.delete_where(tenant, _retire_expr(by_generation))
                by_generation, size = {}, 0
            by_generation.setdefault(int(g), []).append(literal)
            size += len(literal) + 2
        if by_generation:
            self.store.delete_where(tenant, _retire_expr(by_generation))

    # ---- reads --------------------------------------------------------------------------------
    def _live(self, tenant: str, document_ids: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        """Live record (highest generation) per document."""
        live: dict[str, dict[str, Any]] = {}
        for rec in self.store.records_for(tenant, document_ids):
            cur = live.get(rec["document_id"])
            if cur is None or rec["generation"] > cur["generation"]:
                live[rec["document_id"]] = rec
        return live

    def search(
        self,
        tenant: str,
        query: str,
        top_k: int | None = None,
        filter: dict[str, Any] | None = None,
        highlights: int = 0,
    ) -> list[SearchHit]:
        """Top ``top_k`` chunks of ``tenant`` for ``query`` (dense or hybrid per config), live versions only;
        with ``highlights``, each hit's best sentences for the query (``services/retrieval/highlights.py``)."""
        if not isinstance(query, str) or not query.strip():
            raise InvalidRequest("query must be a non-empty string", param="query")
        if (
            isinstance(highlights, bool)
            or not isinstance(highlights, int)
            or not 0 <= highlights <= MAX_HIGHLIGHTS
        ):
            raise InvalidRequest(
                f"highlights must be an integer from 0 to {MAX_HIGHLIGHTS} (got {highlights!r})",
                param="highlights",
            )
        top_k = self.config.default_top_k if top_k is None else top_k
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= self.config.max_top_k:
            raise InvalidRequest(
                f"top_k must be an integer from 1 to {self.config.max_top_k} (got {top_k!r})", param="top_k"
            )
        extra = _filter_expr(filter)
        query_vector = self.embedder.embed([query])[0]
        vector = query_vector.tolist()  # what Milvus takes
        text = query if self.config.search_mode == "hybrid" else None
        limit = min(16384, top_k + 10)
        for _attempt in range(3):
            raw = self.store.search(
                tenant, vector, limit=limit, query_text=text, extra=extra, rrf_k=self.config.rrf_k
            )
            live = self._live(tenant, sorted({h["document_id"] for h in raw}))
            stale = any(
                h["generation"] < live[h["document_id"]]["generation"]
                for h in raw
                if h["document_id"] in live
            )
            hits = [
                h
                for h in raw
                if h["document_id"] in live and h["generation"] == live[h["document_id"]]["generation"]
            ]
            if stale:
                continue  # read chunks before a flip and records after it: read again
            if len(hits) >= top_k or len(raw) < limit or limit >= 16384:
                break
            limit = min(16384, limit * 4)  # invisible leftovers crowded the window: widen it
        found = [_hit(h) for h in hits[:top_k]]
        if highlights:
            self._highlight(query, query_vector, found, highlights)
        return found

    def _highlight(self, query: str, query_vector: Any, hits: list[SearchHit], n: int) -> None:
        """Rank the sentences of all ``hits`` together (one embedding batch) and keep each hit's best ``n``."""
        spans = [sentence_spans(h.text) for h in hits]
        texts = [sentence_text(h.text, sp) for h, hs in zip(hits, spans, strict=True) for sp in hs]
        if not texts:
            return
        scores = iter(score_sentences(query, query_vector, texts, self.embedder.embed(texts)))
        sentences = iter(texts)
        for hit, hs in zip(hits, spans, strict=True):
            ranked = [
                Highlight(text=next(sentences), start=a, end=b, score=round(next(scores), 6)) for a, b in hs
            ]
            ranked.sort(key=lambda x: (not states_a_fact(x.text), -x.score))
            hit.highlights = ranked[:n]

    def list_documents(self, tenant: str) -> list[DocumentInfo]:
        """The tenant's documents (live versions) with chunk counts, sorted by id."""
        return [_info(rec) for _, rec in sorted(self._live(tenant).items())]

    def count_documents(self, tenant: str) -> int:
        """Number of documents, for the ``max_documents`` quota."""
        return len(self._live(tenant))

    def delete_document(self, tenant: str, document_id: str) -> DocumentInfo:
        """Delete one document; ``NotFound`` for unknown ids and for other tenants' ids alike."""
        try:
            check_document_id(document_id)
        except ValueError:
            raise NotFound(f"document {document_id!r} not found") from None
        with self._write_lock:
            live = self._live(tenant, [document_id]).get(document_id)
            if live is None:
                raise NotFound(f"document {document_id!r} not found")
            # Records first: without a record the chunks are invisible, so a crash here hides the whole document.
            self.store.delete_records(tenant, document_id)
            self.store.delete_chunks(tenant, document_id)
        return _info(live, "deleted")

    def delete_tenant(self, tenant: str) -> None:
        """Delete every chunk and record of ``tenant``."""
        with self._write_lock:
            self.store.delete_tenant(tenant)

    def embed(self, texts: list[str]) -> list[list[float]]:
        """Normalized embeddings (for ``/v1/embeddings``)."""
        if not texts or any(not isinstance(t, str) or not t for t in texts):
            raise InvalidRequest(
                "input must be a non-empty string or a list of non-empty strings", param="input"
            )
        return self.embedder.embed(list(texts)).tolist()

    def embed_ids(self, arrays: list[list[int]]) -> list[list[float]]:
        """Normalized embeddings of token arrays of the embedding model's tokenizer (for ``/v1/embeddings``)."""
        if not arrays or any(not ids for ids in arrays):
            raise InvalidRequest("input must be a non-empty token array or list of them", param="input")
        return self.embedder.embed_ids([list(ids) for ids in arrays]).tolist()

    def close(self) -> None:
        self.store.close()


def _info(rec: dict[str, Any], status: str = "") -> DocumentInfo:
    return DocumentInfo(
        id=rec["document_id"],
        title=rec["title"],
        chunks=int(rec["chunks"]),
        content_hash=rec["content_hash"],
        status=status,
    )


def _hit(h: dict[str, Any]) -> SearchHit:
    return SearchHit(
        document_id=h["document_id"],
        chunk_id=h["chunk_id"],
        title=h["title"],
        text=h["text"],
        score=h["score"],
        heading_path=h["heading_path"],
        metadata=h.get("metadata") or {},
    )


def _filter_expr(filter: dict[str, Any] | None) -> str:
    """Exact-match metadata filter as a Milvus expression; keys are identifiers, values literals only."""
    from services.retrieval.protocol import FILTER_KEY_RE

    parts = []
    for key, value in (filter or {}).items():
        if not isinstance(key, str) or not FILTER_KEY_RE.fullmatch(key):
            raise InvalidRequest(f"invalid filter key {key!r}: use letters, digits and '_'", param="filter")
        field = "document_id" if key == "document_id" else f'metadata["{key}"]'
        values = value if isinstance(value, list) else [value]
        if not values or any(not isinstance(v, str | int | float | bool) for v in values):
            raise InvalidRequest(
                f"filter {key!r}: values must be strings, numbers or booleans", param="filter"
            )
        if any(isinstance(v, str) and ('"' in v or "\\" in v) for v in values):
            raise InvalidRequest(
                f"filter {key!r}: values may not contain quotes or backslashes", param="filter"
            )
        lits = [_literal(v) for v in values]
        parts.append(
            f"{field} in [{', '.join(lits)}]" if isinstance(value, list) else f"{field} == {lits[0]}"
        )
    return " and ".join(parts)


def _literal(v: str | int | float | bool) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return quote_literal(v) if isinstance(v, str) else repr(v)


class AsyncKnowledgeBase:
    """The ``KnowledgeBase`` methods as awaitables, run in worker threads (keeps an event loop free).

    This is the shape ``build_kb_router``'s ``get_kb`` returns; ``RetrievalDeployment`` and the
    gateway's Serve-handle wrapper offer the same methods.
    """

    def __init__(self, kb: KnowledgeBase) -> None:
        self.kb = kb

    async def ingest_files(
        self,
        tenant: str,
        files: list[tuple[str, bytes]],
        *,
        max_documents: int = 0,
        chunking: Chunking | None = None,
    ) -> IngestResult:
        return await asyncio.to_thread(
            self.kb.ingest_files, tenant, files, max_documents=max_documents, chunking=chunking
        )

    async def ingest_records(
        self, tenant: str, records: list[Any], *, max_documents: int = 0, chunking: Chunking | None = None
    ) -> IngestResult:
        return await asyncio.to_thread(
            self.kb.ingest_records, tenant, records, max_documents=max_documents, chunking=chunking
        )

    async def ingest_paths(self, tenant: str, paths: list[str], *, max_documents: int = 0) -> IngestResult:
        return await asyncio.to_thread(self.kb.ingest_paths, tenant, paths, max_documents=max_documents)

    async def search(
        self,
        tenant: str,
        query: str,
        top_k: int | None = None,
        filter: dict[str, Any] | None = None,
        highlights: int = 0,
    ) -> list[SearchHit]:
        return await asyncio.to_thread(self.kb.search, tenant, query, top_k, filter, highlights)

    async def list_documents(self, tenant: str) -> list[DocumentInfo]:
        return await asyncio.to_thread(self.kb.list_documents, tenant)

    async def count_documents(self, tenant: str) -> int:
        return await asyncio.to_thread(self.kb.count_documents, tenant)

    async def delete_document(self, tenant: str, document_id: str) -> DocumentInfo:
        return await asyncio.to_thread(self.kb.delete_document, tenant, document_id)

    async def delete_tenant(self, tenant: str) -> None:
        await asyncio.to_thread(self.kb.delete_tenant, tenant)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self.kb.embed, texts)

    async def embed_ids(self, arrays: list[list[int]]) -> list[list[float]]:
        return await asyncio.to_thread(self.kb.embed_ids, arrays)

    async def limits(self) -> dict[str, int]:
        """Upload limits the HTTP layer enforces before the bytes reach the replica."""
        return {
            "max_file_bytes": self.kb.config.max_file_bytes,
            "max_request_bytes": self.kb.config.max_request_bytes,
        }


def _retire_expr(by_generation: dict[int, list[str]]) -> str:
    """``(document_id in [...] and generation < g) or ...`` for quoted ids grouped by live generation."""
    return " or ".join(
        f"(document_id in [{', '.join(literals)}] and generation < {g})"
        for g, literals in by_generation.items()
    )
