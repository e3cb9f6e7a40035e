"""HTTP routes of the knowledge base (``/v1/kb/...``): thin — parse, call the KB, shape the reply.

The gateway mounts ``build_kb_router(get_tenant, get_kb)``; ``get_tenant`` authenticates the
caller (``Authorization: Bearer``) and ``get_kb`` returns an object with the ``KnowledgeBase``
methods as awaitables (a Serve-handle wrapper, or ``AsyncKnowledgeBase`` in tests). The tenant
is always the caller's: no route takes a tenant from the request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError

from adept.config.retrieval import RetrievalConfig
from adept.errors import AdeptError, InvalidRequest, PayloadTooLarge, UnsupportedMedia
from services.jsonbody import decode_json_body
from services.responses import TENANT_ERRORS, ModelResponse, error_response
from services.retrieval.protocol import (
    Chunking,
    DeleteResponse,
    DocumentList,
    DocumentSummary,
    IngestErrorResponse,
    IngestRecordsRequest,
    IngestResponse,
    IngestResult,
    SearchRequest,
    SearchResponse,
)
from services.retrieval.upload import read_capped, split_multipart


def adept_error(exc: BaseException) -> AdeptError | None:
    """The ``AdeptError`` in ``exc`` — also when a Ray/Serve call wrapped it (``.cause``)."""
    for candidate in (exc, getattr(exc, "cause", None), exc.__cause__):
        if isinstance(candidate, AdeptError):
            return candidate
    return None


def _validation_message(err: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in err.errors())


async def _json_body(request: Request, cap: int) -> Any:
    body = await read_capped(request.stream(), request.headers.get("content-length"), cap)
    return decode_json_body(body or b"null")


def build_kb_router(
    get_tenant: Callable[..., Any],
    get_kb: Callable[..., Any],
    *,
    config: RetrievalConfig | None = None,
    prefix: str = "/v1/kb",
    tags: list[str] | None = None,
) -> APIRouter:
    """Routes ``<prefix>/documents`` (POST, GET), ``<prefix>/documents/{id}`` (DELETE), ``<prefix>/search`` (POST).

    Tenants reach them under ``/v1/kb`` with their own key; the admin API mounts the same routes
    under ``/admin/kb/{tenant}`` (the operator syncs ``KnowledgeBase`` resources through them).

    Args:
        get_tenant: FastAPI dependency returning the tenant the call acts for (``adept.tenancy.Tenant``).
        get_kb: FastAPI dependency returning the async knowledge-base object.
        config: Upload limits and top_k bounds (defaults to ``RetrievalConfig()``).
        prefix: Where the routes live.
        tags: OpenAPI tags.
    """
    cfg = config or RetrievalConfig()
    router = APIRouter(prefix=prefix, tags=tags or ["knowledge base"])

    async def guarded(call: Callable[[], Any]) -> Response:
        try:
            return await call()
        except Exception as exc:
            err = adept_error(exc)
            if err is None:
                raise
            return error_response(err)

    @router.post(
        "/documents",
        summary="Upload files (multipart) or JSON records into the knowledge base",
        response_model=IngestResponse,
        responses={**TENANT_ERRORS, 400: {"model": IngestErrorResponse, "description": "Nothing ingested"}},
    )
    async def ingest(
        request: Request,
        tenant: Any = Depends(get_tenant),
        kb: Any = Depends(get_kb),
        chunk_size_tokens: int | None = Query(
            None, description="Chunk length for these documents (default: the server's)."
        ),
        chunk_overlap_tokens: int | None = Query(
            None, description="Chunk overlap for these documents (with chunk_size_tokens)."
        ),
    ) -> Response:
        async def run() -> Response:
            quota = getattr(getattr(tenant, "quotas", None), "max_documents", 0) or 0
            extra = _chunking(chunk_size_tokens, chunk_overlap_tokens)
            ctype = request.headers.get("content-type", "")
            if ctype.startswith("multipart/form-data"):
                body = await read_capped(
                    request.stream(), request.headers.get("content-length"), cfg.max_request_bytes
                )
                files = [(fn, data) for _, fn, data in split_multipart(body, ctype) if fn is not None]
                if not files:
                    raise InvalidRequest(
                        "no files in the upload (send them as multipart parts with a filename)"
                    )
                for name, data in files:
                    if len(data) > cfg.max_file_bytes:
                        raise PayloadTooLarge(
                            f"{name}: {len(data)} bytes; the limit is {cfg.max_file_bytes} bytes per file"
                        )
                result = await kb.ingest_files(tenant.name, files, max_documents=quota, **extra)
            elif ctype.startswith("application/json"):
                raw = await _json_body(request, cfg.max_request_bytes)
                try:
                    req = IngestRecordsRequest.model_validate(
                        {"records": raw} if isinstance(raw, list) else raw
                    )
                except ValidationError as e:
                    raise InvalidRequest(f"invalid records: {_validation_message(e)}") from None
                result = await kb.ingest_records(tenant.name, req.records, max_documents=quota, **extra)
            else:
                raise UnsupportedMedia(
                    f"send multipart/form-data files or application/json records, not {ctype or 'no Content-Type'!r}"
                )
            return _ingest_reply(result)

        return await guarded(run)

    @router.get(
        "/documents",
        summary="List the caller's documents with chunk counts",
        response_model=DocumentList,
        responses=TENANT_ERRORS,
    )
    async def list_documents(tenant: Any = Depends(get_tenant), kb: Any = Depends(get_kb)) -> Response:
        async def run() -> Response:
            docs = await kb.list_documents(tenant.name)
            return ModelResponse(DocumentList(documents=[DocumentSummary.of(d) for d in docs]))

        return await guarded(run)

    @router.delete(
        "/documents/{document_id:path}",
        summary="Delete one document and its chunks",
        response_model=DeleteResponse,
        responses=TENANT_ERRORS,
    )
    async def delete_document(
        document_id: str, tenant: Any = Depends(get_tenant), kb: Any = Depends(get_kb)
    ) -> Response:
        async def run() -> Response:
            info = await kb.delete_document(tenant.name, document_id)
            return ModelResponse(DeleteResponse(id=info.id, chunks=info.chunks))

        return await guarded(run)

    @router.post(
        "/search",
        summary="Retrieve the caller's chunks most relevant to a query",
        response_model=SearchResponse,
        responses=TENANT_ERRORS,
    )
    async def search(
        request: Request, tenant: Any = Depends(get_tenant), kb: Any = Depends(get_kb)
    ) -> Response:
        async def run() -> Response:
            raw = await _json_body(request, 1024 * 1024)
            try:
                req = SearchRequest.model_validate(raw)
            except ValidationError as e:
                raise InvalidRequest(_validation_message(e)) from None
            hits = await kb.search(tenant.name, req.query, req.top_k, req.filter, req.highlights)
            return ModelResponse(SearchResponse(results=hits))

        return await guarded(run)

    return router


def _chunking(size: int | None, overlap: int | None) -> dict[str, Any]:
    """``{"chunking": Chunking}`` when the caller asked for one, else nothing (the KB's own settings)."""
    if size is None and overlap is None:
        return {}
    if size is None:
        raise InvalidRequest("chunk_overlap_tokens needs chunk_size_tokens", param="chunk_size_tokens")
    try:
        return {"chunking": Chunking(size_tokens=size, overlap_tokens=overlap or 0)}
    except ValidationError as e:
        raise InvalidRequest(
            f"invalid chunking: {_validation_message(e)}", param="chunk_size_tokens"
        ) from None


def _ingest_reply(result: IngestResult) -> Response:
    if not result.documents and result.errors:
        # Nothing went in: a 4xx that still lists every file's reason.
        summary = "; ".join(f"{e.source}: {e.reason}" for e in result.errors[:5])
        more = f" (and {len(result.errors) - 5} more)" if len(result.errors) > 5 else ""
        err = InvalidRequest(f"nothing ingested: {summary}{more}")
        return error_response(err, IngestErrorResponse(error=err.to_response().error, errors=result.errors))
    return ModelResponse(
        IngestResponse(documents=[DocumentSummary.of(d) for d in result.documents], errors=result.errors)
    )
