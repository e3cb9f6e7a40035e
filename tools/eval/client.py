"""A small client for the tenant-facing HTTP API, exactly as a tenant application calls it.

Uses ``/v1/models`` (the base model and the tenant's adapters), ``/v1/kb/documents`` (is the
knowledge base empty?), ``/v1/kb/search`` (retrieval hit@k) and ``/v1/chat/completions`` with
Adept's ``rag`` extension (answers with ``citations``). HTTP failures become Adept errors with
the server's own message, so the CLI prints one clear line.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from adept.admin_client import PlatformHTTP
from adept.errors import AdeptError, Unavailable, error_from_http

MAX_RATE_LIMIT_RETRIES = 5


@dataclass
class ChatAnswer:
    """One chat completion as the eval sees it."""

    text: str
    latency_s: float
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    cited_documents: list[str] = field(default_factory=list)
    cited_chunks: list[str] = field(default_factory=list)


class PlatformClient(PlatformHTTP):
    """Synchronous client for one tenant (its API key) on one Adept gateway."""

    def __init__(self, url: str, api_key: str, *, timeout_s: float = 300.0) -> None:
        super().__init__(url, api_key, timeout_s=timeout_s)

    # -- endpoints ---------------------------------------------------------------------------------
    def list_models(self) -> list[dict[str, Any]]:
        """``GET /v1/models`` → the model cards (base model and this tenant's adapters)."""
        return list(self._request("GET", "/v1/models").get("data", []))

    def list_documents(self) -> list[dict[str, Any]]:
        """``GET /v1/kb/documents`` → the tenant's documents."""
        return list(self._request("GET", "/v1/kb/documents").get("documents", []))

    def ingest(self, files: list[tuple[str, bytes]]) -> dict[str, Any]:
        """``POST /v1/kb/documents`` (multipart): ``(name, content)`` files → ``{"documents", "errors"}``."""
        parts = [("files", (name, data, "application/octet-stream")) for name, data in files]
        return self._request("POST", "/v1/kb/documents", files=parts)

    def search(self, query: str, top_k: int, highlights: int = 0) -> list[dict[str, Any]]:
        """``POST /v1/kb/search`` → ranked hits (``document_id``, ``chunk_id``, ``text``, ``score``, and
        ``highlights``: each hit's best ``highlights`` sentences for the query)."""
        body = {"query": query, "top_k": top_k, "highlights": highlights}
        return list(self._request("POST", "/v1/kb/search", json=body).get("results", []))

    def chat(
        self,
        *,
        model: str,
        messages: list[dict[str, str]],
        max_tokens: int,
        temperature: float,
        seed: int,
        rag_top_k: int | None = None,
    ) -> ChatAnswer:
        """``POST /v1/chat/completions``; ``rag_top_k`` turns on the ``rag`` extension."""
        body: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "seed": seed,
        }
        if rag_top_k is not None:
            body["rag"] = {"top_k": rag_top_k}
        start = time.perf_counter()
        data = self._request("POST", "/v1/chat/completions", json=body)
        latency = time.perf_counter() - start
        choice = (data.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        usage = data.get("usage") or {}
        # The gateway returns citations at the top level; accept them on the message too.
        citations = data.get("citations") or message.get("citations") or []
        return ChatAnswer(
            text=message.get("content") or "",
            latency_s=latency,
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            finish_reason=choice.get("finish_reason"),
            cited_documents=[str(c.get("document_id")) for c in citations if c.get("document_id")],
            cited_chunks=[str(c.get("chunk_id")) for c in citations if c.get("chunk_id")],
        )

    # -- plumbing ----------------------------------------------------------------------------------
    def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        import httpx

        for attempt in range(MAX_RATE_LIMIT_RETRIES + 1):
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TimeoutException:
                raise Unavailable(f"{method} {self.url}{path} timed out") from None
            except httpx.HTTPError as e:
                raise Unavailable(f"cannot reach {self.url}: {e}") from None
            if response.status_code == 429 and attempt < MAX_RATE_LIMIT_RETRIES:
                # Quotas are per minute: waiting as told keeps the run going instead of failing it.
                time.sleep(min(60.0, float(response.headers.get("Retry-After", "1") or 1)))
                continue
            break
        if response.status_code >= 400:
            raise _error_from(response, f"{method} {path}")
        try:
            data = response.json()
        except ValueError:
            raise Unavailable(f"{method} {path}: the server did not answer with JSON") from None
        return data if isinstance(data, dict) else {"data": data}


def _error_from(response: Any, what: str) -> AdeptError:
    """The server's OpenAI-style error message, in the matching Adept error class."""
    err = error_from_http(
        response.status_code, response.content, retry_after=response.headers.get("retry-after")
    )
    err.message = f"{what}: HTTP {response.status_code}: {err.message}"
    return err
