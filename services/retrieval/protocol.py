"""Wire models of the knowledge-base API (``/v1/kb/...``) and of the logic layer's results."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from adept.documents import IngestRecord
from adept.errors import ErrorResponse

MAX_HIGHLIGHTS = 16  # most sentences per search result a caller may ask for
FILTER_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
FilterValue = str | int | float | bool | list[str] | list[int] | list[float]


class Chunking(BaseModel):
    """Chunk size and overlap for one ingest call (query parameters of ``POST .../documents``)."""

    model_config = ConfigDict(extra="forbid")

    size_tokens: int = Field(ge=16, le=8192, description="Target chunk length in embedding-model tokens.")
    overlap_tokens: int = Field(0, ge=0, le=4096, description="Tokens repeated from the previous chunk.")

    @model_validator(mode="after")
    def _overlap(self) -> Chunking:
        if self.overlap_tokens >= self.size_tokens:
            raise ValueError(
                f"chunk_overlap_tokens ({self.overlap_tokens}) must be smaller than "
                f"chunk_size_tokens ({self.size_tokens})"
            )
        return self


class IngestRecordsRequest(BaseModel):
    """JSON body of ``POST /v1/kb/documents`` (instead of a multipart upload)."""

    model_config = ConfigDict(extra="forbid")

    records: list[IngestRecord] = Field(min_length=1, description="Records to ingest.")


class DocumentInfo(BaseModel):
    """A document in a tenant's knowledge base."""

    id: str = Field(description="Document id (unique within the tenant).")
    title: str = Field(description="Title (from the file, the first heading, or the record).")
    chunks: int = Field(description="Number of chunks stored for the live version.")
    content_hash: str = Field(
        "", description="sha256 of the cleaned text; unchanged text is not re-ingested."
    )
    status: str = Field(
        "", description="`created`, `updated` or `unchanged` in ingest results; empty in listings."
    )


class IngestError(BaseModel):
    """Why one file or record was not ingested; the rest of the batch still goes in."""

    source: str = Field(description="File name (with `:line` for a JSONL line) or record index.")
    reason: str = Field(description="What is wrong, in words a user can act on.")


class IngestResult(BaseModel):
    """What one ingest call did."""

    documents: list[DocumentInfo] = Field(
        default_factory=list, description="Documents created, updated or unchanged."
    )
    errors: list[IngestError] = Field(
        default_factory=list, description="Files or records that were skipped, with why."
    )


def _empty(value: str) -> bool:
    return not value


class DocumentSummary(BaseModel):
    """A document as the API shows it (no content hash)."""

    id: str = Field(description="Document id (unique within the tenant).")
    title: str = Field(description="Title (from the file, the first heading, or the record).")
    chunks: int = Field(description="Number of chunks stored for the live version.")
    status: str = Field(
        "",
        description="`created`, `updated` or `unchanged` in ingest results; absent in listings.",
        exclude_if=_empty,
    )

    @classmethod
    def of(cls, doc: DocumentInfo) -> DocumentSummary:
        return cls(id=doc.id, title=doc.title, chunks=doc.chunks, status=doc.status)


class IngestResponse(BaseModel):
    """``POST /v1/kb/documents`` when at least one document went in."""

    documents: list[DocumentSummary] = Field(description="Documents created, updated or unchanged.")
    errors: list[IngestError] = Field(description="Files or records that were skipped, with why.")


class IngestErrorResponse(ErrorResponse):
    """``POST /v1/kb/documents`` when nothing went in: the error, and every file's reason."""

    errors: list[IngestError] = Field(description="Why each file or record was skipped.")


class DocumentList(BaseModel):
    """``GET /v1/kb/documents``."""

    object: Literal["list"] = "list"
    documents: list[DocumentSummary]


class SearchRequest(BaseModel):
    """``POST /v1/kb/search``. ``filter`` matches document metadata keys (or ``document_id``) exactly."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(description="Natural-language query.")
    top_k: int | None = Field(None, description="Number of results (1..max_top_k); default from config.")
    filter: dict[str, FilterValue] | None = Field(
        None,
        description="Exact-match filter: `{key: value}` or `{key: [v1, v2]}` on metadata keys; `document_id` too.",
    )
    highlights: int = Field(
        0,
        ge=0,
        le=MAX_HIGHLIGHTS,
        description="Adept extension: return up to this many of each result's sentences that answer the "
        "query best (`highlights`, best first; 0: none).",
    )

    @field_validator("filter")
    @classmethod
    def _filter_keys(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        for key in v or {}:
            if not FILTER_KEY_RE.fullmatch(key):
                raise ValueError(f"invalid filter key {key!r}: use letters, digits and '_'")
        return v


class Highlight(BaseModel):
    """A sentence of a retrieved chunk, ranked against the query (``services/retrieval/highlights.py``)."""

    text: str = Field(description="The sentence (a sentence wrapped over lines in the source on one line).")
    start: int = Field(description="Character offset of the sentence in the result's `text`.")
    end: int = Field(description="Character offset just past the sentence in the result's `text`.")
    score: float = Field(description="Relevance to the query; higher is better (cosine plus a lexical term).")


class SearchHit(BaseModel):
    """One retrieved chunk, with what a citation needs."""

    document_id: str
    chunk_id: str
    title: str
    text: str
    score: float = Field(description="Higher is better; cosine similarity (dense) or RRF score (hybrid).")
    heading_path: str = Field("", description="Headings above the chunk, joined with ' > '.")
    metadata: dict[str, Any] = Field(default_factory=dict)
    highlights: list[Highlight] = Field(
        default_factory=list,
        description="The chunk's sentences that answer the query best, best first (only when asked for).",
    )


class SearchResponse(BaseModel):
    """``POST /v1/kb/search``."""

    object: Literal["list"] = "list"
    results: list[SearchHit]


class DeleteResponse(BaseModel):
    """``DELETE /v1/kb/documents/{id}``."""

    id: str
    deleted: Literal[True] = True
    chunks: int = Field(description="Chunks removed with the document.")
