"""The gateway's view of the other deployments, over Ray Serve handles.

Ray wraps an exception raised in a replica (``RayTaskError`` with ``.cause``); these wrappers
unwrap it so an ``InvalidRequest`` raised by the LLM replica reaches the client as a 400, and
turn "replica gone / overloaded" into ``Unavailable`` (503) rather than a 500.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from adept.errors import AdeptError, Unavailable
from services.llm.protocol import GenerateChunk, GenerateRequest
from services.retrieval.protocol import SearchHit

log = logging.getLogger(__name__)


def as_adept_error(exc: BaseException, what: str) -> AdeptError:
    """The ``AdeptError`` inside ``exc`` (however Ray wrapped it), else a 503 naming ``what``."""
    seen: set[int] = set()
    candidate: BaseException | None = exc
    while candidate is not None and id(candidate) not in seen:
        seen.add(id(candidate))
        if isinstance(candidate, AdeptError) and hasattr(candidate, "message"):
            return candidate
        candidate = getattr(candidate, "cause", None) or candidate.__cause__
    name = type(exc).__name__
    if name in ("BackPressureError", "DeploymentUnavailableError"):
        return Unavailable(f"the {what} is overloaded or starting; retry shortly", code="overloaded")
    log.error("%s call failed: %s: %s", what, name, exc)
    return Unavailable(f"the {what} failed ({name}); retry shortly")


class ServeLLM:
    """``LLMBackend`` over the LLM deployment's handle (multiplexed by adapter id)."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    async def generate(self, model_id: str, request: GenerateRequest) -> AsyncIterator[GenerateChunk]:
        response = self.handle.options(multiplexed_model_id=model_id, stream=True).generate.remote(request)
        done = False
        try:
            async for chunk in response:
                yield chunk
            done = True
        except AdeptError:
            raise
        except Exception as e:
            raise as_adept_error(e, "LLM deployment") from None
        finally:
            if not done:
                response.cancel()  # the client went away: free the replica's batch slot

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
        self, tenant: str, query: str, top_k: int | None = None, filter: dict[str, Any] | None = None
    ) -> list[SearchHit]:
        return await self._call("search", tenant, query, top_k, filter)

    def __getattr__(self, method: str) -> Any:
        # ingest_files, ingest_records, ingest_paths, list_documents, count_documents,
        # delete_document, delete_tenant, embed, limits: same signature as on the replica.
        if method.startswith("_"):
            raise AttributeError(method)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self._call(method, *args, **kwargs)

        return call
