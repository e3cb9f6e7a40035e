"""Wire models as HTTP responses, the same way on every route (gateway, knowledge base, console)."""

from __future__ import annotations

from typing import Any

from fastapi.responses import Response
from pydantic import BaseModel

from adept.errors import AdeptError, ErrorResponse

# Error statuses a tenant route can answer with, all in the OpenAI error envelope (for OpenAPI).
TENANT_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": why}
    for status, why in (
        (400, "Invalid request"),
        (401, "Missing or unknown API key"),
        (404, "Unknown model, document or route"),
        (413, "Request body too large"),
        (429, "Over the tenant's quota (see `Retry-After`)"),
        (503, "A deployment is unavailable; retry"),
    )
}


class ModelResponse(Response):
    """A wire model as JSON, serialized by pydantic exactly as FastAPI's ``response_model`` path does.

    Routes return these themselves: ``response_model`` documents the body, it does not re-validate it.
    """

    media_type = "application/json"

    def __init__(
        self, body: BaseModel, status_code: int = 200, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(body.model_dump_json().encode(), status_code=status_code, headers=headers)


def error_response(err: AdeptError, body: ErrorResponse | None = None) -> ModelResponse:
    """``err`` as its status, headers and OpenAI error body (``body``: a subclass with more fields)."""
    return ModelResponse(body or err.to_response(), status_code=err.status, headers=err.headers())
