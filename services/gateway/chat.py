"""Chat and text completions: the logic between an OpenAI request and the LLM deployment.

No FastAPI here. A request is validated, its ``model`` resolved to the base model or one of
the caller's adapters, optionally answered from the caller's knowledge base (RAG), and the
LLM's chunks are assembled into an OpenAI response or Server-Sent-Event stream. Everything
that can fail with a 4xx fails *before* the first byte is streamed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from adept.config.adapter import ADAPTER_NAME_RE, VERSION_RE
from adept.errors import AdeptError, InvalidRequest, NotFound, Unavailable
from adept.finetuning.jobs import adapter_of_fine_tuned_model
from adept.tenancy import Tenant
from services.gateway.metrics import GatewayMetrics
from services.gateway.protocol import (
    SSE_DONE,
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionChunkChoice,
    ChatCompletionRequest,
    ChoiceDelta,
    Citation,
    Completion,
    CompletionChoice,
    CompletionChunk,
    CompletionRequest,
    ModelCard,
    ModelList,
    SamplingFields,
    Usage,
    new_id,
    now,
    sse_event,
)
from services.gateway.quotas import Quotas
from services.llm.prompting import cited_numbers
from services.llm.protocol import GenerateChunk, GenerateRequest
from services.retrieval.protocol import SearchHit

BASE_LABEL = "base"
log = logging.getLogger(__name__)


class LLMBackend(Protocol):
    """What the gateway needs from the LLM deployment (a Serve handle in production)."""

    def generate(self, model_id: str, request: GenerateRequest) -> AsyncIterator[GenerateChunk]: ...


class KnowledgeBase(Protocol):
    """What RAG needs from the retrieval deployment: the caller's passages for a query."""

    async def search(self, tenant: str, query: str, top_k: int) -> list[SearchHit]: ...


class AdapterSource(Protocol):
    """The part of ``adept.adapters.AdapterRegistry`` the gateway reads (names and manifests, never weights)."""

    def resolve(self, tenant: str, name: str, version: str | None = None, *, fetch: bool = True) -> Any: ...
    def list(self, tenant: str) -> list[Any]: ...


@dataclass(frozen=True)
class ResolvedModel:
    """A request's ``model``: what responses report, the LLM's multiplexed id, the metrics label."""

    name: str
    model_id: str
    label: str


def model_not_found(model: str) -> NotFound:
    # Identical for "absent" and "another tenant's": the answer must not reveal who owns what.
    return NotFound(
        f"The model '{model}' does not exist or you do not have access to it.",
        code="model_not_found",
        param="model",
    )


class ModelCatalog:
    """Resolves ``model`` for one tenant: the base model, or the tenant's own adapters only."""

    def __init__(self, registry: AdapterSource, base_model_id: str, aliases: tuple[str, ...] = ()) -> None:
        self.registry = registry
        self.base_model_id = base_model_id
        self._base_names = {base_model_id, *aliases}

    def resolve(self, tenant: str, model: str) -> ResolvedModel:
        """``model`` is the base id, ``name``, ``name@vN``, ``<tenant>/name[@vN]`` or a fine-tuning job's
        ``ft:<base>:<tenant>:<suffix>:<id>`` (own tenant only)."""
        if model in self._base_names:
            return ResolvedModel(self.base_model_id, "", BASE_LABEL)
        if model.startswith("ft:"):  # a job's fine_tuned_model, OpenAI's shape: the adapter it names
            ref = adapter_of_fine_tuned_model(tenant, model)
            if ref is None:
                raise model_not_found(model)
            model = ref
        ref = model
        if "/" in ref:
            owner, _, ref = ref.partition("/")
            if owner != tenant:
                raise model_not_found(model)
        name, at, version = ref.partition("@")
        if not ADAPTER_NAME_RE.fullmatch(name) or (at and not VERSION_RE.fullmatch(version)):
            raise model_not_found(model)
        try:
            # The registry caches resolutions; the weights are fetched by the LLM replica that loads them.
            found = self.registry.resolve(tenant, name, version or None, fetch=False)
        except NotFound:
            raise model_not_found(model) from None
        except InvalidRequest:
            raise model_not_found(model) from None
        return ResolvedModel(f"{name}@{found.version}", found.id, f"{name}@{found.version}")

    def list(self, tenant: str) -> ModelList:
        """The base model and the latest (or pinned) version of each of the caller's adapters."""
        cards = [ModelCard(id=self.base_model_id, created=0, owned_by="adept")]
        latest: dict[str, Any] = {}
        for v in self.registry.list(tenant):
            latest[v.name] = v  # list() is ordered by name then version: the last one wins
        for name, v in sorted(latest.items()):
            try:
                v = self.registry.resolve(tenant, name, fetch=False)  # honours a pinned active version
            except NotFound:
                continue  # deleted meanwhile
            cards.append(
                ModelCard(
                    id=name,
                    created=_epoch(v.manifest.created_at),
                    owned_by=tenant,
                    root=self.base_model_id,
                    version=v.version,
                )
            )
        return ModelList(data=cards)


def _epoch(iso: str) -> int:
    from datetime import datetime

    try:
        return int(datetime.fromisoformat(iso).timestamp())
    except (TypeError, ValueError):
        return 0


@dataclass(frozen=True)
class Limits:
    """Request limits the logic layer enforces (from ``LLMConfig`` / ``RetrievalConfig``)."""

    max_tokens_limit: int
    default_max_tokens: int
    default_top_k: int
    max_top_k: int
    timeout_s: float = 300.0


@dataclass
class _Outcome:
    """What one generation produced, filled in while chunks stream through."""

    text: list[str] = field(default_factory=list)
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    passages_used: list[int] | None = None
    first_token_at: float | None = None


class CompletionService:
    """``/v1/chat/completions`` and ``/v1/completions`` for an authenticated tenant."""

    def __init__(
        self,
        *,
        llm: LLMBackend,
        catalog: ModelCatalog,
        kb: KnowledgeBase | None,
        limits: Limits,
        metrics: GatewayMetrics | None = None,
        quotas: Quotas | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.llm = llm
        self.catalog = catalog
        self.kb = kb
        self.limits = limits
        self.metrics = metrics
        self.quotas = quotas
        self._clock = clock

    # -- request checks --------------------------------------------------------------------------
    def _max_tokens(self, asked: int | None) -> int:
        if asked is None:
            return self.limits.default_max_tokens
        if asked > self.limits.max_tokens_limit:
            raise InvalidRequest(
                f"max_tokens is {asked}, more than this server's limit of {self.limits.max_tokens_limit}",
                param="max_tokens",
            )
        return asked

    async def _resolve(self, tenant: Tenant, model: str) -> ResolvedModel:
        # The registry may sit on a network file system or an object store: keep the event loop free.
        return await asyncio.to_thread(self.catalog.resolve, tenant.name, model)

    async def _retrieve(self, tenant: Tenant, req: ChatCompletionRequest) -> list[SearchHit]:
        top_k = req.rag_top_k
        if top_k is False:
            return []
        if self.kb is None:
            raise Unavailable("retrieval is not configured on this server")
        k = top_k or self.limits.default_top_k
        if k > self.limits.max_top_k:
            raise InvalidRequest(
                f"rag.top_k is {k}, more than the limit of {self.limits.max_top_k}", param="rag"
            )
        query = next((m.as_llm_message()["content"] for m in reversed(req.messages) if m.role == "user"), "")
        if not query.strip():
            raise InvalidRequest("rag needs a non-empty user message to search with", param="messages")
        return await self.kb.search(tenant.name, query, k)

    @staticmethod
    def _sampling(req: SamplingFields, max_tokens: int) -> dict[str, Any]:
        return {
            "max_tokens": max_tokens,
            "temperature": req.temperature,
            "top_p": req.top_p,
            "seed": req.seed,
            "stop": req.stop_list,
        }

    # -- entry points ----------------------------------------------------------------------------
    async def chat(self, tenant: Tenant, req: ChatCompletionRequest) -> ChatCompletion | AsyncIterator[bytes]:
        """A chat completion, or (``stream``) an iterator of SSE ``data:`` lines of ``ChatCompletionChunk``s."""
        started = self._clock()
        max_tokens = self._max_tokens(req.requested_max_tokens)
        model = await self._resolve(tenant, req.model)
        hits = await self._retrieve(tenant, req)
        sampling = self._sampling(req, max_tokens)
        if req.rag_top_k is not False and "temperature" not in req.model_fields_set:
            # RAG answers extract from the passages: a small model sampling at 1.0 drifts away from
            # them (fluent nonsense beside correct citations), so RAG decodes greedily unless asked not to.
            sampling["temperature"] = RAG_DEFAULT_TEMPERATURE
        greq = GenerateRequest(
            messages=[m.as_llm_message() for m in req.messages],
            passages=[passage_text(h) for h in hits],
            tenant=tenant.name,  # the replica shares its batch fairly across tenants
            **sampling,
        )
        run = _Run(self, tenant, model, greq, hits, started, chat=True)
        if req.stream:
            return await run.stream(req.include_usage)
        return await run.complete()

    async def complete(self, tenant: Tenant, req: CompletionRequest) -> Completion | AsyncIterator[bytes]:
        """A text completion (raw prompt, no chat template), or its ``CompletionChunk`` SSE lines."""
        started = self._clock()
        max_tokens = self._max_tokens(req.max_tokens)
        model = await self._resolve(tenant, req.model)
        greq = GenerateRequest(prompt=req.prompt, tenant=tenant.name, **self._sampling(req, max_tokens))  # type: ignore[arg-type]
        run = _Run(self, tenant, model, greq, [], started, chat=False)
        if req.stream:
            return await run.stream(req.include_usage)
        return await run.complete()


RAG_DEFAULT_TEMPERATURE = 0.0


def passage_text(hit: SearchHit) -> str:
    """The passage as the model reads it: the text, then the title of its document as its source.

    Text first: a small model copies the start of a passage, and a title there got copied instead
    of the answer (measured on the demo's tune questions with the bundled model: answer-contained
    0.10 with the title first, 0.20 with it last). The title stays, for the document's name and code.
    """
    if not hit.title or hit.text.startswith(hit.title):
        return hit.text
    return f"{hit.text}\n(Source: {hit.title})"


def build_citations(
    hits: list[SearchHit], passages_used: list[int] | None, answer: str | None = None
) -> list[Citation]:
    """Citations for the passages that went into the prompt (all retrieved ones if the LLM did not say).

    When the answer cites passages by number (``[2]``, as the RAG instruction asks), only those are
    returned, in the order cited: the sources are what the answer used, not all it was shown.
    """
    indices = list(range(len(hits)) if passages_used is None else passages_used)
    cited = cited_numbers(answer or "", len(indices))
    if cited:
        indices = [indices[n - 1] for n in cited]
    return [
        Citation(
            document_id=hits[i].document_id,
            chunk_id=hits[i].chunk_id,
            title=hits[i].title,
            score=hits[i].score,
        )
        for i in indices
        if 0 <= i < len(hits)
    ]


class _Run:
    """One generation: pulls chunks from the LLM, records usage and metrics, shapes the response."""

    def __init__(
        self,
        svc: CompletionService,
        tenant: Tenant,
        model: ResolvedModel,
        greq: GenerateRequest,
        hits: list[SearchHit],
        started: float,
        *,
        chat: bool,
    ) -> None:
        self.svc, self.tenant, self.model, self.greq, self.hits = svc, tenant, model, greq, hits
        self.started, self.chat = started, chat
        self.id = new_id("chatcmpl" if chat else "cmpl")
        self.created = now()
        self.out = _Outcome()
        self._stream = svc.llm.generate(model.model_id, greq)
        self._finished = False

    # -- chunk intake ----------------------------------------------------------------------------
    def _take(self, chunk: GenerateChunk) -> str:
        if chunk.text and self.out.first_token_at is None:
            self.out.first_token_at = self.svc._clock()
        if chunk.text:
            self.out.text.append(chunk.text)
        if chunk.finish_reason:
            self.out.finish_reason = chunk.finish_reason
        if chunk.usage is not None:
            self.out.prompt_tokens = chunk.usage.prompt_tokens
            self.out.completion_tokens = chunk.usage.completion_tokens
        if chunk.passages_used is not None:
            self.out.passages_used = list(chunk.passages_used)
        return chunk.text

    async def _next(self) -> GenerateChunk | None:
        remaining = self.started + self.svc.limits.timeout_s - self.svc._clock()
        try:
            async with asyncio.timeout(max(0.0, remaining)):
                return await anext(self._stream)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            raise Unavailable(f"generation did not finish within {self.svc.limits.timeout_s:g} s") from None

    def _finish(self) -> None:
        """Charge tokens and record metrics once, however the run ends (done, error, disconnect)."""
        if self._finished:
            return
        self._finished = True
        out = self.out
        if out.completion_tokens == 0 and out.text:
            out.completion_tokens = len(out.text)  # no usage chunk (cut short): one chunk ~ one token
        total = out.prompt_tokens + out.completion_tokens
        if self.svc.quotas is not None:
            self.svc.quotas.charge_tokens(self.tenant.name, total)
        if self.svc.metrics is not None:
            end = self.svc._clock()
            first = out.first_token_at
            self.svc.metrics.observe_generation(
                tenant=self.tenant.name,
                adapter=self.model.label,
                ttft_s=None if first is None else first - self.started,
                decode_s=0.0 if first is None else end - first,
                prompt_tokens=out.prompt_tokens,
                completion_tokens=out.completion_tokens,
            )

    @property
    def usage(self) -> Usage:
        return Usage.of(self.out.prompt_tokens, self.out.completion_tokens)

    def _in_flight(self) -> Any:
        if self.svc.metrics is None:
            from contextlib import nullcontext

            return nullcontext()
        return self.svc.metrics.in_flight(self.tenant.name, self.model.label)

    @property
    def citations(self) -> list[Citation] | None:
        return (
            build_citations(self.hits, self.out.passages_used, "".join(self.out.text)) if self.hits else None
        )

    # -- non-streaming ---------------------------------------------------------------------------
    async def complete(self) -> ChatCompletion | Completion:
        try:
            with self._in_flight():
                while (chunk := await self._next()) is not None:
                    self._take(chunk)
        finally:
            self._finish()  # accounting first: a failing cleanup must not skip it
            await self._close()
        text = "".join(self.out.text)
        head = {"id": self.id, "created": self.created, "model": self.model.name, "usage": self.usage}
        if self.chat:
            choice = ChatCompletionChoice(
                message=AssistantMessage(content=text), finish_reason=self.out.finish_reason
            )
            return ChatCompletion(**head, choices=[choice], citations=self.citations)
        return Completion(**head, choices=[CompletionChoice(text=text, finish_reason=self.out.finish_reason)])

    # -- streaming -------------------------------------------------------------------------------
    def _event(
        self,
        text: str | None,
        finish_reason: str | None = None,
        *,
        role: bool = False,
        citations: list[Citation] | None = None,
    ) -> bytes:
        """A content event: ``text`` (or the role, or the finish reason) as a chunk of this run."""
        head = {"id": self.id, "created": self.created, "model": self.model.name}
        if self.chat:
            delta = ChoiceDelta(role="assistant" if role else None, content=text)
            choice = ChatCompletionChunkChoice(delta=delta, finish_reason=finish_reason)
            return sse_event(ChatCompletionChunk(**head, choices=[choice], citations=citations))
        return sse_event(
            CompletionChunk(**head, choices=[CompletionChoice(text=text or "", finish_reason=finish_reason)])
        )

    def _usage_event(self) -> bytes:
        head = {"id": self.id, "created": self.created, "model": self.model.name, "usage": self.usage}
        chunk = ChatCompletionChunk if self.chat else CompletionChunk
        return sse_event(chunk(**head, choices=[]))

    async def stream(self, include_usage: bool) -> AsyncIterator[bytes]:
        """Fetch the first chunk now (so errors become 4xx responses), then stream the rest."""
        try:
            first = await self._next()
        except BaseException:
            self._finish()
            await self._close()
            raise
        return self._events(first, include_usage)

    async def _events(self, first: GenerateChunk | None, include_usage: bool) -> AsyncIterator[bytes]:
        try:
            with self._in_flight():
                if self.chat:
                    yield self._event("", role=True)
                chunk = first
                while chunk is not None:
                    text = self._take(chunk)
                    if text:
                        yield self._event(text)
                    chunk = await self._next()
            yield self._event(None, self.out.finish_reason, citations=self.citations)
            if include_usage:
                yield self._usage_event()
        except AdeptError as e:
            # Headers are gone: the error travels in the stream, as OpenAI does.
            yield sse_event(e.to_response())
        finally:
            self._finish()
            await self._close()
        yield SSE_DONE

    async def _close(self) -> None:
        """Close the LLM stream: runs the backend's cleanup (``ServeLLM`` cancels the Serve call).

        Every path reaches here with the stream finished or paused at a ``yield``, so ``aclose``
        cannot meet a running generator. A typed error from the backend's cleanup comes after the
        run's outcome is decided (answered, failed or abandoned): it is logged, not raised over it.
        """
        aclose: Callable[[], Awaitable[None]] | None = getattr(self._stream, "aclose", None)
        if aclose is None:
            return
        try:
            await aclose()
        except AdeptError as e:
            log.warning("closing the LLM stream of %s failed: %s (%s)", self.id, e.message, e.code)
