"""Milvus storage for every tenant's chunks, with the tenant filter applied here and only here.

Two collections per platform: ``<name>`` holds chunks (tenant = partition key, dense vector,
BM25 sparse vector computed by Milvus from ``text``), ``<name>_documents`` holds one record per
(document, generation): the *live* generation of a document is its highest recorded one. Every
read and delete builds its expression with ``_scope(tenant)``; callers cannot pass a raw filter.
pymilvus ignores ``filter=`` on ``hybrid_search`` (ENVIRONMENT.md), so each ``AnnSearchRequest``
carries the scope, and every hit's tenant is checked again before it leaves this module.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from adept.config.retrieval import IndexConfig
from adept.config.tenant import check_tenant_name
from adept.errors import ConfigError, InvalidRequest, StorageError, Unavailable

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
        self.has_sparse = self._ensure_chunks()
        self._ensure_records()

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
        from pymilvus import DataType, Function, FunctionType

        if self.client.has_collection(self.collection):
            fields = {f["name"]: f for f in self.client.describe_collection(self.collection)["fields"]}
            have_dim = int(fields.get("dense", {}).get("params", {}).get("dim", self.dim))
            if have_dim != self.dim:
                raise ConfigError(
                    f"collection {self.collection!r} stores {have_dim}-dim vectors but the embedding model makes "
                    f"{self.dim}-dim ones; use another collection name or the original model"
                )
            self.client.load_collection(self.collection)  # a reopened Lite file leaves it released
            return "sparse" in fields
        schema = self.client.create_schema(auto_id=False)
        for spec in self._chunk_field_specs(analyzer=True):
            schema.add_field(**spec)
        index = self.client.prepare_index_params()
        index.add_index("dense", index_type=self.index_type, metric_type="IP", params=self.index_params)
        try:
            schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
            schema.add_function(
                Function(name="text_bm25", function_type=FunctionType.BM25, input_field_names=["text"],
                         output_field_names=["sparse"])
            )  # fmt: skip
            index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
            self.client.create_collection(
                self.collection, schema=schema, index_params=index, consistency_level="Strong"
            )
            return True
        except Exception as e:  # an older Milvus without BM25 functions: dense only
            log.warning("Milvus at %s has no BM25 function support (%s); hybrid search disabled", self.uri, e)
            # Milvus < 2.5 creates the collection, then refuses the sparse index: drop the half-made one.
            if self.client.has_collection(self.collection):
                self.client.drop_collection(self.collection)
        schema = self.client.create_schema(auto_id=False)
        for spec in self._chunk_field_specs(analyzer=False):
            schema.add_field(**spec)
        index = self.client.prepare_index_params()
        index.add_index("dense", index_type=self.index_type, metric_type="IP", params=self.index_params)
        self.client.create_collection(
            self.collection, schema=schema, index_params=index, consistency_level="Strong"
        )
        return False

    def _chunk_field_specs(self, *, analyzer: bool) -> list[dict[str, Any]]:
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
            {
                "field_name": "text",
                "datatype": DataType.VARCHAR,
                "max_length": 65535,
                "enable_analyzer": analyzer,
            },
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
        content_hash, dense``) for ``tenant``; primary keys are derived, so a retried insert upserts."""
        _scope(tenant)
        data = [
            {**r, "tenant": tenant, "pk": _pk(tenant, r["document_id"], r["generation"], r["chunk_id"])}
            for r in rows
        ]
        self._write(lambda: self.client.upsert(self.collection, data))

    def seal(self) -> None:
        """Make what was just written searchable through the index (Milvus Lite only).

        Milvus Lite searches rows it has not flushed by brute force in Python, on every query:
        measured at 20k chunks, 6.9 s per dense search unflushed vs 0.2 s flushed (bench/retrieval.py).
        But Lite (3.2.2) scores BM25 with each sealed segment's own statistics, which ruins hybrid
        ranking across segments, so ingestion does not call this; it is for dense-only bulk loads.
        A Milvus server seals and indexes segments on its own, and frequent flushes there are an anti-pattern.
        """
        if self.lite:
            self._write(lambda: self.client.flush(self.collection))

    def put_record(self, tenant: str, record: dict[str, Any]) -> None:
        """Add a (document, generation) record; the highest generation of a document is the live one."""
        _scope(tenant)
        row = {**record, "tenant": tenant, "unused": [0.0, 0.0]}
        row["pk"] = _pk(tenant, record["document_id"], record["generation"])
        self._write(lambda: self.client.upsert(self.records, [row]))

    def delete_chunks(self, tenant: str, document_id: str, *, except_generation: int | None = None) -> None:
        extra = f"document_id == {quote_literal(document_id)}"
        if except_generation is not None:
            extra += f" and generation != {int(except_generation)}"
        self._write(lambda: self.client.delete(self.collection, filter=_scope(tenant, extra)))

    def delete_records(self, tenant: str, document_id: str, *, except_generation: int | None = None) -> None:
        extra = f"document_id == {quote_literal(document_id)}"
        if except_generation is not None:
            extra += f" and generation != {int(except_generation)}"
        self._write(lambda: self.client.delete(self.records, filter=_scope(tenant, extra)))

    def delete_where(self, tenant: str, extra: str) -> None:
        """Delete chunks, then records, of ``tenant`` matching ``extra`` (fields common to both)."""
        self._write(lambda: self.client.delete(self.collection, filter=_scope(tenant, extra)))
        self._write(lambda: self.client.delete(self.records, filter=_scope(tenant, extra)))

    def delete_tenant(self, tenant: str) -> None:
        # Chunks first: records are what make chunks visible, so a crash in between leaves nothing visible.
        self._write(lambda: self.client.delete(self.collection, filter=_scope(tenant)))
        self._write(lambda: self.client.delete(self.records, filter=_scope(tenant)))

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
        return list(self._iterate(self.records, _scope(tenant, extra), RECORD_FIELDS))

    def chunk_count(self, tenant: str, document_id: str, generation: int) -> int:
        expr = _scope(
            tenant, f"document_id == {quote_literal(document_id)} and generation == {int(generation)}"
        )
        res = self.client.query(self.collection, filter=expr, output_fields=["count(*)"])
        return int(res[0]["count(*)"]) if res else 0

    def _iterate(self, collection: str, expr: str, fields: list[str]) -> Iterator[dict[str, Any]]:
        window = 16384  # Milvus' largest query window; beyond it page with an iterator
        rows = self.client.query(collection, filter=expr, output_fields=fields, limit=window)
        if len(rows) < window:
            yield from rows
            return
        it = self.client.query_iterator(collection, batch_size=4096, filter=expr, output_fields=fields)
        try:
            while batch := it.next():
                yield from batch
        finally:
            it.close()

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
        if query_text is not None and self.has_sparse:
            from pymilvus import AnnSearchRequest, RRFRanker

            reqs = [
                AnnSearchRequest(data=[list(vector)], anns_field="dense", param=self._dense_params(), limit=limit,
                                 expr=expr),
                AnnSearchRequest(data=[query_text], anns_field="sparse", param={}, limit=limit, expr=expr),
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
