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
from adept.passages import with_source
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
    ChoiceLogprobs,
    Citation,
    Completion,
    CompletionChoice,
    CompletionChunk,
    CompletionLogprobs,
    CompletionRequest,
    DeltaToolCall,
    ModelCard,
    ModelList,
    SamplingFields,
    TokenLogprob,
    ToolCall,
    TopLogprob,
    Usage,
    new_id,
    now,
    sse_event,
)
from services.gateway.quotas import Quotas
from services.gateway.tool_calls import guided_output, parse_tool_calls, tool_definitions
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

    async def search(
        self, tenant: str, query: str, top_k: int, *, highlights: int = 0
    ) -> list[SearchHit]: ...


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
    default_max_tokens: int | None
    default_top_k: int
    max_top_k: int
    timeout_s: float = 300.0
    max_choices: int = 4


@dataclass
class _Outcome:
    """What one generation produced, filled in while chunks stream through."""

    text: list[str] = field(default_factory=list)
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    passages_used: list[int] | None = None
    first_token_at: float | None = None
    logprobs: list[Any] = field(default_factory=list)


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
    def _max_tokens(self, asked: int | None) -> int | None:
        if asked is None:
            return None  # the replica gives what the context has left (up to its configured cap)
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
        return by_best_sentence(await self.kb.search(tenant.name, query, k, highlights=RAG_HIGHLIGHTS))

    @staticmethod
    def _sampling(req: SamplingFields, max_tokens: int | None) -> dict[str, Any]:
        return {
            "max_tokens": max_tokens,
            "temperature": req.temperature,
            "top_p": req.top_p,
            "seed": req.seed,
            "stop": req.stop_list,
            "presence_penalty": req.presence_penalty,
            "frequency_penalty": req.frequency_penalty,
            "logit_bias": {int(k): v for k, v in req.logit_bias.items()} if req.logit_bias else None,
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
            passage_excerpts=[passage_excerpts(h) for h in hits],
            tenant=tenant.name,  # the replica shares its batch fairly across tenants
            guided=guided_output(req),
            tools=tool_definitions(req),
            tool_choice=req.tool_mode,
            logprobs=(req.top_logprobs or 0) if req.logprobs else None,
            **sampling,
        )
        runs = self._runs(
            req, lambda g: _Run(self, tenant, model, g, hits, started, chat=True, tools=req), greq
        )
        return await _answer(runs, req)

    async def complete(self, tenant: Tenant, req: CompletionRequest) -> Completion | AsyncIterator[bytes]:
        """A text completion (raw prompt, no chat template), or its ``CompletionChunk`` SSE lines."""
        started = self._clock()
        max_tokens = self._max_tokens(req.max_tokens)
        model = await self._resolve(tenant, req.model)
        greq = GenerateRequest(
            prompt=req.prompt,  # type: ignore[arg-type]
            tenant=tenant.name,
            logprobs=req.logprobs,
            **self._sampling(req, max_tokens),
        )
        echo = req.prompt if req.echo else ""
        runs = self._runs(
            req, lambda g: _Run(self, tenant, model, g, [], started, chat=False, echo=echo), greq
        )
        return await _answer(runs, req)

    def _runs(
        self, req: SamplingFields, make: Callable[[GenerateRequest], _Run], greq: GenerateRequest
    ) -> list[_Run]:
        """``n`` generations of ``greq`` (choice ``i`` with seed ``seed + i`` when seeded), one response id."""
        if req.n > self.limits.max_choices:
            raise InvalidRequest(
                f"n is {req.n}, more than this server's limit of {self.limits.max_choices}", param="n"
            )
        runs = []
        for i in range(req.n):
            seed = None if greq.seed is None else (greq.seed + i) % 2**63
            run = make(
                greq if i == 0 else greq.model_copy(update={"seed": seed, "request_id": new_id("req")})
            )
            run.index = i
            if runs:
                run.id, run.created = runs[0].id, runs[0].created
            runs.append(run)
        return runs


async def _answer(runs: list[_Run], req: SamplingFields) -> Any:
    """One response (or stream) for the runs of a request: their choices, indexed, usage summed."""
    if len(runs) == 1:
        return await (runs[0].stream(req.include_usage) if req.stream else runs[0].complete())
    if req.stream:
        streams = []
        try:
            for run in runs:
                streams.append(
                    await run.stream(False)
                )  # each fetches its first chunk: errors before any byte
        except BaseException:
            for stream in streams:
                await stream.aclose()
            raise
        return _merged(runs, streams, req.include_usage)
    answers = await asyncio.gather(*(run.complete() for run in runs))
    first = answers[0]
    choices = [c.model_copy(update={"index": i}) for i, a in enumerate(answers) for c in a.choices]
    return first.model_copy(update={"choices": choices, "usage": _total_usage(runs)})


def _total_usage(runs: list[_Run]) -> Usage:
    return Usage.of(runs[0].out.prompt_tokens, sum(r.out.completion_tokens for r in runs))


async def _merged(
    runs: list[_Run], streams: list[AsyncIterator[bytes]], include_usage: bool
) -> AsyncIterator[bytes]:
    """The choices' events interleaved as they come; one usage event and one ``[DONE]`` at the end."""
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def pump(stream: AsyncIterator[bytes]) -> None:
        try:
            async for event in stream:
                if event != SSE_DONE:
                    await queue.put(event)
        finally:
            await queue.put(None)

    tasks = [asyncio.create_task(pump(s)) for s in streams]
    try:
        done = 0
        while done < len(tasks):
            event = await queue.get()
            if event is None:
                done += 1
                continue
            yield event
        if include_usage:
            yield runs[0]._usage_event(_total_usage(runs))
        yield SSE_DONE
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def choice_logprobs(entries: list[Any]) -> ChoiceLogprobs:
    """The replica's ``TokenLogprob``s as OpenAI's ``choices[].logprobs`` (with each token's UTF-8 bytes)."""

    def one(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

    return ChoiceLogprobs(
        content=[
            TokenLogprob(
                **one(e.token, e.logprob), top_logprobs=[TopLogprob(**one(t.token, t.logprob)) for t in e.top]
            )
            for e in entries
        ]
    )


def completion_logprobs(entries: list[Any], offset: int) -> CompletionLogprobs:
    """The replica's ``TokenLogprob``s in the legacy completions shape; the first token starts at ``offset``.

    Each position's ``top_logprobs`` holds the ``logprobs`` most likely tokens and the sampled one.

    Offsets add up the tokens' texts, as vLLM's do: the same as positions in ``text`` wherever each
    token decodes to whole characters.
    """
    out = CompletionLogprobs()
    for e in entries:
        out.tokens.append(e.token)
        out.token_logprobs.append(e.logprob)
        top: dict[str, float] = {}
        for t in e.top:
            top.setdefault(t.token, t.logprob)  # two ids may read alike: the likelier one stays
        top.setdefault(e.token, e.logprob)  # OpenAI (and vLLM): the sampled token too, so up to logprobs + 1
        out.top_logprobs.append(top)
        out.text_offset.append(offset)
        offset += len(e.token)
    return out


RAG_DEFAULT_TEMPERATURE = 0.0


# Sentences ranked per retrieved passage (``SearchHit.highlights``): the excerpts a small model is shown
# (``llm.rag_passage_sentences``) and the quote of a citation.
RAG_HIGHLIGHTS = 3


def by_best_sentence(hits: list[SearchHit]) -> list[SearchHit]:
    """``hits`` ordered by their best sentence's score for the question (ties, and hits without
    highlights, keep the retrieval order): the passage holding the sentence that answers comes first,
    which is the one a small model is shown (``llm.rag_max_passages: auto``). Chunk similarity ranks
    the section on the topic; the sentence score ranks the statement — on the demo's tune questions
    the answer was in the first passage's best sentence for 0.95 of them ordered this way, 0.85 in
    retrieval order (with ``highlights.LEXICAL_WEIGHT`` 1.0)."""
    if any(not h.highlights for h in hits):
        return hits
    return sorted(hits, key=lambda h: -h.highlights[0].score)  # stable: ties keep the retrieval order


def passage_text(hit: SearchHit, text: str | None = None) -> str:
    """The passage (or ``text``, an excerpt of it) as the model reads it: the text, then the title of its
    document as its source.

    Text first: a small model copies the start of a passage, and a title there got copied instead
    of the answer (measured on the demo's tune questions with the bundled model: answer-contained
    0.10 with the title first, 0.20 with it last). The title stays, for the document's name and code.
    """
    body = hit.text if text is None else text
    if not hit.title or hit.text.startswith(hit.title):
        return body
    return with_source(body, hit.title)


def passage_excerpts(hit: SearchHit) -> list[str]:
    """The passage shown as its best 1, 2, ... highlighted sentences, each excerpt in document order."""
    out = []
    for n in range(1, len(hit.highlights) + 1):
        chosen = sorted(hit.highlights[:n], key=lambda h: h.start)
        out.append(passage_text(hit, " ".join(h.text for h in chosen)))
    return out


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
            quote=hits[i].highlights[0].text if hits[i].highlights else None,
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
        tools: ChatCompletionRequest | None = None,
        echo: str = "",
    ) -> None:
        self.svc, self.tenant, self.model, self.greq, self.hits = svc, tenant, model, greq, hits
        self.echo = echo  # completions with ``echo``: the prompt, put before the generated text
        self._offset = len(echo)  # where the next streamed token starts in the choice's text
        # A request whose answer may be tool calls: its text is parsed at the end, not streamed as content.
        self.tools = tools if tools is not None and tools.tool_mode != "none" else None
        self.started, self.chat = started, chat
        self.id = new_id("chatcmpl" if chat else "cmpl")
        self.index = 0  # the choice this run answers (``n`` > 1)
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
        if chunk.logprobs:
            self.out.logprobs.extend(chunk.logprobs)
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
            content, calls = self._answer(text)
            choice = ChatCompletionChoice(
                message=AssistantMessage(content=content, tool_calls=calls),
                logprobs=choice_logprobs(self.out.logprobs) if self.greq.logprobs is not None else None,
                finish_reason=self.out.finish_reason,
            )
            return ChatCompletion(**head, choices=[choice], citations=self.citations)
        logprobs = None
        if self.greq.logprobs is not None:
            logprobs = completion_logprobs(self.out.logprobs, len(self.echo))
        choice = CompletionChoice(
            text=self.echo + text, logprobs=logprobs, finish_reason=self.out.finish_reason
        )
        return Completion(**head, choices=[choice])

    def _answer(self, text: str) -> tuple[str | None, list[ToolCall] | None]:
        """The content and tool calls of the whole text; a turn of tool calls finishes with ``tool_calls``."""
        if self.tools is None:
            return text, None
        content, calls = parse_tool_calls(self.tools, text)
        if calls and self.out.finish_reason == "stop":
            self.out.finish_reason = "tool_calls"
        return content, calls

    # -- streaming -------------------------------------------------------------------------------
    def _event(
        self,
        text: str | None,
        finish_reason: str | None = None,
        *,
        role: bool = False,
        citations: list[Citation] | None = None,
        logprobs: list[Any] | None = None,
    ) -> bytes:
        """A content event: ``text`` (or the role, or the finish reason) as a chunk of this run."""
        head = {"id": self.id, "created": self.created, "model": self.model.name}
        if self.chat:
            delta = ChoiceDelta(role="assistant" if role else None, content=text)
            choice = ChatCompletionChunkChoice(
                index=self.index,
                delta=delta,
                finish_reason=finish_reason,
                logprobs=choice_logprobs(logprobs) if logprobs else None,
            )
            return sse_event(ChatCompletionChunk(**head, choices=[choice], citations=citations))
        legacy = None
        if logprobs:
            legacy = completion_logprobs(logprobs, self._offset)
            self._offset += sum(len(e.token) for e in logprobs)
        choice = CompletionChoice(
            index=self.index, text=text or "", logprobs=legacy, finish_reason=finish_reason
        )
        return sse_event(CompletionChunk(**head, choices=[choice]))

    def _tool_event(self) -> bytes:
        """A possibly-tool-call answer goes out whole once generated: its calls, or its text."""
        content, calls = self._answer("".join(self.out.text))
        head = {"id": self.id, "created": self.created, "model": self.model.name}
        deltas = (
            None if not calls else [DeltaToolCall(index=i, **c.model_dump()) for i, c in enumerate(calls)]
        )
        delta = ChoiceDelta(content=content, tool_calls=deltas)
        choice = ChatCompletionChunkChoice(index=self.index, delta=delta)
        return sse_event(ChatCompletionChunk(**head, choices=[choice]))

    def _usage_event(self, usage: Usage | None = None) -> bytes:
        head = {
            "id": self.id,
            "created": self.created,
            "model": self.model.name,
            "usage": usage or self.usage,
        }
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
                elif self.echo:
                    yield self._event(self.echo)
                chunk = first
                while chunk is not None:
                    text = self._take(chunk)
                    if (text or chunk.logprobs) and self.tools is None:
                        yield self._event(text, logprobs=chunk.logprobs)
                    chunk = await self._next()
                if self.tools is not None:
                    yield self._tool_event()
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
