"""The vLLM engine for GPUs, behind the same contract as the HF engine (``engine.py``).

vLLM (0.29.0, the version ``ray[llm]==2.60.0`` pins) brings paged attention, continuous batching
and multi-LoRA kernels. This class keeps the replica's contract: the same ``GenerateRequest`` /
``GenerateChunk`` stream, prompts rendered by the same ``PromptBuilder`` (passages, token budget,
exact usage), the same typed errors, the same adapter lifecycle:

- a tenant's adapter becomes a ``LoRARequest`` whose integer id is never reused (vLLM caches
  adapters by id, so a reused id could serve the old weights);
- unloading is deferred until the requests using the adapter have finished;
- the adapter's format and rank are checked against ``max_lora_rank`` (``adept.adapter_compat``;
  the kernel checks it at publish time too).

Fair share: the replica's own fair queue (``scheduler.FairQueue``, the virtual token counter, as
on the HF engine) decides what enters vLLM, never more requests than vLLM runs at once
(``max_num_seqs``), so vLLM's FIFO cannot undo it: a lone tenant's request is next in, not behind
a flood's backlog. vLLM holds ``max_loras`` adapters per batch; a tenant holds at most its share of
them while others wait for one. Every request carries a per-tenant ``cache_salt``, so the prefix
cache is never shared across tenants. The queue is bounded like the HF engine's (429 per tenant,
503 overall, with Retry-After); vLLM's own errors keep their status (400, 429, 503).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adept.adapter_compat import ServingLimits, ensure_adapter_compatible
from adept.config.llm import DEFAULT_RAG_INSTRUCTION
from adept.errors import AdeptError, InvalidRequest, NotFound, Overloaded, RateLimited, Unavailable
from services.llm.engine import END_MARKERS, EngineObserver, tenant_of
from services.llm.extractive import extractive_applies, extractive_enabled
from services.llm.prompting import PromptBuilder, passage_budget, sentence_budget
from services.llm.protocol import GenerateChunk, GenerateRequest, TokenLogprob, TopLogprob, Usage
from services.llm.runner import GenerationFailed
from services.llm.scheduler import FairQueue
from services.llm.streaming import TextStream, token_text_of
from services.llm.structured import template_renders_tools
from services.llm.tokenizing import PromptWorker

log = logging.getLogger(__name__)


def vllm_available() -> bool:
    """vLLM importable and a CUDA device present (what ``llm.engine: auto`` needs to pick vLLM)."""
    import importlib.util

    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None


def cache_salt(tenant: str) -> str:
    """The prefix-cache salt of ``tenant``'s requests: equal prefixes of different tenants never share blocks."""
    return hashlib.sha256(f"adept-tenant:{tenant}".encode()).hexdigest()[:32]


@dataclass(eq=False)
class _Ticket:
    """A request waiting for (or holding) a place in vLLM's batch; what the fair queue orders."""

    tenant: str
    prompt_tokens: int
    lora: _Lora | None
    admitted: asyncio.Future
    cancelled: bool = False
    preemptions: int = 0  # vLLM preempts internally; the replica never re-queues
    submitted: float = field(default_factory=time.monotonic)


@dataclass
class _Lora:
    request: Any  # vllm LoRARequest
    users: int = 0
    doomed: bool = False


class VLLMEngine:
    """Serves the replica's contract on a vLLM ``AsyncLLM``.

    Args:
        llm: a started ``vllm.v1.engine.async_llm.AsyncLLM`` (or anything with its interface).
        tokenizer: the model's transformers tokenizer (prompts are rendered and counted here).
        max_model_len: the context window vLLM was started with.
        max_batch_size: vLLM's ``max_num_seqs``.
        max_tokens_limit, default_max_tokens, rag_instruction, rag_examples, rag_max_passages,
            rag_passage_sentences, rag_extractive, observer:
            as for ``Engine`` (``auto`` settings: GPU-sized model, so no passage or sentence limit and
            no extractive answers).
        max_queued_requests, max_queued_per_tenant: the bounded queue, as for ``Engine``.
        max_lora_rank: vLLM's ``max_lora_rank``; adapters above it are refused.
    """

    def __init__(
        self,
        llm: Any,
        tokenizer: Any,
        *,
        max_model_len: int,
        max_batch_size: int = 16,
        max_tokens_limit: int = 1024,
        default_max_tokens: int | None = None,
        rag_instruction: str = DEFAULT_RAG_INSTRUCTION,
        rag_examples: list[dict[str, str]] | None = None,
        rag_max_passages: int | str | None = "auto",
        rag_passage_sentences: int | str | None = "auto",
        rag_extractive: bool | str | None = "auto",
        observer: EngineObserver | None = None,
        max_queued_requests: int = 256,
        max_queued_per_tenant: int = 64,
        max_lora_rank: int = 64,
        max_loras: int = 8,
    ) -> None:
        self.llm = llm
        self.tokenizer = tokenizer
        self._token_text = token_text_of(tokenizer)
        self.device = "cuda"
        self.max_model_len = max_model_len
        self.vocab_size = int(llm.model_config.get_vocab_size())
        self.max_batch_size = max_batch_size
        self.max_tokens_limit = max_tokens_limit
        self.default_max_tokens = default_max_tokens
        self.observer = observer or EngineObserver()
        self.max_queued_requests = max_queued_requests
        self.max_queued_per_tenant = max_queued_per_tenant
        self.limits = ServingLimits(max_lora_rank=max_lora_rank)
        # vLLM serves GPU-sized models: `auto` puts no limit on the passages.
        self.prompts = PromptBuilder(
            tokenizer,
            max_model_len=max_model_len,
            rag_instruction=rag_instruction,
            examples=rag_examples,
            max_passages=passage_budget(rag_max_passages, None),
            max_sentences=sentence_budget(rag_passage_sentences, None),
        )
        self.extractive = extractive_enabled(rag_extractive, None)
        self.prompt_worker = PromptWorker(self.prompts, tokenizer)
        vocab = tokenizer.get_vocab()
        self._stop_ids = sorted({vocab[m] for m in END_MARKERS if m in vocab})
        self._loras: dict[str, _Lora] = {}
        self._lora_ids = itertools.count(1)  # vLLM wants ids > 0; never reused
        self.max_loras = max_loras
        self.waiting = FairQueue(
            max_waiting=max_queued_requests, max_waiting_per_tenant=max_queued_per_tenant
        )
        self._running: set[_Ticket] = set()  # admitted into vLLM, not finished
        self._dead: BaseException | None = None

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        dtype: str = "auto",
        max_model_len: int | None = None,
        max_batch_size: int = 16,
        max_adapters: int = 8,
        max_lora_rank: int = 64,
        kv_cache_tokens: int | None = None,
        **kwargs: Any,
    ) -> VLLMEngine:
        """Start vLLM on the model directory ``path`` (GPU only)."""
        from transformers import AutoConfig
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        from adept.models import load_tokenizer

        engine_args: dict[str, Any] = {
            "model": str(path),
            "dtype": dtype,
            "max_model_len": max_model_len,
            "max_num_seqs": max_batch_size,
            "enable_lora": True,
            "max_loras": max_adapters,
            "max_cpu_loras": max_adapters * 2,
            "max_lora_rank": max_lora_rank,
        }
        if kv_cache_tokens is not None:
            import torch

            from services.llm.kv_cache import kv_bytes_per_token

            torch_dtype = getattr(torch, dtype) if dtype != "auto" else torch.bfloat16
            config = AutoConfig.from_pretrained(str(path))
            engine_args["kv_cache_memory_bytes"] = kv_cache_tokens * kv_bytes_per_token(config, torch_dtype)
        llm = AsyncLLM.from_engine_args(AsyncEngineArgs(**engine_args))
        window = max_model_len or int(llm.model_config.max_model_len)
        return cls(
            llm,
            load_tokenizer(path),
            max_model_len=window,
            max_batch_size=max_batch_size,
            max_lora_rank=max_lora_rank,
            max_loras=max_adapters,
            **kwargs,
        )

    # -- adapters ---------------------------------------------------------------------------
    @property
    def loaded_adapters(self) -> list[str]:
        return sorted(a for a, lora in self._loras.items() if not lora.doomed)

    async def load_adapter(self, adapter_id: str, path: str | Path) -> None:
        """Register the PEFT adapter at ``path`` with vLLM under a fresh integer id.

        Raises:
            InvalidRequest: the adapter's format or rank is not servable by vLLM (``adapter_incompatible``).
            ValueError, OSError, RuntimeError: unreadable files, or vLLM refused to load it.
        """
        if adapter_id in self.loaded_adapters:
            return
        config = json.loads((Path(path) / "adapter_config.json").read_text())
        ensure_adapter_compatible(config, self.limits)
        from vllm.lora.request import LoRARequest

        request = LoRARequest(lora_name=adapter_id, lora_int_id=next(self._lora_ids), lora_path=str(path))
        if not await self.llm.add_lora(request):
            raise RuntimeError(f"vLLM did not load adapter {adapter_id}")
        old = self._loras.get(adapter_id)  # an earlier copy still draining: it keeps its own id
        if old is not None:
            self._loras[f"{adapter_id}#{old.request.lora_int_id}"] = old
        self._loras[adapter_id] = _Lora(request)

    async def unload_adapter(self, adapter_id: str) -> bool:
        """Forget ``adapter_id``; vLLM drops it once no request uses it. False if not loaded."""
        lora = self._loras.get(adapter_id)
        if lora is None or lora.doomed:
            return False
        lora.doomed = True
        if lora.users == 0:
            await self._remove(adapter_id, lora)
        return True

    async def _remove(self, key: str, lora: _Lora) -> None:
        self._loras.pop(key, None)
        await self.llm.remove_lora(lora.request.lora_int_id)

    # -- generation -------------------------------------------------------------------------
    async def count_tokens(self, texts: list[str]) -> list[int]:
        return await self.prompt_worker.count(texts)

    async def generate(self, req: GenerateRequest, adapter_id: str = "") -> AsyncIterator[GenerateChunk]:
        """Stream the answer to ``req``; same chunks and errors as ``Engine.generate``."""
        self.check_health_now()
        cap = min(self.default_max_tokens or self.max_tokens_limit, self.max_tokens_limit)
        # Without max_tokens the answer gets what the context has left (up to the cap); passages are
        # fitted leaving it at least half the window or the cap.
        max_tokens = req.max_tokens or min(cap, self.max_model_len // 2)
        if max_tokens > self.max_tokens_limit:
            raise InvalidRequest(
                f"max_tokens={max_tokens} exceeds this server's limit of {self.max_tokens_limit}",
                param="max_tokens",
            )
        if any(not 0 <= t < self.vocab_size for t in req.logit_bias or {}):
            # vLLM's own check raises a bare ValueError from inside generate: refuse it here, as the HF engine does.
            raise InvalidRequest(
                f"logit_bias names token ids outside the vocabulary (0..{self.vocab_size - 1})",
                param="logit_bias",
            )
        lora = None
        if adapter_id:
            lora = self._loras.get(adapter_id)
            if lora is None or lora.doomed:
                raise NotFound(f"adapter {adapter_id} is not loaded on this replica", code="model_not_found")
        if req.tool_choice == "auto" and not template_renders_tools(self.tokenizer):
            raise InvalidRequest(
                "this model's chat template has no tool-call format, so tool_choice 'auto' cannot be honoured: "
                "use tool_choice 'required' or name a function",
                param="tool_choice",
            )
        prompt = await self.prompt_worker.build(req, max_tokens)  # size checked first, tokenized off the loop
        if req.max_tokens is None:
            max_tokens = min(cap, self.max_model_len - len(prompt.ids))
        tenant = req.tenant if req.tenant is not None else tenant_of(adapter_id)
        ticket = _Ticket(tenant, len(prompt.ids), lora, asyncio.get_running_loop().create_future())
        self.waiting.push(ticket)  # raises 429/503 before anything is held
        if lora is not None:
            lora.users += 1
        chunks = self._stream(req, prompt, max_tokens, ticket, adapter_id)
        try:
            self._dispatch()
            await ticket.admitted  # the replica's fair queue, not vLLM's FIFO, decides who enters
            async for chunk in chunks:
                yield chunk
        finally:
            await chunks.aclose()  # the client went away: vLLM aborts the request
            if not ticket.admitted.done():
                ticket.cancelled = True
                ticket.admitted.cancel()
                self.waiting.drain(lambda t: t is ticket)
            self._running.discard(ticket)
            self.waiting.finished(ticket)
            self._dispatch()
            if lora is not None:
                lora.users -= 1
                if lora.doomed and lora.users == 0:
                    key = next((k for k, v in self._loras.items() if v is lora), None)
                    if key is not None:
                        await self._remove(key, lora)

    async def _stream(
        self, req: GenerateRequest, prompt: Any, max_tokens: int, ticket: _Ticket, adapter_id: str
    ) -> AsyncIterator[GenerateChunk]:
        from vllm.sampling_params import RequestOutputKind, SamplingParams, StructuredOutputsParams

        structured = None
        ebnf = extractive_applies(self.extractive, req, prompt, adapter_id)
        if req.guided is not None:  # vLLM's structured outputs build the grammar from the base tokenizer
            structured = StructuredOutputsParams(
                json=req.guided.json_schema,
                json_object=True if req.guided.json_object else None,
                disable_any_whitespace=True,  # compact JSON, as on the HF engine
            )
        elif ebnf is not None:
            structured = StructuredOutputsParams(grammar=ebnf)
        params = SamplingParams(
            n=1,
            temperature=req.temperature,
            top_p=req.top_p,
            seed=req.seed,
            stop_token_ids=self._stop_ids or None,
            ignore_eos=req.ignore_eos,
            max_tokens=max_tokens,
            skip_special_tokens=True,
            output_kind=RequestOutputKind.DELTA,
            detokenize=False,  # text comes from the replica's own detokenizer, as on the HF engine
            structured_outputs=structured,
            presence_penalty=req.presence_penalty,
            frequency_penalty=req.frequency_penalty,
            logit_bias=req.logit_bias,
            logprobs=req.logprobs,
        )
        lora = ticket.lora
        stream = _typed_errors(
            self.llm.generate(
                # A per-tenant salt: vLLM's prefix cache never shares blocks across tenants, so no
                # tenant can time whether another sent a given prefix (CVE-2025-46570).
                {"prompt_token_ids": prompt.ids, "cache_salt": cache_salt(ticket.tenant)},
                params,
                req.request_id,
                lora_request=None if lora is None else lora.request,
            ),
            self,
        )
        text = TextStream(self.tokenizer, req.stop, prompt_ids=prompt.ids)
        completion, first = 0, True
        try:
            async for out in stream:
                piece = out.outputs[0]
                delta, stopped, n = "", False, 0
                logprobs = self._logprobs(piece, req.logprobs)
                for token in piece.token_ids:
                    n += 1
                    more, stopped = text.push(token)
                    delta += more
                    if stopped:
                        break
                completion += n
                self._charge(ticket, adapter_id, n, first=completion == n)
                if not stopped and out.finished:
                    if piece.finish_reason not in ("stop", "length"):
                        raise GenerationFailed(f"generation ended early ({piece.finish_reason})")
                    rest, stopped = text.flush()
                    delta += rest
                if not stopped and not out.finished:
                    if delta or first:  # the first chunk always goes out: it marks TTFT
                        first = False
                        yield GenerateChunk(text=delta, logprobs=logprobs)
                    continue
                usage = Usage(prompt_tokens=len(prompt.ids), completion_tokens=completion)
                finish = "stop" if stopped or piece.finish_reason != "length" else "length"
                self.observer.finished(adapter_id, usage, finish, time.monotonic() - ticket.submitted)
                yield GenerateChunk(
                    text=delta,
                    finish_reason=finish,
                    usage=usage,
                    passages_used=prompt.passages_used,
                    logprobs=logprobs,
                )
                return  # on a stop string, closing the stream aborts the request in vLLM
        finally:
            await stream.aclose()  # the client went away: vLLM aborts the request

    def _logprobs(self, piece: Any, k: int | None) -> list[TokenLogprob] | None:
        """vLLM's per-token ``{token_id: Logprob}`` as the replica's ``TokenLogprob``s (texts from our tokenizer)."""
        if k is None or not piece.logprobs:
            return None
        text = self._token_text  # detokenize=False: vLLM sends no texts
        out = []
        for token, options in zip(piece.token_ids, piece.logprobs, strict=False):
            ranked = sorted(options.items(), key=lambda kv: kv[1].rank)
            out.append(
                TokenLogprob(
                    token=text(token),
                    logprob=options[token].logprob,
                    top=[TopLogprob(token=text(t), logprob=lp.logprob) for t, lp in ranked[:k]],
                )
            )
        return out

    def _charge(self, ticket: _Ticket, adapter_id: str, n: int, *, first: bool) -> None:
        """Tokens generated for ``ticket``: its tenant's fair-share counter and the replica's metrics."""
        if not n:
            return
        self.waiting.charge(ticket.tenant, output_tokens=n)
        self.observer.served(ticket.tenant, prompt_tokens=0, output_tokens=n)
        self.observer.tokens(adapter_id, n)
        if first:
            self.observer.first_token(adapter_id, time.monotonic() - ticket.submitted)

    def _dispatch(self) -> None:
        """Let waiting requests into vLLM, least-served tenant first, never more than it runs at once."""
        while len(self._running) < self.max_batch_size and len(self.waiting):
            chosen = None
            for tenant in self.waiting.tenants():
                chosen = next((t for t in self.waiting.waiting(tenant) if self._lora_fits(t)), None)
                if chosen is not None:
                    break
            if chosen is None:
                break
            self.waiting.take(chosen)
            self.observer.served(chosen.tenant, prompt_tokens=chosen.prompt_tokens, output_tokens=0)
            self._running.add(chosen)
            chosen.admitted.set_result(None)
        running = collections.Counter(t.tenant for t in self._running)
        self.observer.queue_depth(self.waiting.waiting_by_tenant(), dict(running))

    def _lora_fits(self, ticket: _Ticket) -> bool:
        """Whether ``ticket``'s adapter can run now: vLLM holds ``max_loras`` adapters per batch, shared fairly.

        A tenant may hold at most its share of the slots (slots / tenants wanting adapters) while
        others want one, so a tenant with many adapters cannot take every slot.
        """
        if ticket.lora is None:
            return True
        held = {id(t.lora) for t in self._running if t.lora is not None}
        if id(ticket.lora) in held:
            return True
        if len(held) >= self.max_loras:
            return False
        waiting = [x for tenant in self.waiting.tenants() for x in self.waiting.waiting(tenant)]
        wanting = {x.tenant for x in [*self._running, *waiting] if x.lora is not None}
        share = max(1, self.max_loras // max(1, len(wanting)))
        mine = {id(t.lora) for t in self._running if t.lora is not None and t.tenant == ticket.tenant}
        return len(mine) < share

    def check_health_now(self) -> None:
        if self._dead is not None or self.llm.errored:
            raise Unavailable("this model replica has failed and is being replaced; retry shortly")

    def check_health(self) -> None:
        """Raise if vLLM's engine core died (Serve then replaces the replica)."""
        if self._dead is not None or self.llm.errored:
            raise RuntimeError(f"the vLLM engine died: {self._dead or self.llm.dead_error!r}")

    @property
    def waiting_requests(self) -> int:
        return len(self.waiting)

    async def close(self) -> None:
        self.llm.shutdown()
        self.prompt_worker.close()


async def _typed_errors(stream: Any, engine: VLLMEngine) -> AsyncIterator[Any]:
    """vLLM's exceptions, classified by type, as the platform's typed errors."""
    from vllm.exceptions import GracefulHTTPError, VLLMClientError
    from vllm.v1.engine.exceptions import EngineDeadError, EngineGenerateError

    try:
        async for out in stream:
            yield out
    except AdeptError:
        raise
    except EngineDeadError as e:
        engine._dead = e
        raise Unavailable("this model replica failed; retry shortly") from None
    except GracefulHTTPError as e:
        # Admission control's rejections carry their HTTP status: keep it (429 stays 429).
        status = int(getattr(e, "http_status", 503))
        if status == 429:
            raise RateLimited("the model server is rate limiting; retry shortly", retry_after=1.0) from None
        if 400 <= status < 500:
            raise InvalidRequest(f"the model server refused the request ({type(e).__name__})") from None
        raise Overloaded("the model replica is at capacity; retry shortly", retry_after=1.0) from None
    except VLLMClientError as e:
        raise InvalidRequest(f"the model server refused the request ({type(e).__name__})") from None
    except EngineGenerateError as e:
        if isinstance(e.__cause__, VLLMClientError | ValueError):  # a bad request, wrapped by the engine
            raise InvalidRequest(
                f"the model server refused the request ({type(e.__cause__).__name__})"
            ) from None
        log.error("vLLM generation failed", exc_info=e)
        raise GenerationFailed(
            "generation failed for this request (EngineGenerateError); other requests were not affected"
        ) from None
    except Exception as e:
        log.error("vLLM generation failed", exc_info=e)
        raise GenerationFailed(
            f"generation failed for this request ({type(e).__name__}); other requests were not affected"
        ) from None
    finally:
        await stream.aclose()  # closing vLLM's generator aborts the request (async_llm.py, generate)
