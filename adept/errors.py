"""One small error hierarchy for the whole platform.

Each error knows its HTTP status, its OpenAI error ``type``/``code`` and its CLI exit code,
so the gateway, the CLI and the operator all report the same failure the same way.
"""

from __future__ import annotations

from typing import Any


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

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI wire shape: ``{"error": {"message", "type", "code", "param"}}``."""
        return {"error": {"message": self.message, "type": self.type, "code": self.code, "param": self.param}}

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

    def __init__(self, message: str, errors: list[str] | None = None) -> None:
        self.errors = errors or []
        full = message if not self.errors else message + "\n" + "\n".join(f"  - {e}" for e in self.errors)
        super().__init__(full)


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


class StorageError(AdeptError):
    """The data dir / object store refused a write (disk full, read-only). Nothing was changed."""

    status, type, code, exit_code = 507, "server_error", "storage_error", 8


class Overloaded(Unavailable):
    """The service is at capacity (a full queue, out of device memory); retry after ``retry_after`` seconds."""

    code = "overloaded"

    def __init__(self, message: str, *, retry_after: float = 1.0, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = max(1, int(retry_after + 0.999))

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}
