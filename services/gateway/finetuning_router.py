"""Tenant routes of the files and fine-tuning APIs (thin): authenticate, parse, call the service, reply.

``/v1/files`` (upload, list, get, content, delete) and ``/v1/fine_tuning/jobs`` (create, list,
get, cancel, events, checkpoints), as the official ``openai`` client calls them.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from adept.errors import InvalidRequest, PermissionDenied, UnsupportedMedia
from adept.finetuning.files import FileValidationError
from adept.tenancy import Tenant
from services.gateway.api_router import tenant_dependency
from services.gateway.context import GatewayContext
from services.gateway.finetuning import FineTuningService
from services.gateway.finetuning_protocol import (
    FileDeleted,
    FileList,
    FileObject,
    FileValidationErrorResponse,
    FineTuningJob,
    FineTuningJobCheckpointList,
    FineTuningJobCreateRequest,
    FineTuningJobEventList,
    FineTuningJobList,
    LineError,
    ModelDeleted,
)
from services.gateway.protocol import parse_body
from services.responses import TENANT_ERRORS, ModelResponse, error_response
from services.retrieval.upload import read_capped, split_multipart

_UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    **TENANT_ERRORS,
    400: {"model": FileValidationErrorResponse, "description": "Invalid file: every bad line in `errors`"},
    403: {"description": "Over the tenant's max_files or max_file_storage_bytes quota"},
    415: {"description": "Not a multipart/form-data upload"},
}
_CREATE_ERRORS: dict[int | str, dict[str, Any]] = {
    **TENANT_ERRORS,
    403: {"description": "The tenant's max_adapters quota is reached (the job would publish a new model)"},
    429: {
        "description": "Over max_concurrent_finetune_jobs or max_trained_tokens_per_day (see `Retry-After`)"
    },
}


def build_finetuning_router(ctx: GatewayContext) -> APIRouter:
    """The files and fine-tuning job routes over ``ctx.finetuning``."""
    router = APIRouter(tags=["fine-tuning"])
    tenant_dep = tenant_dependency(ctx)

    def service() -> FineTuningService:
        if ctx.finetuning is None:
            raise PermissionDenied(
                "fine-tuning is not enabled on this platform (finetuning.enabled)", code="finetuning_disabled"
            )
        return ctx.finetuning

    # -- files -------------------------------------------------------------------------------
    @router.post(
        "/v1/files",
        response_model=FileObject,
        responses=_UPLOAD_ERRORS,
        summary="Upload a JSONL training file (multipart: `file`, `purpose=fine-tune`)",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["file", "purpose"],
                            "properties": {
                                "file": {"type": "string", "format": "binary"},
                                "purpose": {"type": "string", "enum": ["fine-tune", "evals"]},
                            },
                        }
                    }
                },
            }
        },
    )
    async def upload(request: Request, tenant: Tenant = Depends(tenant_dep)) -> Response:
        svc = service()
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            raise UnsupportedMedia(
                f"upload files as multipart/form-data (fields `file` and `purpose`), not {ctype or 'no Content-Type'!r}"
            )
        body = await read_capped(
            request.stream(), request.headers.get("content-length"), ctx.max_upload_bytes
        )
        parts = split_multipart(body, ctype)
        files = [(fn, data) for name, fn, data in parts if name == "file" and fn is not None]
        purposes = [data for name, fn, data in parts if name == "purpose" and fn is None]
        if len(files) != 1:
            raise InvalidRequest("send exactly one file, in the multipart field `file`", param="file")
        if len(purposes) != 1:
            raise InvalidRequest("send the multipart field `purpose` (fine-tune)", param="purpose")
        purpose = purposes[0].decode("utf-8", "replace").strip()
        try:
            out = await svc.upload(tenant, files[0][0], purpose, files[0][1])
        except FileValidationError as e:
            lines = [LineError(line=p.line, reason=p.reason) for p in e.problems]
            return error_response(e, FileValidationErrorResponse(error=e.to_response().error, errors=lines))
        return ModelResponse(out)

    @router.get("/v1/files", response_model=FileList, responses=TENANT_ERRORS, summary="The caller's files")
    async def list_files(
        tenant: Tenant = Depends(tenant_dep),
        after: str | None = Query(None, max_length=128, description="Start after this file id."),
        limit: int = Query(10_000, ge=1, le=10_000, description="Most files to return."),
        order: str = Query("desc", pattern="^(asc|desc)$", description="By `created_at`."),
        purpose: str | None = Query(None, max_length=64, description="Only files with this purpose."),
    ) -> Response:
        return ModelResponse(
            await service().list_files(tenant, after=after, limit=limit, order=order, purpose=purpose)
        )

    @router.get("/v1/files/{file_id}", response_model=FileObject, responses=TENANT_ERRORS, summary="One file")
    async def get_file(file_id: str, tenant: Tenant = Depends(tenant_dep)) -> Response:
        return ModelResponse(await service().get_file(tenant, file_id))

    @router.get(
        "/v1/files/{file_id}/content",
        responses={
            **TENANT_ERRORS,
            200: {"content": {"application/octet-stream": {}}, "description": "The bytes"},
        },
        summary="A file's bytes, as uploaded",
    )
    async def file_content(file_id: str, tenant: Tenant = Depends(tenant_dep)) -> Response:
        record, data = await service().file_content(tenant, file_id)
        ascii_name = record.filename.encode("ascii", "replace").decode().replace('"', "'")
        return Response(
            data,
            media_type="application/octet-stream",
            headers={"Content-Disposition": f'attachment; filename="{ascii_name}"'},
        )

    @router.delete(
        "/v1/files/{file_id}", response_model=FileDeleted, responses=TENANT_ERRORS, summary="Delete a file"
    )
    async def delete_file(file_id: str, tenant: Tenant = Depends(tenant_dep)) -> Response:
        return ModelResponse(await service().delete_file(tenant, file_id))

    @router.delete(
        "/v1/models/{model:path}",
        tags=["openai"],
        response_model=ModelDeleted,
        responses={**TENANT_ERRORS, 403: {"description": "The base model, or an adapter no job made"}},
        summary="Delete a fine-tuned model (one made by your fine-tuning jobs)",
    )
    async def delete_model(model: str, tenant: Tenant = Depends(tenant_dep)) -> Response:
        return ModelResponse(await service().delete_model(tenant, model))

    # -- jobs --------------------------------------------------------------------------------
    @router.post(
        "/v1/fine_tuning/jobs",
        response_model=FineTuningJob,
        responses=_CREATE_ERRORS,
        summary="Fine-tune the base model on an uploaded file",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": FineTuningJobCreateRequest.model_json_schema()}},
            }
        },
    )
    async def create_job(request: Request, tenant: Tenant = Depends(tenant_dep)) -> Response:
        req = parse_body(FineTuningJobCreateRequest, await request.body())
        return ModelResponse(await service().create_job(tenant, req))

    @router.get(
        "/v1/fine_tuning/jobs",
        response_model=FineTuningJobList,
        responses=TENANT_ERRORS,
        summary="The caller's jobs",
    )
    async def list_jobs(
        tenant: Tenant = Depends(tenant_dep),
        after: str | None = Query(None, max_length=128, description="Start after this job id."),
        limit: int = Query(20, ge=1, le=100, description="Most jobs to return, newest first."),
    ) -> Response:
        return ModelResponse(await service().list_jobs(tenant, after=after, limit=limit))

    @router.get(
        "/v1/fine_tuning/jobs/{fine_tuning_job_id}",
        response_model=FineTuningJob,
        responses=TENANT_ERRORS,
        summary="One job",
    )
    async def get_job(fine_tuning_job_id: str, tenant: Tenant = Depends(tenant_dep)) -> Response:
        return ModelResponse(await service().get_job(tenant, fine_tuning_job_id))

    @router.post(
        "/v1/fine_tuning/jobs/{fine_tuning_job_id}/cancel",
        response_model=FineTuningJob,
        responses=TENANT_ERRORS,
        summary="Cancel an unfinished job",
    )
    async def cancel_job(fine_tuning_job_id: str, tenant: Tenant = Depends(tenant_dep)) -> Response:
        return ModelResponse(await service().cancel_job(tenant, fine_tuning_job_id))

    @router.get(
        "/v1/fine_tuning/jobs/{fine_tuning_job_id}/events",
        response_model=FineTuningJobEventList,
        responses=TENANT_ERRORS,
        summary="A job's events (status changes, per-step losses, errors), newest first",
    )
    async def list_events(
        fine_tuning_job_id: str,
        tenant: Tenant = Depends(tenant_dep),
        after: str | None = Query(None, max_length=128, description="Start after this event id."),
        limit: int = Query(20, ge=1, le=1000, description="Most events to return."),
    ) -> Response:
        return ModelResponse(
            await service().list_events(tenant, fine_tuning_job_id, after=after, limit=limit)
        )

    @router.get(
        "/v1/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints",
        response_model=FineTuningJobCheckpointList,
        responses=TENANT_ERRORS,
        summary="A job's checkpoints that are models to chat with",
    )
    async def list_checkpoints(
        fine_tuning_job_id: str,
        tenant: Tenant = Depends(tenant_dep),
        after: str | None = Query(None, max_length=128, description="Start after this checkpoint id."),
        limit: int = Query(10, ge=1, le=100, description="Most checkpoints to return."),
    ) -> Response:
        return ModelResponse(
            await service().list_checkpoints(tenant, fine_tuning_job_id, after=after, limit=limit)
        )

    return router
