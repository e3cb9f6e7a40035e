"""Milvus storage for every tenant's chunks, with the tenant filter applied here and only here.

Three collections per platform: ``<name>`` holds chunks (tenant = partition key, dense vector,
and the document half of BM25 as a sparse vector, ``services.retrieval.bm25``), ``<name>_documents``
holds one record per (document, generation): the *live* generation of a document is its highest
recorded one, and ``<name>_terms`` holds each tenant's BM25 statistics (chunk count and document
frequency per term), kept here on every chunk insert and delete. Hybrid search sends the query
half of BM25 (tenant-wide IDF) and Milvus ranks by exact inner product, so scores do not depend
on how rows fall into segments: Milvus Lite can be flushed and indexed after every upload.
Every read and delete builds its expression with ``_scope(tenant)``; callers cannot pass a raw filter.
pymilvus ignores ``filter=`` on ``hybrid_search`` (ENVIRONMENT.md), so each ``AnnSearchRequest``
carries the scope, and every hit's tenant is checked again before it leaves this module.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from adept.config.retrieval import IndexConfig
from adept.config.tenant import check_tenant_name
from adept.errors import ConfigError, InvalidRequest, StorageError, Unavailable
from services.retrieval import bm25

log = logging.getLogger(__name__)

CHUNK_FIELDS = [
    "tenant",
    "document_id",
    "chunk_id",
    "generation",
    "title",
    "heading_path",
    "text",
    "metadata",
]
RECORD_FIELDS = ["tenant", "document_id", "generation", "title", "content_hash", "chunks", "metadata"]
_SERVER_PREFIXES = ("http://", "https://", "tcp://", "grpc://", "unix:")


def is_lite_uri(uri: str) -> bool:
    """A file path means Milvus Lite; a URL means a Milvus server or cluster."""
    return not uri.startswith(_SERVER_PREFIXES)


def quote_literal(value: str) -> str:
    """A string literal for a Milvus expression."""
    # json.dumps escapes quotes and backslashes the way Milvus' expression parser expects.
    return json.dumps(value, ensure_ascii=False)


def _scope(tenant: str, extra: str = "") -> str:
    try:
        check_tenant_name(tenant)
    except ValueError as e:
        raise InvalidRequest(str(e), param="tenant") from None
    expr = f"tenant == {quote_literal(tenant)}"
    return f"{expr} and ({extra})" if extra else expr


def _pk(*parts: object) -> str:
    return hashlib.sha1("\x1f".join(map(str, parts)).encode()).hexdigest()


def _iterate(client: Any, collection: str, expr: str, fields: list[str]) -> Iterator[dict[str, Any]]:
    window = 16384  # Milvus' largest query window; beyond it page with an iterator
    rows = client.query(collection, filter=expr, output_fields=fields, limit=window)
    if len(rows) < window:
        yield from rows
        return
    it = client.query_iterator(collection, batch_size=4096, filter=expr, output_fields=fields)
    try:
        while batch := it.next():
            yield from batch
    finally:
        it.close()


class ChunkStore:
    """The platform's chunk collection and document records in one Milvus (Lite file or server).

    Args:
        uri: File path (Milvus Lite) or ``http(s)://host:19530``.
        collection: Chunk collection name; records go to ``<collection>_documents``.
        dim: Dense vector dimension (the embedding model's).
        token: Milvus token for a secured server.
        index: Dense index settings (resolved per backend).
        client_options: More ``MilvusClient`` arguments (TLS: ``PlatformConfig.milvus_client_options``).
    """

    def __init__(
        self,
        uri: str,
        collection: str,
        dim: int,
        *,
        token: str | None = None,
        index: IndexConfig | None = None,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        from pymilvus import MilvusClient
        from pymilvus.exceptions import MilvusException

        self.uri, self.collection, self.records = uri, collection, f"{collection}_documents"
        self.lite = is_lite_uri(uri)
        self.index_type, self.index_params, self.search_params = (index or IndexConfig()).resolve(self.lite)
        self.dim = dim
        try:
            self.client = MilvusClient(uri, token=token or "", **(client_options or {}))
        except MilvusException as e:
            hint = (
                " (Milvus Lite allows one process per file: is another Adept running on it?)"
                if self.lite
                else ""
            )
            raise Unavailable(f"cannot open Milvus at {uri}: {e}{hint}") from None
        self._ensure_records()
        self.terms = TermStats(self.client, f"{collection}_terms", shared=not self.lite, write=self._write)
        self.has_sparse = self._ensure_chunks()

    @classmethod
    def existing(
        cls,
        uri: str,
        collection: str,
        *,
        token: str | None = None,
        client_options: dict[str, Any] | None = None,
    ) -> ChunkStore | None:
        """Open the store if its collection exists (its dimension read from it), else None.

        For tools that only read or delete (``adept tenant delete`` without a running platform):
        no embedding model is loaded to learn the dimension, and nothing is created.
        """
        from pymilvus import MilvusClient
        from pymilvus.exceptions import MilvusException

        if is_lite_uri(uri) and not Path(uri).expanduser().exists():
            return None
        try:
            probe = MilvusClient(uri, token=token or "", **(client_options or {}))
        except MilvusException as e:
            raise Unavailable(f"cannot open Milvus at {uri}: {e}") from None
        try:
            if not probe.has_collection(collection):
                return None
            fields = {f["name"]: f for f in probe.describe_collection(collection)["fields"]}
            dim = int(fields["dense"]["params"]["dim"])
        finally:
            probe.close()
        return cls(uri, collection, dim, token=token, client_options=client_options)

    # ---- schema -------------------------------------------------------------------------------
    def _ensure_chunks(self) -> bool:
        """Create or open the chunk collection; True when it has the BM25 sparse field (hybrid search).

        A collection made by an earlier release, whose sparse field Milvus filled with its own BM25
        function (scores that depend on segment layout), is migrated in place once (``_migrate``).
        """
        migrating = f"{self.collection}__bm25_migration"
        if self.client.has_collection(migrating) and not self.client.has_collection(self.collection):
            # A migration stopped after dropping the old collection: the copy is complete.
            self.client.rename_collection(migrating, self.collection)
        if self.client.has_collection(self.collection):
            desc = self.client.describe_collection(self.collection)
            fields = {f["name"]: f for f in desc["fields"]}
            have_dim = int(fields.get("dense", {}).get("params", {}).get("dim", self.dim))
            if have_dim != self.dim:
                raise ConfigError(
                    f"collection {self.collection!r} stores {have_dim}-dim vectors but the embedding model makes "
                    f"{self.dim}-dim ones; use another collection name or the original model"
                )
            self.client.load_collection(self.collection)  # a reopened Lite file leaves it released
            if "sparse" in fields and desc.get("functions"):
                self._migrate(migrating)
            return "sparse" in fields
        try:
            self._create_chunks(self.collection, sparse=True)
            return True
        except Exception as e:  # an older Milvus (< 2.4) without sparse vectors: dense only
            log.warning("Milvus at %s has no sparse vector support (%s); hybrid search disabled", self.uri, e)
            # Milvus 2.3 creates the collection, then refuses the sparse field or index: drop the half-made one.
            if self.client.has_collection(self.collection):
                self.client.drop_collection(self.collection)
        self._create_chunks(self.collection, sparse=False)
        return False

    def _create_chunks(self, name: str, *, sparse: bool) -> None:
        from pymilvus import DataType

        schema = self.client.create_schema(auto_id=False)
        for spec in self._chunk_field_specs():
            schema.add_field(**spec)
        index = self.client.prepare_index_params()
        index.add_index("dense", index_type=self.index_type, metric_type="IP", params=self.index_params)
        if sparse:
            schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
            index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
        self.client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")

    def _migrate(self, migrating: str) -> None:
        """Rewrite a collection whose BM25 Milvus computed per segment into the platform's BM25.

        Copies every chunk (its sparse vector recomputed from ``text``) into ``<name>__bm25_migration``,
        writes the tenants' term statistics, drops the old collection and renames the copy. A crash
        before the drop leaves the old collection intact (the copy is redone); after it, the next
        open finishes the rename.
        """
        log.warning("migrating %s to segment-independent BM25 (one-time copy)", self.collection)
        if self.client.has_collection(migrating):
            self.client.drop_collection(migrating)
        self._create_chunks(migrating, sparse=True)
        fields = [*CHUNK_FIELDS, "pk", "content_hash", "dense"]
        stats: dict[str, tuple[int, Counter[int]]] = {}
        batch: list[dict[str, Any]] = []

        def write() -> None:
            self._write(lambda: self.client.insert(migrating, batch))
            batch.clear()

        for row in _iterate(self.client, self.collection, 'pk != ""', fields):
            counts = bm25.term_counts(row["text"])
            n, df = stats.get(row["tenant"], (0, Counter()))
            df.update(counts.keys())
            stats[row["tenant"]] = (n + 1, df)
            batch.append({**row, "sparse": bm25.document_vector(counts)})
            if len(batch) >= 1024:
                write()
        if batch:
            write()
        self._write(lambda: self.client.flush(migrating))
        for tenant, (n, df) in stats.items():
            self.terms.replace(tenant, n, df)
        self.client.drop_collection(self.collection)
        self.client.rename_collection(migrating, self.collection)
        self.client.load_collection(self.collection)

    def _chunk_field_specs(self) -> list[dict[str, Any]]:
        from pymilvus import DataType

        return [
            {"field_name": "pk", "datatype": DataType.VARCHAR, "is_primary": True, "max_length": 64},
            {
                "field_name": "tenant",
                "datatype": DataType.VARCHAR,
                "max_length": 64,
                "is_partition_key": True,
            },
            {"field_name": "document_id", "datatype": DataType.VARCHAR, "max_length": 1024},
            {"field_name": "chunk_id", "datatype": DataType.VARCHAR, "max_length": 1100},
            {"field_name": "generation", "datatype": DataType.INT64},
            {"field_name": "title", "datatype": DataType.VARCHAR, "max_length": 4096},
            {"field_name": "heading_path", "datatype": DataType.VARCHAR, "max_length": 4096},
            {"field_name": "text", "datatype": DataType.VARCHAR, "max_length": 65535},
            {"field_name": "metadata", "datatype": DataType.JSON},
            {"field_name": "content_hash", "datatype": DataType.VARCHAR, "max_length": 64},
            {"field_name": "dense", "datatype": DataType.FLOAT_VECTOR, "dim": self.dim},
        ]

    def _ensure_records(self) -> None:
        from pymilvus import DataType

        if self.client.has_collection(self.records):
            self.client.load_collection(self.records)
            return
        schema = self.client.create_schema(auto_id=False)
        schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("tenant", DataType.VARCHAR, max_length=64, is_partition_key=True)
        schema.add_field("document_id", DataType.VARCHAR, max_length=1024)
        schema.add_field("generation", DataType.INT64)
        schema.add_field("title", DataType.VARCHAR, max_length=4096)
        schema.add_field("content_hash", DataType.VARCHAR, max_length=64)
        schema.add_field("chunks", DataType.INT64)
        schema.add_field("metadata", DataType.JSON)
        schema.add_field("unused", DataType.FLOAT_VECTOR, dim=2)  # Milvus wants a vector in every collection
        index = self.client.prepare_index_params()
        index.add_index("unused", index_type="FLAT", metric_type="L2")
        self.client.create_collection(
            self.records, schema=schema, index_params=index, consistency_level="Strong"
        )

    # ---- writes -------------------------------------------------------------------------------
    def insert_chunks(self, tenant: str, rows: Sequence[dict[str, Any]]) -> None:
        """Insert chunk rows (``document_id, chunk_id, generation, title, heading_path, text, metadata,
        content_hash, dense``) for ``tenant``; primary keys are derived, so a retried insert upserts.
        The BM25 document vector is computed here from ``text``, and the tenant's term statistics
        count the new chunks."""
        _scope(tenant)
        counts = [bm25.term_counts(r.get("text", "")) for r in rows] if self.has_sparse else []
        data = [
            {**r, "tenant": tenant, "pk": _pk(tenant, r["document_id"], r["generation"], r["chunk_id"])}
            for r in rows
        ]
        for row, c in zip(data, counts, strict=False):
            row["sparse"] = bm25.document_vector(c)
        self._write(lambda: self.client.upsert(self.collection, data))
        if counts:
            self.terms.add(tenant, counts)

    def seal(self) -> None:
        """Make what was just written searchable through the indexes (Milvus Lite only): one flush per upload.

        Milvus Lite searches rows it has not flushed by brute force in Python, on every query
        (measured at 106k chunks: 1.7 s per dense query unflushed, 76 ms flushed with HNSW). BM25
        scores are the platform's own (``services.retrieval.bm25``), so flushing does not change
        them. A Milvus server seals and indexes segments on its own; frequent flushes there are an
        anti-pattern, so this does nothing there.
        """
        if self.lite:
            for name in (self.collection, self.records, self.terms.name):
                self._write(lambda name=name: self.client.flush(name))

    def put_record(self, tenant: str, record: dict[str, Any]) -> None:
        """Add a (document, generation) record; the highest generation of a document is the live one."""
        self.put_records(tenant, [record])

    def put_records(self, tenant: str, records: Sequence[dict[str, Any]]) -> None:
        """``put_record`` for many documents in one write (one round trip per upload batch)."""
        _scope(tenant)
        rows = [
            {
                **r,
                "tenant": tenant,
                "unused": [0.0, 0.0],
                "pk": _pk(tenant, r["document_id"], r["generation"]),
            }
            for r in records
        ]
        if rows:
            self._write(lambda: self.client.upsert(self.records, rows))

    def delete_chunks(self, tenant: str, document_id: str, *, except_generation: int | None = None) -> None:
        extra = f"document_id == {quote_literal(document_id)}"
        if except_generation is not None:
            extra += f" and generation != {int(except_generation)}"
        self._delete_chunks(tenant, extra)

    def delete_records(self, tenant: str, document_id: str, *, except_generation: int | None = None) -> None:
        extra = f"document_id == {quote_literal(document_id)}"
        if except_generation is not None:
            extra += f" and generation != {int(except_generation)}"
        self._write(lambda: self.client.delete(self.records, filter=_scope(tenant, extra)))

    def delete_where(self, tenant: str, extra: str) -> None:
        """Delete chunks, then records, of ``tenant`` matching ``extra`` (fields common to both)."""
        self._delete_chunks(tenant, extra)
        self._write(lambda: self.client.delete(self.records, filter=_scope(tenant, extra)))

    def delete_tenant(self, tenant: str) -> None:
        # Chunks first: records are what make chunks visible, so a crash in between leaves nothing visible.
        self._write(lambda: self.client.delete(self.collection, filter=_scope(tenant)))
        self._write(lambda: self.client.delete(self.records, filter=_scope(tenant)))
        self.terms.drop(tenant)

    def _delete_chunks(self, tenant: str, extra: str) -> None:
        """Delete matching chunks and take their terms out of the tenant's BM25 statistics.

        With BM25 statistics the matching rows are read anyway (their texts), so they are deleted
        by primary key: exactly the rows counted out, and no second pass over the collection (a
        filtered delete scans every row on Milvus Lite; by key it does not). Nothing matched,
        nothing to delete: the common case when an upload retires documents it has just created.
        """
        expr = _scope(tenant, extra)
        if not self.has_sparse:
            self._write(lambda: self.client.delete(self.collection, filter=expr))
            return
        keys, gone = [], []
        for row in _iterate(self.client, self.collection, expr, ["pk", "text"]):
            keys.append(row["pk"])
            gone.append(bm25.term_counts(row["text"]))
        for start in range(0, len(keys), 4096):
            part = keys[start : start + 4096]
            self._write(lambda part=part: self.client.delete(self.collection, ids=part))
        if gone:
            self.terms.add(tenant, gone, sign=-1)

    def rebuild_term_stats(self, tenant: str) -> None:
        """Recount ``tenant``'s BM25 statistics from its stored chunks (a repair after a crash mid-write)."""
        n, df = 0, Counter[int]()
        for row in _iterate(self.client, self.collection, _scope(tenant), ["text"]):
            n += 1
            df.update(bm25.term_counts(row["text"]).keys())
        self.terms.replace(tenant, n, df)

    def _write(self, op: Any) -> Any:
        from pymilvus.exceptions import MilvusException

        try:
            return op()
        except MilvusException as e:
            raise StorageError(
                f"Milvus refused a write: {e.message if hasattr(e, 'message') else e}"
            ) from None

    # ---- reads --------------------------------------------------------------------------------
    def records_for(self, tenant: str, document_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """All records of ``tenant`` (optionally only for ``document_ids``), every generation."""
        extra = ""
        if document_ids is not None:
            if not document_ids:
                return []
            extra = f"document_id in [{', '.join(quote_literal(d) for d in document_ids)}]"
        return list(_iterate(self.client, self.records, _scope(tenant, extra), RECORD_FIELDS))

    def chunk_count(self, tenant: str, document_id: str, generation: int) -> int:
        expr = _scope(
            tenant, f"document_id == {quote_literal(document_id)} and generation == {int(generation)}"
        )
        res = self.client.query(self.collection, filter=expr, output_fields=["count(*)"])
        return int(res[0]["count(*)"]) if res else 0

    def search(
        self,
        tenant: str,
        vector: Sequence[float],
        *,
        limit: int,
        query_text: str | None = None,
        extra: str = "",
        rrf_k: int = 60,
    ) -> list[dict[str, Any]]:
        """Top ``limit`` chunks of ``tenant``: dense, or hybrid (dense + BM25, RRF) when ``query_text`` is given."""
        expr = _scope(tenant, extra)
        fields = CHUNK_FIELDS
        sparse = None
        if query_text is not None and self.has_sparse:
            n, df = self.terms.get(tenant)
            sparse = bm25.query_vector(query_text, n, df) or None  # no known term: BM25 ranks nothing
        if sparse is not None:
            from pymilvus import AnnSearchRequest, RRFRanker

            reqs = [
                AnnSearchRequest(data=[list(vector)], anns_field="dense", param=self._dense_params(), limit=limit,
                                 expr=expr),
                AnnSearchRequest(data=[sparse], anns_field="sparse", param={"metric_type": "IP"}, limit=limit,
                                 expr=expr),
            ]  # fmt: skip
            res = self.client.hybrid_search(
                self.collection, reqs, RRFRanker(rrf_k), limit=limit, output_fields=fields
            )
        else:
            res = self.client.search(
                self.collection,
                data=[list(vector)],
                anns_field="dense",
                filter=expr,
                limit=limit,
                search_params=self._dense_params(),
                output_fields=fields,
            )
        return self._hits(res, tenant)

    def keyword_search(
        self, tenant: str, query_text: str, *, limit: int, extra: str = ""
    ) -> list[dict[str, Any]]:
        """Top ``limit`` chunks of ``tenant`` by BM25 alone (score = BM25); empty without a sparse field."""
        if not self.has_sparse:
            return []
        n, df = self.terms.get(tenant)
        sparse = bm25.query_vector(query_text, n, df)
        if not sparse:
            return []
        res = self.client.search(
            self.collection,
            data=[sparse],
            anns_field="sparse",
            filter=_scope(tenant, extra),
            limit=limit,
            search_params={"metric_type": "IP"},
            output_fields=CHUNK_FIELDS,
        )
        return self._hits(res, tenant)

    @staticmethod
    def _hits(res: Any, tenant: str) -> list[dict[str, Any]]:
        hits = []
        for hit in res[0] if res else []:
            entity = hit["entity"]
            if entity.get("tenant") != tenant:  # defense in depth: never hand out another tenant's chunk
                log.error("Milvus returned a chunk of another tenant for a scoped search; dropped")
                continue
            hits.append({**entity, "score": float(hit["distance"])})
        return hits

    def _dense_params(self) -> dict[str, Any]:
        return {"metric_type": "IP", "params": dict(self.search_params)}

    def close(self) -> None:
        self.client.close()


class TermStats:
    """Each tenant's BM25 statistics: its chunk count and, per term id, how many of its chunks have it.

    Kept in the ``<name>_terms`` collection (one row per tenant and term; the count under term -1)
    and cached per tenant in memory. On Milvus Lite this process is the only writer, so the cache is
    the truth. On a server, where several replicas may write, the cache is reloaded after
    ``reload_s`` and a write re-reads the terms it changes, so replicas converge; IDF a few seconds
    old shifts scores only slightly. ``ChunkStore.rebuild_term_stats`` recounts from the chunks.
    """

    COUNT = -1  # the term id under which a tenant's chunk count is kept
    reload_s = 30.0

    def __init__(self, client: Any, name: str, *, shared: bool, write: Any) -> None:
        self.client, self.name, self.shared, self._write = client, name, shared, write
        self._cache: dict[str, tuple[float, int, dict[int, int]]] = {}
        self._lock = threading.Lock()
        self._ensure()

    def _ensure(self) -> None:
        from pymilvus import DataType

        if self.client.has_collection(self.name):
            self.client.load_collection(self.name)
            return
        schema = self.client.create_schema(auto_id=False)
        schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("tenant", DataType.VARCHAR, max_length=64, is_partition_key=True)
        schema.add_field("term", DataType.INT64)
        schema.add_field("df", DataType.INT64)
        schema.add_field("unused", DataType.FLOAT_VECTOR, dim=2)  # Milvus wants a vector in every collection
        index = self.client.prepare_index_params()
        index.add_index("unused", index_type="FLAT", metric_type="L2")
        self.client.create_collection(
            self.name, schema=schema, index_params=index, consistency_level="Strong"
        )

    def get(self, tenant: str) -> tuple[int, dict[int, int]]:
        """``(chunk count, {term id: document frequency})`` of ``tenant``. Do not modify the dict."""
        hit = self._cache.get(tenant)
        if hit is not None and (not self.shared or time.monotonic() - hit[0] < self.reload_s):
            return hit[1], hit[2]
        with self._lock:
            return self._load(tenant)

    def _load(self, tenant: str) -> tuple[int, dict[int, int]]:
        df = {
            int(r["term"]): int(r["df"])
            for r in _iterate(self.client, self.name, _scope(tenant), ["term", "df"])
            if int(r["df"]) > 0
        }
        n = df.pop(self.COUNT, 0)
        self._cache[tenant] = (time.monotonic(), n, df)
        return n, df

    def add(self, tenant: str, chunks: Sequence[Counter[int]], sign: int = 1) -> None:
        """Count ``chunks`` (their term counts) in, or out with ``sign=-1``."""
        delta: Counter[int] = Counter()
        for c in chunks:
            delta.update(c.keys())
        delta[self.COUNT] = len(chunks)
        with self._lock:
            if tenant not in self._cache:
                self._load(tenant)
            _, n, df = self._cache[tenant]
            df = dict(df)  # copy on write: searches read the cached (count, df) pair without the lock
            if self.shared:  # another replica may have changed these terms: start from the stored values
                terms = ", ".join(str(t) for t in delta)
                stored = {int(r["term"]): int(r["df"]) for r in _iterate(
                    self.client, self.name, _scope(tenant, f"term in [{terms}]"), ["term", "df"])}  # fmt: skip
                n = stored.pop(self.COUNT, n)
                df.update(stored)
            n = max(0, n + sign * delta.pop(self.COUNT))
            changed = {t: max(0, df.get(t, 0) + sign * k) for t, k in delta.items()}
            for t, v in changed.items():
                if v:
                    df[t] = v
                else:
                    df.pop(t, None)
            self._upsert(tenant, {**changed, self.COUNT: n})
            self._cache[tenant] = (time.monotonic(), n, df)

    def replace(self, tenant: str, n: int, df: dict[int, int]) -> None:
        """Set ``tenant``'s statistics outright (migration, rebuild)."""
        with self._lock:
            self._write(lambda: self.client.delete(self.name, filter=_scope(tenant)))
            self._upsert(tenant, {**df, self.COUNT: n})
            self._cache[tenant] = (time.monotonic(), n, dict(df))

    def drop(self, tenant: str) -> None:
        with self._lock:
            self._write(lambda: self.client.delete(self.name, filter=_scope(tenant)))
            self._cache.pop(tenant, None)

    def _upsert(self, tenant: str, values: dict[int, int]) -> None:
        rows = [
            {"pk": _pk(tenant, t), "tenant": tenant, "term": t, "df": v, "unused": [0.0, 0.0]}
            for t, v in values.items()
        ]
        for start in range(0, len(rows), 8192):
            part = rows[start : start + 8192]
            self._write(lambda part=part: self.client.upsert(self.name, part))
