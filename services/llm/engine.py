"""The HF engine: one base model, many LoRA adapters, continuous mixed-adapter batching, streaming.

No Ray Serve or FastAPI here (``deployment.py`` wraps this). One asyncio task runs the loop; every
model call (forward passes, copying an adapter into its slot) runs on one dedicated thread
(``runner.py``), so the event loop keeps accepting and streaming while the model computes, and
the model's weights never change under a running forward pass.

Adapters live in ``max_loras`` preallocated slots (``lora_slots.py``): a cold load reads and
converts the files on a worker thread, then takes a free slot — or the least recently used idle
one (no request holds it), or waits, first come first served, until one is — and the model
thread copies the prepared tensors in between two steps.

Each step: requests are admitted from per-tenant queues, least-served tenant first (the virtual
token counter, ``scheduler.py``), while the batch has rows and the KV budget has room; a starved
tenant may preempt a heavier tenant's newest row;
then the running rows decode one token together (any mix of adapters: each row names its slot,
one batched LoRA product for all), the admitted ones are prefilled into free cache rows, finished
rows leave.

The loop is supervised: if it ever dies, every pending request fails with a 503 and
``check_health`` raises, so Ray Serve replaces the replica.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import re
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from adept.config.llm import DEFAULT_RAG_INSTRUCTION
from adept.errors import InvalidRequest, NotFound, Unavailable
from services.llm.batch import RunningBatch, Sequence
from services.llm.extractive import extractive_applies, extractive_enabled
from services.llm.kv_cache import SlotKVCache, free_memory_bytes, kv_bytes_per_token
from services.llm.lora_slots import BASE, LoraSlots
from services.llm.prompting import Prompt, PromptBuilder, passage_budget, sentence_budget
from services.llm.protocol import GenerateChunk, GenerateRequest, Usage
from services.llm.runner import ModelRunner, Outcome
from services.llm.sampling import make_generator
from services.llm.scheduler import FairQueue, preemption_victim
from services.llm.streaming import TextStream, token_text_of
from services.llm.structured import GrammarBook, template_renders_tools
from services.llm.tokenizing import PromptWorker

log = logging.getLogger(__name__)
# Turn-end markers of common chat formats (ChatML, Phi-3, Llama 3): generation stops at them too.
END_MARKERS = ("<|im_end|>", "<|end|>", "<|eot_id|>", "<|endoftext|>")


class EngineObserver:
    """Hooks for metrics; the default does nothing. Never receives prompt or answer text."""

    def queue_depth(self, waiting: dict[str, int], running: dict[str, int]) -> None: ...

    def kv_cache(self, allocated_bytes: int, budget_bytes: int) -> None: ...

    def first_token(self, adapter_id: str, seconds: float) -> None: ...

    def tokens(self, adapter_id: str, n: int) -> None: ...

    def finished(self, adapter_id: str, usage: Usage, finish_reason: str, seconds: float) -> None: ...

    def served(self, tenant: str, *, prompt_tokens: int, output_tokens: int) -> None:
        """Tokens processed for ``tenant`` (what fair share charges): prompts when admitted, each output token."""

    def adapter_evicted(self, adapter_id: str) -> None:
        """The engine evicted ``adapter_id`` (its least recently used idle slot) to load another."""


def tenant_of(adapter_id: str) -> str:
    """The tenant owning ``tenant/name@vN`` (``""`` for the base model)."""
    return adapter_id.partition("/")[0] if adapter_id else ""


class Engine:
    """Serves generation requests for the base model and any loaded adapter.

    Args:
        model: a transformers causal LM (already on its device, in its dtype).
        tokenizer: its tokenizer.
        max_model_len: context window; default the model's ``max_position_embeddings``.
        max_batch_size: most rows decoded together.
        batch_wait_ms: when idle, how long to wait for more requests before the first step.
        max_tokens_limit: largest ``max_tokens`` accepted.
        default_max_tokens: cap on ``max_tokens`` of a request naming none, which gets what the context
            has left after its prompt (default: ``max_tokens_limit``).
        rag_instruction, rag_examples: the RAG instruction and worked examples (``PromptBuilder``).
        rag_max_passages: most passages per RAG prompt; ``auto``: 1 below 1 B parameters, else no limit.
        rag_passage_sentences: show each passage as its best N sentences (``sentence_budget``).
        rag_extractive: copy RAG answers from the shown passages (``services/llm/extractive.py``);
            ``auto``: below 1 B parameters.
        observer: metrics hooks.
        kv_cache_tokens: the KV-token budget (rows x reserved tokens); default: ``kv_memory_fraction``
            of the memory free on the device once the model is loaded.
        kv_memory_fraction: share of free device memory the KV cache may take when
            ``kv_cache_tokens`` is not given.
        max_queued_requests: most requests waiting to be admitted (503 + Retry-After beyond).
        max_queued_per_tenant: most requests one tenant may have waiting (429 + Retry-After beyond).
        prefill_chunk_tokens: a prompt longer than this is prefilled this many tokens per step,
            between decode steps (chunked prefill), one such prompt at a time.
        max_loras: adapter slots, i.e. adapters resident at once (``LLMConfig.max_adapters_per_replica``,
            as for vLLM's ``max_loras``).
        max_lora_rank: largest LoRA rank a slot holds (``PlatformConfig.max_lora_rank``, as for vLLM).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_model_len: int | None = None,
        max_batch_size: int = 16,
        batch_wait_ms: float = 5.0,
        max_tokens_limit: int = 1024,
        default_max_tokens: int | None = None,
        rag_instruction: str = DEFAULT_RAG_INSTRUCTION,
        rag_examples: list[dict[str, str]] | None = None,
        rag_max_passages: int | str | None = "auto",
        rag_passage_sentences: int | str | None = "auto",
        rag_extractive: bool | str | None = "auto",
        observer: EngineObserver | None = None,
        kv_cache_tokens: int | None = None,
        kv_memory_fraction: float = 0.5,
        max_queued_requests: int = 256,
        max_queued_per_tenant: int = 64,
        prefill_chunk_tokens: int = 512,
        max_loras: int = 8,
        max_lora_rank: int = 64,
    ) -> None:
        model.eval()
        self.tokenizer = tokenizer
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.max_model_len = int(max_model_len or getattr(model.config, "max_position_embeddings", 2048))
        self.vocab_size = int(model.config.vocab_size)
        self.kv_bytes_per_token = kv_bytes_per_token(model.config, self.dtype)
        if kv_cache_tokens is None:
            kv_cache_tokens = (
                int(free_memory_bytes(self.device) * kv_memory_fraction) // self.kv_bytes_per_token
            )
        if kv_cache_tokens < self.max_model_len:
            log.warning(
                "KV budget of %d tokens is below the context window (%d): serving with a %d-token window",
                kv_cache_tokens,
                self.max_model_len,
                kv_cache_tokens,
            )
            self.max_model_len = kv_cache_tokens
        if self.max_model_len <= max_tokens_limit:
            raise ValueError(
                f"the KV budget ({kv_cache_tokens} tokens) leaves a context window of {self.max_model_len} "
                f"tokens, not more than max_tokens_limit ({max_tokens_limit}): raise kv_cache_tokens"
            )
        self.kv_budget_tokens = kv_cache_tokens
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_ms / 1000
        self.max_tokens_limit = max_tokens_limit
        self.default_max_tokens = default_max_tokens
        self.observer = observer or EngineObserver()
        self.prompts = PromptBuilder(
            tokenizer,
            max_model_len=self.max_model_len,
            rag_instruction=rag_instruction,
            examples=rag_examples,
            max_passages=passage_budget(rag_max_passages, _parameters(model)),
            max_sentences=sentence_budget(rag_passage_sentences, _parameters(model)),
        )
        self.extractive = extractive_enabled(rag_extractive, _parameters(model))
        self.prompt_worker = PromptWorker(self.prompts, tokenizer)
        self._grammar_exec = ThreadPoolExecutor(1, thread_name_prefix="adept-grammar")
        self.slots = LoraSlots(model, max_loras=max_loras, max_lora_rank=max_lora_rank)
        cache = SlotKVCache.for_model(
            model, max_rows=max_batch_size, max_cols=self.max_model_len, budget_tokens=kv_cache_tokens
        )
        self.batch = RunningBatch(cache)
        self.runner = ModelRunner(
            self.slots,
            self.batch,
            eos_ids=_eos_ids(model, tokenizer),
            pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
            max_model_len=self.max_model_len,
            sliding_window=_sliding_window(model.config),
            prefill_chunk=prefill_chunk_tokens,
        )
        self.runner.token_text = token_text_of(tokenizer)
        self.waiting = FairQueue(
            max_waiting=max_queued_requests,
            max_waiting_per_tenant=max_queued_per_tenant,
            retry_after=self._retry_after,
        )
        self._adapters: dict[str, int] = {}  # adapter id -> its slot
        self._free_slots = list(range(max_loras - 1, -1, -1))  # popped from the end: slot 0 first
        self._last_use: dict[int, int] = {}  # slot -> tick of its last request or load (LRU)
        self._ticks = itertools.count()
        self._slot_waiters: collections.deque[asyncio.Future] = (
            collections.deque()
        )  # loads waiting for a slot
        self._users: collections.Counter[int] = collections.Counter()  # slot -> sequences holding it
        self._doomed: set[int] = set()  # unloaded while in use: its slot is freed when the last user leaves
        self._inflight: set[Sequence] = set()  # accepted and not yet retired
        self._finish_times: collections.deque[float] = collections.deque(maxlen=64)
        self._dead: BaseException | None = None
        self.last_inject_s = 0.0  # model-thread time of the last adapter load (the copy into its slot)
        # (seconds the whole load took, seconds of it on the model thread), per cold load: benchmarks, tests.
        self.load_timings: collections.deque[tuple[float, float]] = collections.deque(maxlen=1024)
        self._exec = ThreadPoolExecutor(1, thread_name_prefix="adept-llm")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    @classmethod
    def from_pretrained(
        cls, path: str | Path, *, device: str = "cpu", dtype: str = "auto", **kwargs: Any
    ) -> Engine:
        """Load the model directory once (``adept.models``) and build an engine around it."""
        from adept.models import load_causal_lm, load_tokenizer

        return cls(load_causal_lm(path, device=device, dtype=dtype), load_tokenizer(path), **kwargs)

    # -- adapters ---------------------------------------------------------------------------
    @property
    def loaded_adapters(self) -> list[str]:
        return sorted(self._adapters)

    async def load_adapter(self, adapter_id: str, path: str | Path) -> None:
        """Load the PEFT adapter at ``path`` as ``adapter_id`` (no-op if loaded). Errors leave the model as it was.

        The files are read, validated and converted on a worker thread while the batch keeps
        decoding; then the adapter takes a free slot, or evicts the least recently used idle one, or
        waits (first come, first served) until a slot is free or idle; only the copy into the slot
        waits for a step boundary on the model thread.

        Raises:
            InvalidRequest: the adapter has a feature or rank the slots cannot serve (``adapter_incompatible``).
            FileNotFoundError, ValueError, OSError, RuntimeError: unreadable or malformed adapter files.
        """
        if adapter_id in self._adapters:
            self._touch(self._adapters[adapter_id])
            return
        started = time.perf_counter()
        prepared = await asyncio.to_thread(self.slots.prepare, Path(path))
        if adapter_id in self._adapters:
            return
        slot = await self._claim_slot()
        if adapter_id in self._adapters:  # loaded by another caller while this one waited for a slot
            self._give_slot(slot)
            return
        try:
            inject_s = await self._run(self._inject, slot, prepared)
        except BaseException:
            self._give_slot(slot)
            raise
        self._adapters[adapter_id] = slot
        self._touch(slot)
        self.last_inject_s = inject_s
        self.load_timings.append((time.perf_counter() - started, inject_s))
        if self._slot_waiters:  # loads that found every slot mid-load: some may be idle now
            self._wake_slot_waiters()

    def _inject(self, slot: int, prepared: Any) -> float:
        """Model thread: copy a prepared adapter into ``slot``; return how long the batch was held up (seconds)."""
        started = time.perf_counter()
        self.slots.inject(slot, prepared)
        return time.perf_counter() - started

    async def unload_adapter(self, adapter_id: str) -> bool:
        """Forget ``adapter_id``; its slot is freed as soon as no request uses it. False if not loaded."""
        slot = self._adapters.pop(adapter_id, None)
        if slot is None:
            return False
        if self._users[slot] > 0:
            self._doomed.add(slot)
        else:
            self._give_slot(slot)
        return True

    # -- slots (event loop only) --------------------------------------------------------------
    @property
    def slot_waiters(self) -> int:
        """Loads waiting for a slot (every slot holds an adapter a request is using)."""
        return sum(not f.done() for f in self._slot_waiters)

    def _touch(self, slot: int) -> None:
        self._last_use[slot] = next(self._ticks)

    async def _claim_slot(self) -> int:
        """A slot for a new adapter: a free one, else the LRU idle one (evicted), else wait in line."""
        if not self._slot_waiters:
            slot = self._free_slot_now()
            if slot is not None:
                return slot
        waiter = asyncio.get_running_loop().create_future()
        self._slot_waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._give_slot(waiter.result())  # handed a slot just as its caller went away
            raise
        finally:
            if waiter in self._slot_waiters:
                self._slot_waiters.remove(waiter)

    def _free_slot_now(self) -> int | None:
        if self._free_slots:
            return self._free_slots.pop()
        idle = [(self._last_use.get(s, -1), a, s) for a, s in self._adapters.items() if self._users[s] <= 0]
        if not idle:
            return None
        _tick, adapter_id, slot = min(idle)
        del self._adapters[adapter_id]
        self.slots.release(slot)
        self.observer.adapter_evicted(adapter_id)
        log.info(
            "adapter %s evicted from slot %d (least recently used, idle) for a new load", adapter_id, slot
        )
        return slot

    def _give_slot(self, slot: int) -> None:
        """``slot`` holds no adapter any more: hand it to the first waiting load, else keep it free."""
        self.slots.release(slot)
        self._users.pop(slot, None)
        self._free_slots.append(slot)
        self._wake_slot_waiters()

    def _wake_slot_waiters(self) -> None:
        """Serve waiting loads, in order, while a slot is free or idle."""
        while self._slot_waiters:
            waiter = self._slot_waiters[0]
            if waiter.done():
                self._slot_waiters.popleft()
                continue
            slot = self._free_slot_now()
            if slot is None:
                return
            self._slot_waiters.popleft()
            waiter.set_result(slot)

    def _hold(self, slot: int) -> None:
        if slot != BASE:
            self._users[slot] += 1
            self._touch(slot)

    def _unhold(self, slot: int) -> None:
        """One request gave back its hold on ``slot``: free a doomed slot, or let a waiting load evict it."""
        if slot == BASE:
            return
        self._users[slot] -= 1
        if self._users[slot] > 0:
            return
        if slot in self._doomed:
            self._doomed.discard(slot)
            self._give_slot(slot)
        elif self._slot_waiters:
            self._wake_slot_waiters()

    # -- generation -------------------------------------------------------------------------
    async def count_tokens(self, texts: list[str]) -> list[int]:
        return await self.prompt_worker.count(texts)

    async def generate(self, req: GenerateRequest, adapter_id: str = "") -> AsyncIterator[GenerateChunk]:
        """Stream the answer to ``req`` with ``adapter_id`` (``""``: the base model), one chunk per token.

        Raises:
            InvalidRequest: ``max_tokens`` over the limit, or the prompt does not fit.
            NotFound: ``adapter_id`` is not loaded.
            RateLimited: the tenant already has too many requests waiting (429, Retry-After).
            Overloaded: the replica's queue is full (503, Retry-After).
            Unavailable: the replica's loop has died (503).
            GenerationFailed / Overloaded: computing this request failed (this request only).
        """
        if self._dead is not None:
            raise Unavailable("this model replica has failed and is being replaced; retry shortly")
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
            raise InvalidRequest(
                f"logit_bias names token ids outside the vocabulary (0..{self.vocab_size - 1})",
                param="logit_bias",
            )
        slot = BASE
        if adapter_id:
            slot = self._adapters.get(adapter_id, BASE)
            if slot == BASE:
                raise NotFound(f"adapter {adapter_id} is not loaded on this replica", code="model_not_found")
        self._hold(slot)  # before any await: an idle slot could otherwise be evicted and refilled meanwhile
        try:
            prompt = await self.prompt_worker.build(
                req, max_tokens
            )  # size checked first, tokenized off the loop
            if req.max_tokens is None:
                max_tokens = min(cap, self.max_model_len - len(prompt.ids))
            grammar = await self._grammar(req, prompt, adapter_id)
            seq = Sequence(
                request_id=req.request_id,
                tenant=req.tenant if req.tenant is not None else tenant_of(adapter_id),
                prompt_ids=prompt.ids,
                slot=slot,
                adapter_id=adapter_id,
                max_tokens=max_tokens,
                temperature=req.temperature,
                top_p=req.top_p,
                generator=make_generator(req.seed, self.device),
                stream=TextStream(self.tokenizer, req.stop, prompt_ids=prompt.ids),
                queue=asyncio.Queue(),
                passages_used=prompt.passages_used,
                ignore_eos=req.ignore_eos and grammar is None,
                presence_penalty=req.presence_penalty,
                frequency_penalty=req.frequency_penalty,
                logit_bias=req.logit_bias,
                logprobs=req.logprobs,
                grammar=grammar,
            )
            self._ensure_loop()
            self.waiting.push(seq)  # raises 429/503: the request never ran
        except BaseException:
            self._unhold(slot)
            raise
        self._inflight.add(seq)
        self._kick()
        try:
            while True:
                item = await seq.queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            if seq.finish_reason is None:
                seq.cancelled = True  # the client went away: its row or queue entry goes at the next step
                self._kick()

    async def _grammar(self, req: GenerateRequest, prompt: Prompt, adapter_id: str) -> Any:
        """A fresh matcher for ``req``'s output grammar (compiled off the loop, cached per schema), or None:
        the JSON of ``guided``, else an extractive answer's (``extractive_applies``).

        Raises:
            InvalidRequest: the schema cannot be compiled, or ``tool_choice: auto`` on a template without tools.
        """
        if req.tool_choice == "auto" and not template_renders_tools(self.tokenizer):
            raise InvalidRequest(
                "this model's chat template has no tool-call format, so tool_choice 'auto' cannot be honoured: "
                "use tool_choice 'required' or name a function",
                param="tool_choice",
            )
        ebnf = extractive_applies(self.extractive, req, prompt, adapter_id)
        if req.guided is None and ebnf is None:
            return None
        loop = asyncio.get_running_loop()
        if self.runner.grammars is None:
            self.runner.grammars = await loop.run_in_executor(
                self._grammar_exec,
                lambda: GrammarBook(self.tokenizer, vocab_size=self.vocab_size, stop_ids=self.runner.eos_ids),
            )
        book = self.runner.grammars
        if req.guided is None:
            try:
                return book.matcher(await loop.run_in_executor(self._grammar_exec, book.compile_ebnf, ebnf))
            except (ValueError, RuntimeError) as e:  # a passage xgrammar cannot take: answer unconstrained
                log.warning("extractive grammar not compiled (%s); answering without it", e)
                return None
        try:
            # Its own thread: a slow schema delays only requests waiting for a grammar, not tokenizing.
            compiled = await loop.run_in_executor(self._grammar_exec, book.compile, req.guided)
        except (ValueError, RuntimeError) as e:
            reason = re.sub(
                r"^\[[^\]]*\] \S+:\d+: ", "", str(e).strip()
            )  # xgrammar's "[time] file.cc:line: "
            raise InvalidRequest(
                f"the JSON schema cannot be used: {reason}", param="response_format"
            ) from None
        return book.matcher(compiled)

    def check_health(self) -> None:
        """Raise if the loop died (step errors fail only their requests; this is for bugs and crashes)."""
        if self._dead is not None:
            raise RuntimeError(f"the LLM engine's loop died: {self._dead!r}")

    @property
    def waiting_requests(self) -> int:
        return len(self.waiting)

    @property
    def kv_cache_bytes(self) -> tuple[int, int, int]:
        """``(allocated now, peak, budget)`` bytes of the KV cache."""
        cache, per = self.batch.cache, self.kv_bytes_per_token
        return cache.allocated_tokens * per, cache.peak_tokens * per, self.kv_budget_tokens * per

    async def close(self) -> None:
        """Stop the loop (pending requests fail with 503) and the model thread."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._exec.shutdown(wait=True)  # waits for a step still running on the model thread
        self.prompt_worker.close()
        self._grammar_exec.shutdown(wait=False, cancel_futures=True)
        self._drop_batch()

    # -- the loop ---------------------------------------------------------------------------
    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._exec, fn, *args)

    def _kick(self) -> None:
        if self._wake is not None and self._loop is asyncio.get_running_loop():
            self._wake.set()

    def _ensure_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._loop is not loop:
            self._loop, self._wake = loop, asyncio.Event()
            self._task = loop.create_task(self._supervise(), name="adept-llm-engine-loop")

    async def _supervise(self) -> None:
        try:
            await self._serve()
        except asyncio.CancelledError:
            self._fail_all(lambda: Unavailable("the model replica is shutting down; retry shortly"))
            raise
        except Exception as e:
            log.exception("the LLM engine's loop died; failing every pending request")
            self._dead = e
            self._fail_all(lambda: Unavailable("this model replica failed; retry shortly"))
            self._drop_batch()  # the loop awaits each step, so the model thread is idle here

    async def _serve(self) -> None:
        assert self._wake is not None
        while True:
            if not len(self.waiting) and not self.batch.holders:
                self._wake.clear()
                await self._wake.wait()
                if self.batch_wait_s:
                    await asyncio.sleep(self.batch_wait_s)  # let requests that arrive together start together
            await self._retire(self.waiting.drain(lambda s: s.cancelled))
            admit, preempt = self._plan()
            running = collections.Counter(s.tenant for s in [*self.batch.rows, *admit] if s not in preempt)
            self.observer.queue_depth(self.waiting.waiting_by_tenant(), dict(running))
            before = [*self.batch.holders, *admit]
            outcomes = await self._run(self.runner.step, admit, preempt)
            for seq in preempt:
                seq.cache_len, seq.prefilled, seq.preemptions = 0, 0, seq.preemptions + 1
                self.waiting.push_front(seq)
            still = set(self.batch.holders)
            # Retire first, so an adapter unloaded mid-request is gone when its answer ends.
            await self._retire([s for s in before if s not in still and s not in preempt])
            self._deliver(outcomes)
            allocated, _peak, budget = self.kv_cache_bytes
            self.observer.kv_cache(allocated, budget)

    def _plan(self) -> tuple[list[Sequence], list[Sequence]]:
        """Admit waiting requests, least-served tenant first, while rows and KV budget allow.

        The least-served tenant's first waiting request that fits is admitted (any of them, not
        only its oldest); if none fits, rows of a tenant running two or more rows more are
        preempted for its oldest one. If even that cannot make room, admission stops for this
        step (letting others pass would starve it).
        """
        keep = [s for s in self.batch.rows if not s.cancelled]
        admit: list[Sequence] = []
        preempt: list[Sequence] = []
        while len(self.waiting):
            tenant = self.waiting.tenants()[0]
            seq = next((s for s in self.waiting.waiting(tenant) if self._fits(keep, [*admit, s])), None)
            if seq is None:
                seq = self.waiting.peek()
                # Preempt only if that makes room: the heaviest tenant's newest rows, one by one.
                victims: list[Sequence] = []
                rest = list(keep)
                while (victim := preemption_victim(seq.tenant, rest, also_running=admit)) is not None:
                    rest.remove(victim)
                    victims.append(victim)
                    if self._fits(rest, [*admit, seq]):
                        break
                if not victims or not self._fits(rest, [*admit, seq]):
                    break
                keep, preempt = rest, [*preempt, *victims]
            self.waiting.take(seq)
            if seq.preemptions == 0:
                self.observer.served(seq.tenant, prompt_tokens=seq.prompt_tokens, output_tokens=0)
            admit.append(seq)
        return admit, preempt

    def _fits(self, keep: list[Sequence], add: list[Sequence]) -> bool:
        filling = self.batch.filling is not None
        longs = sum(len(s.context_ids) > self.runner.prefill_chunk for s in add)
        if longs + filling > 1:  # one long prompt is prefilled in chunks at a time
            return False
        return len(keep) + len(add) + filling <= self.max_batch_size and self.batch.fits(keep, add)

    def _deliver(self, outcomes: list[Outcome]) -> None:
        per_adapter: collections.Counter[str] = collections.Counter()
        per_tenant: collections.Counter[str] = collections.Counter()
        now = time.monotonic()
        for o in outcomes:
            seq = o.seq
            if o.error is not None:
                seq.queue.put_nowait(o.error)
                self._finish_times.append(now)
                continue
            per_adapter[seq.adapter_id] += 1
            per_tenant[seq.tenant] += 1
            if len(seq.generated) == 1:
                self.observer.first_token(seq.adapter_id, now - seq.submitted)
            logprobs, seq.pending_logprobs = seq.pending_logprobs or None, []
            if o.finish is None:
                if o.delta or len(seq.generated) == 1 or logprobs:  # the first token always goes out: TTFT
                    seq.queue.put_nowait(GenerateChunk(text=o.delta, logprobs=logprobs))
                continue
            usage = Usage(prompt_tokens=len(seq.prompt_ids), completion_tokens=len(seq.generated))
            seq.queue.put_nowait(
                GenerateChunk(
                    text=o.delta,
                    finish_reason=o.finish,
                    usage=usage,
                    passages_used=seq.passages_used,
                    logprobs=logprobs,
                )
            )
            self._finish_times.append(now)
            self.observer.finished(seq.adapter_id, usage, o.finish, now - seq.submitted)
        for tenant, n in per_tenant.items():
            self.waiting.charge(tenant, output_tokens=n)
            self.observer.served(tenant, prompt_tokens=0, output_tokens=n)
        for adapter_id, n in per_adapter.items():
            self.observer.tokens(adapter_id, n)

    async def _retire(self, seqs: list[Sequence]) -> None:
        """Give back each sequence's hold on its adapter's slot, exactly once."""
        for seq in seqs:
            self._inflight.discard(seq)
            if seq.released:
                continue
            seq.released = True
            self.waiting.finished(seq)
            self._unhold(seq.slot)

    def _fail_all(self, error: Any) -> None:
        """The loop is gone: every accepted request gets ``error()`` instead of hanging.

        The batch is left alone: on shutdown a step may still be running on the model thread.
        """
        for seq in list(self._inflight):
            if seq.finish_reason is None:
                seq.finish_reason = "error"
                seq.queue.put_nowait(error())
        self._inflight.clear()
        self.waiting.drain(lambda _s: True)

    def _drop_batch(self) -> None:
        """Forget the running rows and free the cache; only while no step runs on the model thread."""
        self.batch.rows.clear()
        self.batch.filling = None
        self.batch.cache.release()

    def _retry_after(self) -> float:
        """Seconds until the queue has likely moved: waiting requests / recent completion rate."""
        times = self._finish_times
        if len(times) < 2 or times[-1] <= times[0]:
            return 1.0
        rate = (len(times) - 1) / (times[-1] - times[0])
        return min(60.0, max(1.0, len(self.waiting) / rate))


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config):
        eos = getattr(source, "eos_token_id", None)
        ids.update([eos] if isinstance(eos, int) else list(eos or []))
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    vocab = tokenizer.get_vocab()
    ids.update(vocab[m] for m in END_MARKERS if m in vocab)
    return ids


def _sliding_window(config: Any) -> int | None:
    """The attention window every layer uses (None: full attention).

    Raises:
        ValueError: layers mix full and sliding attention (one 4D mask cannot serve both).
    """
    kinds = set(getattr(config, "layer_types", None) or [])
    if len(kinds) > 1:
        raise ValueError(
            f"the HF engine needs one attention kind for all layers, this model mixes {sorted(kinds)}"
        )
    if kinds == {"full_attention"} or getattr(config, "use_sliding_window", True) is False:
        return None
    return getattr(config, "sliding_window", None) or None


def _parameters(model: Any) -> int | None:
    """The model's parameter count (``None`` when it cannot say)."""
    count = getattr(model, "num_parameters", None)
    return int(count()) if callable(count) else None
