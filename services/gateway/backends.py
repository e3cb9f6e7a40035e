"""The gateway's view of the other deployments, over Ray Serve handles.

Ray wraps an exception raised in a replica (``RayTaskError`` with ``.cause``); these wrappers
unwrap it so an ``InvalidRequest`` raised by the LLM replica reaches the client as a 400, and
map Ray Serve's own failures, by type, to a 503 (or 429) that says what happened.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError
from ray.serve.exceptions import (
    BackPressureError,
    DeploymentUnavailableError,
    ReplicaUnavailableError,
    RequestCancelledError,
)

from adept.errors import AdeptError, RateLimited, Unavailable
from services.llm.protocol import GenerateChunk, GenerateRequest
from services.retrieval.protocol import SearchHit

log = logging.getLogger(__name__)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then what it wraps: a ``RayTaskError``'s ``cause``, else ``__cause__``."""
    seen: set[int] = set()
    candidate: BaseException | None = exc
    while candidate is not None and id(candidate) not in seen:
        seen.add(id(candidate))
        yield candidate
        candidate = candidate.cause if isinstance(candidate, RayTaskError) else candidate.__cause__


def serve_error(exc: BaseException, what: str) -> AdeptError | None:
    """The ``AdeptError`` for one of Ray Serve's failures of a call to ``what``; ``None`` if not one."""
    if isinstance(exc, BackPressureError):
        message = f"the {what} is overloaded (its request queue is full); retry shortly"
        if exc.status_code == 429:
            return RateLimited(message, retry_after=exc.retry_after_s or 1.0, code="overloaded")
        return Unavailable(message, code="overloaded", retry_after=exc.retry_after_s)
    if isinstance(exc, DeploymentUnavailableError):
        return Unavailable(f"the {what} is not running (it failed to deploy); retry later")
    if isinstance(exc, ReplicaUnavailableError | RayActorError):
        return Unavailable(f"a replica of the {what} went away during the call; retry")
    if isinstance(exc, RequestCancelledError):
        return Unavailable(f"the call to the {what} was cancelled; retry", code="cancelled")
    if isinstance(exc, GetTimeoutError):
        return Unavailable(f"the {what} did not answer in time; retry", code="timeout")
    return None


def replica_went_away(exc: BaseException) -> bool:
    """Whether ``exc`` says the replica serving the call stopped or died (not that the request was bad).

    Such a call can be sent again to another replica as long as nothing of its answer was sent yet:
    a replica being scaled down or replaced refuses or drops calls that reach it late, and its
    engine, stopping or failed, refuses with a plain ``Unavailable`` (``Overloaded``, a full
    queue, is backpressure for the client instead).
    """
    return any(
        isinstance(c, ReplicaUnavailableError | RayActorError) or type(c) is Unavailable for c in _chain(exc)
    )


def as_adept_error(exc: BaseException, what: str) -> AdeptError:
    """The ``AdeptError`` inside ``exc`` (however Ray wrapped it), else a 503 naming ``what``."""
    for candidate in _chain(exc):
        if isinstance(candidate, AdeptError) and not isinstance(candidate, RayTaskError):
            return candidate
        mapped = serve_error(candidate, what)
        if mapped is not None:
            return mapped
    log.error("%s call failed", what, exc_info=exc)
    return Unavailable(f"the {what} failed ({type(exc).__name__}); retry shortly")


class ServeLLM:
    """``LLMBackend`` over the LLM deployment's handle (multiplexed by adapter id).

    Args:
        handle: The LLM deployment's ``DeploymentHandle``.
        retries: Times a generation is sent again when its replica went away before the first
            chunk (scale-down, a replaced replica); after the first chunk a failure is final.
        retry_backoff_s: Wait before the first retry, doubled for each further one (Serve needs a
            moment to route around the replica that went away).
    """

    def __init__(self, handle: Any, *, retries: int = 3, retry_backoff_s: float = 0.25) -> None:
        self.handle = handle
        self.retries = retries
        self.retry_backoff_s = retry_backoff_s
        self.retried = 0  # generations sent again after their replica went away (tests, logs)

    async def generate(self, model_id: str, request: GenerateRequest) -> AsyncIterator[GenerateChunk]:
        attempt = 0
        while True:
            response = self.handle.options(multiplexed_model_id=model_id, stream=True).generate.remote(
                request
            )
            started = done = False
            try:
                async for chunk in response:
                    started = True
                    yield chunk
                done = True
                return
            except Exception as e:
                if started or attempt >= self.retries or not replica_went_away(e):
                    if isinstance(e, AdeptError):
                        raise  # the replica's own answer (400, 404, 429, ...), as it raised it
                    raise as_adept_error(e, "LLM deployment") from None
                attempt += 1
                self.retried += 1
                log.info("LLM replica went away before answering (%s); retry %d", type(e).__name__, attempt)
                done = True  # this response is over: nothing to cancel
            finally:
                if not done:
                    response.cancel()  # the client went away: free the replica's batch slot
            await asyncio.sleep(self.retry_backoff_s * 2 ** (attempt - 1))

    async def unload(self, model_id: str, attempts: int = 1) -> int:
        """Ask replicas holding ``model_id`` to drop it; Serve routes each call to a holder first.

        Best effort: a replica missed here keeps an unreachable copy (the gateway no longer
        routes to deleted adapters) until its LRU evicts it.
        """
        unloaded = 0
        for _ in range(max(1, attempts)):
            try:
                hit = await self.handle.options(multiplexed_model_id=model_id).unload.remote(model_id)
            except Exception as e:
                log.warning("unload of %s failed: %s", model_id, as_adept_error(e, "LLM deployment").message)
                break
            if not hit:
                break
            unloaded += 1
        return unloaded

    async def info(self) -> dict[str, Any]:
        try:
            return await self.handle.info.remote()
        except Exception as e:
            raise as_adept_error(e, "LLM deployment") from None


class ServeKnowledgeBase:
    """The ``AsyncKnowledgeBase`` methods over the retrieval deployment's handle (what ``get_kb`` returns)."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return await getattr(self.handle, method).remote(*args, **kwargs)
        except Exception as e:
            raise as_adept_error(e, "retrieval deployment") from None

    async def search(
        self,
        tenant: str,
        query: str,
        top_k: int | None = None,
        filter: dict[str, Any] | None = None,
        highlights: int = 0,
    ) -> list[SearchHit]:
        return await self._call("search", tenant, query, top_k, filter, highlights)

    def __getattr__(self, method: str) -> Any:
        # ingest_files, ingest_records, ingest_paths, list_documents, count_documents,
        # delete_document, delete_tenant, embed, embed_ids, limits: same signature as on the replica.
        if method.startswith("_"):
            raise AttributeError(method)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self._call(method, *args, **kwargs)

        return call
