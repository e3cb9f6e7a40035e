"""One small error hierarchy for the whole platform.

Each error knows its HTTP status, its OpenAI error ``type``/``code`` and its CLI exit code,
so the gateway, the CLI and the operator all report the same failure the same way.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorInfo(BaseModel):
    """The ``error`` object of an OpenAI-style error body."""

    message: str = Field(description="What went wrong, in words a user can act on.")
    type: str = Field(description="OpenAI error type: `invalid_request_error`, `server_error`, ...")
    code: str = Field(description="Machine-readable reason: `model_not_found`, `rate_limit_exceeded`, ...")
    param: str | None = Field(None, description="The request field at fault, when there is one.")


class ErrorResponse(BaseModel):
    """Every HTTP error body: ``{"error": {"message", "type", "code", "param"}}``."""

    error: ErrorInfo


class AdeptError(Exception):
    """Base class. ``message`` is shown to users; never put secrets or prompt text in it."""

    status: int = 500
    type: str = "server_error"
    code: str = "internal_error"
    exit_code: int = 1

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param
        self.details: list[Any] = []  # structured extras from a remote error (per-file reasons)

    def to_response(self) -> ErrorResponse:
        """The OpenAI wire model: ``{"error": {"message", "type", "code", "param"}}``."""
        return ErrorResponse(
            error=ErrorInfo(message=self.message, type=self.type, code=self.code, param=self.param)
        )

    def to_openai(self) -> dict[str, Any]:
        """``to_response()`` as a JSON-ready dict."""
        return self.to_response().model_dump(mode="json")

    def headers(self) -> dict[str, str]:
        """Extra HTTP headers this error implies (e.g. ``Retry-After``)."""
        return {}


class InvalidRequest(AdeptError):
    status, type, code, exit_code = 400, "invalid_request_error", "invalid_request", 2


class ConfigError(InvalidRequest):
    """A configuration (file, CLI overrides, environment) failed validation.

    ``errors`` lists every problem found, so users fix them all in one go.
    """

    code = "invalid_config"

    def __init__(
        self,
        message: str,
        errors: list[str] | None = None,
        *,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        self.errors = errors or []
        full = message if not self.errors else message + "\n" + "\n".join(f"  - {e}" for e in self.errors)
        super().__init__(full, code=code, param=param)


class AuthenticationError(AdeptError):
    status, type, code, exit_code = 401, "authentication_error", "invalid_api_key", 3


class PermissionDenied(AdeptError):
    status, type, code, exit_code = 403, "permission_error", "permission_denied", 3


class NotFound(AdeptError):
    status, type, code, exit_code = 404, "invalid_request_error", "not_found", 4


class Conflict(AdeptError):
    status, type, code, exit_code = 409, "invalid_request_error", "conflict", 5


class PayloadTooLarge(AdeptError):
    status, type, code, exit_code = 413, "invalid_request_error", "payload_too_large", 2


class UnsupportedMedia(AdeptError):
    status, type, code, exit_code = 415, "invalid_request_error", "unsupported_media_type", 2


class RateLimited(AdeptError):
    status, type, code, exit_code = 429, "rate_limit_error", "rate_limit_exceeded", 6

    def __init__(self, message: str, *, retry_after: float = 1.0, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = max(1, int(retry_after + 0.999))

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class Unavailable(AdeptError):
    """A dependency (Ray, Milvus, a replica) is not reachable or not ready; retrying may help."""

    status, type, code, exit_code = 503, "server_error", "unavailable", 7

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, code=code, param=param)
        self.retry_after = None if retry_after is None else max(1, int(retry_after + 0.999))

    def headers(self) -> dict[str, str]:
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}


class Overloaded(Unavailable):
    """The service is at capacity (a full queue, out of device memory); retry after ``retry_after`` seconds."""

    code = "overloaded"

    def __init__(self, message: str, *, retry_after: float = 1.0, code: str | None = None) -> None:
        super().__init__(message, code=code, retry_after=retry_after)


class StorageError(AdeptError):
    """The data dir / object store refused a write (disk full, read-only). Nothing was changed."""

    status, type, code, exit_code = 507, "server_error", "storage_error", 8


_BY_STATUS: dict[int, type[AdeptError]] = {
    400: InvalidRequest,
    401: AuthenticationError,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMedia,
    422: InvalidRequest,
    429: RateLimited,
    503: Unavailable,
    507: StorageError,
}


def error_from_http(status: int, body: bytes | str, *, retry_after: str | None = None) -> AdeptError:
    """The ``AdeptError`` an Adept (OpenAI-style) error response stands for, with the server's message and code.

    The class follows the status; other 4xx are ``InvalidRequest`` and other 5xx ``Unavailable``.
    ``details`` carries the body's ``errors`` list when there is one (per-file ingest reasons).
    """
    import json

    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        data = json.loads(text)
        err = data["error"]
        message, code, param = str(err["message"]), err.get("code"), err.get("param")
        details = data.get("errors") or []
    except (ValueError, KeyError, TypeError):
        message, code, param, details = (text.strip()[:300] or f"HTTP {status}"), None, None, []
    cls = _BY_STATUS.get(status) or (InvalidRequest if 400 <= status < 500 else Unavailable)
    if cls is RateLimited:
        try:
            wait = float(retry_after or 1)
        except ValueError:
            wait = 1.0
        out: AdeptError = RateLimited(message, retry_after=wait, code=code)
    else:
        out = cls(message, code=code, param=param if isinstance(param, str) else None)
    out.details = details if isinstance(details, list) else []
    return out
