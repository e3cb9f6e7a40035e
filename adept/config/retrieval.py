"""Knowledge-base settings: chunking, embedding, limits, Milvus index and search mode."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from adept.config.base import StrictModel

MiB = 1024 * 1024
SUPPORTED_EXTENSIONS = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx", ".jsonl")


class IndexConfig(StrictModel):
    """The dense-vector index. ``auto`` is HNSW, on Milvus Lite (flushed after every upload) and on a server."""

    type: Literal["auto", "FLAT", "AUTOINDEX", "HNSW", "IVF_FLAT", "DISKANN"] = Field(
        "auto", description="Milvus index type for the dense vector; `auto`: HNSW (Lite and server)."
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Index build parameters (e.g. `{M: 16, efConstruction: 200}` for HNSW); empty: per-type defaults.",
    )
    search_params: dict[str, Any] = Field(
        default_factory=dict,
        description="Search parameters (e.g. `{ef: 128}` for HNSW); empty: per-type defaults.",
    )

    def resolve(self, lite: bool) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """``(index_type, build_params, search_params)`` for a Lite (``lite=True``) or server backend."""
        # Lite searches flushed rows through the index (the platform flushes after every upload): at
        # 106k chunks HNSW 76 ms p50 vs 159 ms FLAT (bench/retrieval.py), so HNSW everywhere.
        kind = self.type if self.type != "auto" else "HNSW"
        build: dict[str, Any] = {}
        search: dict[str, Any] = {}
        if kind == "HNSW":
            # ef=128 measured recall@10 0.981 on 106k MiniLM vectors (bench/retrieval.py); 256 buys margin
            # at sub-ms cost (Lite's per-query overhead is tens of ms).
            build, search = {"M": 16, "efConstruction": 200}, {"ef": 256}
        elif kind == "IVF_FLAT":
            build, search = {"nlist": 1024}, {"nprobe": 32}
        return kind, {**build, **self.params}, {**search, **self.search_params}


class RetrievalConfig(StrictModel):
    """How tenant documents are chunked, embedded, stored and searched."""

    chunk_size_tokens: int = Field(
        200,
        ge=16,
        le=8192,
        description="Target chunk length in embedding-model tokens (capped by its max length).",
    )
    chunk_overlap_tokens: int = Field(
        32, ge=0, le=4096, description="Tokens of the previous chunk repeated at the start of the next one."
    )
    embedding_batch_size: int = Field(64, ge=1, le=4096, description="Texts per embedding forward pass.")
    insert_batch_size: int = Field(1024, ge=1, le=65536, description="Chunks per Milvus insert call.")
    max_file_bytes: int = Field(
        50 * MiB, ge=1, description="Largest accepted file (bytes); larger uploads get HTTP 413."
    )
    max_request_bytes: int = Field(
        100 * MiB,
        ge=1,
        description="Largest accepted upload request body (bytes), all files together; 413 above.",
    )
    # Measured by `bench/retrieval.py --quick` (MiniLM, Milvus Lite, 3.6k chunks): hit@5 hybrid 1.00 vs dense
    # 0.80 on 168 generated questions naming part codes; 1.00 vs 1.00 on the 40 demo questions. Hybrid wins
    # where questions quote codes and rare terms that BM25 matches exactly, and never lost: default hybrid.
    search_mode: Literal["dense", "hybrid"] = Field(
        "hybrid", description="`dense` (vector only) or `hybrid` (dense + BM25 sparse, fused with RRF)."
    )
    rrf_k: int = Field(
        60, ge=1, le=1000, description="RRF constant k in 1/(k + rank) when fusing hybrid results."
    )
    default_top_k: int = Field(5, ge=1, le=100, description="Results returned when a search names no top_k.")
    max_top_k: int = Field(100, ge=1, le=100, description="Largest top_k a search may ask for (400 above).")
    index: IndexConfig = Field(default_factory=IndexConfig, description="Dense vector index settings.")
    supported_extensions: list[str] = Field(
        default_factory=lambda: list(SUPPORTED_EXTENSIONS),
        description="File extensions accepted for ingestion (lowercase, with the dot).",
    )

    @field_validator("supported_extensions")
    @classmethod
    def _exts(cls, v: list[str]) -> list[str]:
        bad = [e for e in v if e.lower() not in SUPPORTED_EXTENSIONS]
        if bad:
            raise ValueError(f"no parser for {bad}; supported: {list(SUPPORTED_EXTENSIONS)}")
        return [e.lower() for e in v]

    @model_validator(mode="after")
    def _consistent(self) -> RetrievalConfig:
        if self.chunk_overlap_tokens >= self.chunk_size_tokens:
            raise ValueError(
                f"chunk_overlap_tokens ({self.chunk_overlap_tokens}) must be smaller than "
                f"chunk_size_tokens ({self.chunk_size_tokens})"
            )
        if self.default_top_k > self.max_top_k:
            raise ValueError(f"default_top_k ({self.default_top_k}) exceeds max_top_k ({self.max_top_k})")
        if self.max_file_bytes > self.max_request_bytes:
            raise ValueError(
                f"max_file_bytes ({self.max_file_bytes}) exceeds max_request_bytes ({self.max_request_bytes})"
            )
        return self
