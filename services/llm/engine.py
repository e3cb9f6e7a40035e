"""The LLM engine: one base model, many LoRA adapters, continuous mixed-adapter batching, streaming.

No Ray Serve or FastAPI here (``deployment.py`` wraps this). One asyncio task runs the decode
loop; every model call (forward passes, adapter loads and unloads) runs on one dedicated
thread, so the event loop keeps accepting and streaming while the model computes, and the
model's modules never change under a running forward pass.

Each step: the running rows (any mix of adapters and ``__base__``, via peft's per-row
``adapter_names``) decode one token together; then requests that arrived meanwhile are
prefilled and their KV cache rows merged into the batch (``batch.py``); finished rows leave.
So a new request waits at most one step, never for a long generation to end.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from adept.config.llm import DEFAULT_RAG_INSTRUCTION
from adept.errors import InvalidRequest, NotFound
from services.llm.batch import Batch, Sequence
from services.llm.peft_slots import AdapterSlots
from services.llm.prompting import PromptBuilder
from services.llm.protocol import GenerateChunk, GenerateRequest, Usage
from services.llm.sampling import TextStream, make_generator, sample

log = logging.getLogger(__name__)
BASE = "__base__"
# Turn-end markers of common chat formats (ChatML, Phi-3, Llama 3): generation stops at them too.
END_MARKERS = ("<|im_end|>", "<|end|>", "<|eot_id|>", "<|endoftext|>")


class EngineObserver:
    """Hooks for metrics; the default does nothing. Never receives prompt or answer text."""

    def queue_depth(self, waiting: int, running: int) -> None: ...

    def first_token(self, adapter_id: str, seconds: float) -> None: ...

    def tokens(self, adapter_id: str, n: int) -> None: ...

    def finished(self, adapter_id: str, usage: Usage, finish_reason: str, seconds: float) -> None: ...


class Engine:
    """Serves generation requests for the base model and any loaded adapter.

    Args:
        model: a transformers causal LM (already on its device, in its dtype).
        tokenizer: its tokenizer.
        max_model_len: context window; default the model's ``max_position_embeddings``.
        max_batch_size: most rows decoded together.
        batch_wait_ms: when idle, how long to wait for more requests before the first step.
        max_tokens_limit: largest ``max_tokens`` accepted.
        default_max_tokens: ``max_tokens`` when a request names none.
        rag_instruction: text put before retrieved passages.
        observer: metrics hooks.
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
        default_max_tokens: int = 256,
        rag_instruction: str = DEFAULT_RAG_INSTRUCTION,
        observer: EngineObserver | None = None,
    ) -> None:
        model.eval()
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.max_model_len = int(max_model_len or getattr(model.config, "max_position_embeddings", 2048))
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_ms / 1000
        self.max_tokens_limit = max_tokens_limit
        self.default_max_tokens = default_max_tokens
        self.observer = observer or EngineObserver()
        self.prompts = PromptBuilder(
            tokenizer, max_model_len=self.max_model_len, rag_instruction=rag_instruction
        )
        self.slots = AdapterSlots(model)
        self._eos = _eos_ids(model, tokenizer)
        self._adapters: dict[str, str] = {}  # adapter id -> peft adapter name ("slot")
        self._slot_ids = itertools.count()
        self._users: collections.Counter[str] = collections.Counter()  # slot -> sequences using it
        self._doomed: set[str] = set()  # unloaded while in use: deleted when the last user leaves
        self._waiting: collections.deque[Sequence] = collections.deque()
        self._batch = Batch()
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
        """Load the PEFT adapter at ``path`` under ``adapter_id`` (no-op if loaded). Errors leave the model as it was."""
        if adapter_id in self._adapters:
            return
        slot = f"adapter_{next(self._slot_ids)}"  # peft names cannot hold '.', '/' or '@'
        await self._run(self.slots.add, slot, Path(path))
        self._adapters[adapter_id] = slot

    async def unload_adapter(self, adapter_id: str) -> bool:
        """Forget ``adapter_id``; its weights go as soon as no running request uses them. False if not loaded."""
        slot = self._adapters.pop(adapter_id, None)
        if slot is None:
            return False
        if self._users[slot]:
            self._doomed.add(slot)
        else:
            await self._run(self.slots.remove, slot)
        return True

    # -- generation -------------------------------------------------------------------------
    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(self.prompts.encode(t)) for t in texts]

    async def generate(self, req: GenerateRequest, adapter_id: str = "") -> AsyncIterator[GenerateChunk]:
        """Stream the answer to ``req`` with ``adapter_id`` (``""``: the base model), one chunk per token.

        Raises:
            InvalidRequest: ``max_tokens`` over the limit, or the prompt does not fit.
            NotFound: ``adapter_id`` is not loaded.
        """
        max_tokens = req.max_tokens or self.default_max_tokens
        if max_tokens > self.max_tokens_limit:
            raise InvalidRequest(
                f"max_tokens={max_tokens} exceeds this server's limit of {self.max_tokens_limit}",
                param="max_tokens",
            )
        slot = BASE
        if adapter_id:
            slot = self._adapters.get(adapter_id, "")
            if not slot:
                raise NotFound(f"adapter {adapter_id} is not loaded on this replica", code="model_not_found")
        prompt = self.prompts.build(req, max_tokens)
        seq = Sequence(
            request_id=req.request_id,
            prompt_ids=prompt.ids,
            slot=slot,
            adapter_id=adapter_id,
            max_tokens=max_tokens,
            temperature=req.temperature,
            top_p=req.top_p,
            generator=make_generator(req.seed),
            stream=TextStream(self.tokenizer, req.stop),
            queue=asyncio.Queue(),
            passages_used=prompt.passages_used,
            ignore_eos=req.ignore_eos,
        )
        self._users[slot] += 1
        self._waiting.append(seq)
        self._ensure_loop()
        assert self._wake is not None
        self._wake.set()
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
                seq.cancelled = True  # the client went away: the loop drops the row at the next step

    def check_health(self) -> None:
        """Raise if the decode loop died (it never should: step errors fail only their rows)."""
        task = self._task
        if task is not None and task.done() and not task.cancelled() and task.exception() is not None:
            raise RuntimeError(f"decode loop died: {task.exception()!r}")

    async def close(self) -> None:
        """Stop the loop and the model thread."""
        if self._task is not None:
            self._task.cancel()
            with _suppress_cancel():
                await self._task
        self._exec.shutdown(wait=True)

    # -- the loop ---------------------------------------------------------------------------
    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._exec, fn, *args)

    def _ensure_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._loop is not loop:
            self._loop, self._wake = loop, asyncio.Event()
            self._task = loop.create_task(self._serve(), name="adept-llm-decode-loop")

    async def _serve(self) -> None:
        assert self._wake is not None
        while True:
            if not self._waiting and not self._batch.rows:
                self._wake.clear()
                await self._wake.wait()
                if self.batch_wait_s:
                    await asyncio.sleep(self.batch_wait_s)  # let requests that arrive together start together
            newcomers: list[Sequence] = []
            while self._waiting and len(self._batch) + len(newcomers) < self.max_batch_size:
                seq = self._waiting.popleft()
                if seq.cancelled:
                    await self._release([seq])
                else:
                    newcomers.append(seq)
            self.observer.queue_depth(len(self._waiting), len(self._batch) + len(newcomers))
            try:
                events, dropped = await self._run(self._step, newcomers)
            except Exception as e:  # a failed forward fails the rows in it, not the replica
                log.exception("decode step failed")
                dropped = [*self._batch.rows, *newcomers]
                self._batch = Batch()
                for seq in dropped:
                    seq.finish_reason = "error"
                    seq.queue.put_nowait(e)
                await self._release(dropped)
                continue
            await self._release(
                dropped
            )  # first, so an adapter unloaded mid-request is gone when its answer ends
            self._deliver(events)

    async def _release(self, seqs: list[Sequence]) -> None:
        for seq in seqs:
            self._users[seq.slot] -= 1
            if seq.slot in self._doomed and self._users[seq.slot] <= 0:
                self._doomed.discard(seq.slot)
                del self._users[seq.slot]
                await self._run(self.slots.remove, seq.slot)

    def _deliver(self, events: list[tuple[Sequence, str, str | None]]) -> None:
        per_adapter: collections.Counter[str] = collections.Counter()
        now = time.monotonic()
        for seq, delta, finish in events:
            per_adapter[seq.adapter_id] += 1
            if len(seq.generated) == 1:
                self.observer.first_token(seq.adapter_id, now - seq.submitted)
            if finish is None:
                if delta or len(seq.generated) == 1:  # the first token always goes out: it marks TTFT
                    seq.queue.put_nowait(GenerateChunk(text=delta))
                continue
            usage = Usage(prompt_tokens=len(seq.prompt_ids), completion_tokens=len(seq.generated))
            seq.queue.put_nowait(
                GenerateChunk(text=delta, finish_reason=finish, usage=usage, passages_used=seq.passages_used)
            )
            self.observer.finished(seq.adapter_id, usage, finish, now - seq.submitted)
        for adapter_id, n in per_adapter.items():
            self.observer.tokens(adapter_id, n)

    # -- model thread -----------------------------------------------------------------------
    def _step(
        self, newcomers: list[Sequence]
    ) -> tuple[list[tuple[Sequence, str, str | None]], list[Sequence]]:
        """One decode step for the running rows, then prefill and merge the newcomers. Runs on the model thread."""
        events: list[tuple[Sequence, str, str | None]] = []
        dropped = self._drop(lambda s: s.cancelled)
        with torch.inference_mode():
            if self._batch.rows:
                self._decode(events)
            dropped += [seq for seq in newcomers if seq.cancelled]
            fresh = [seq for seq in newcomers if not seq.cancelled]
            if fresh:
                self._batch.merge(self._prefill(fresh, events))
        dropped += self._drop(lambda s: s.finish_reason is not None)
        return events, dropped

    def _drop(self, predicate: Any) -> list[Sequence]:
        gone = [s for s in self._batch.rows if predicate(s)]
        if gone:
            self._batch.keep([i for i, s in enumerate(self._batch.rows) if not predicate(s)])
        return gone

    def _forward(
        self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any, slots: list[str]
    ):
        return self.slots.forward(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
            adapter_names=slots,
        )

    def _prefill(self, seqs: list[Sequence], events: list) -> Batch:
        """Prefill ``seqs`` in one forward pass and return them as a left-padded batch.

        Prompts are right-padded for the pass, so every real token attends only to real tokens
        (causal) and no query row is fully masked; then each row's cache is rotated so its
        padding sits on the left, the layout decode steps extend.
        """
        from transformers import DynamicCache

        lens = [len(s.prompt_ids) for s in seqs]
        width = max(lens)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        for i, seq in enumerate(seqs):
            ids[i, : lens[i]] = torch.tensor(seq.prompt_ids)
        cols = torch.arange(width)
        right_mask = (cols[None, :] < torch.tensor(lens)[:, None]).long()
        last = sorted(set(n - 1 for n in lens))  # logits only where some row's prompt ends
        cache = DynamicCache()
        out = self.slots.forward(
            input_ids=ids.to(self.device),
            attention_mask=right_mask.to(self.device),
            position_ids=cols[None, :].expand(len(seqs), -1).to(self.device),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=torch.tensor(last, device=self.device),
            adapter_names=[s.slot for s in seqs],
        )
        logits = out.logits[torch.arange(len(seqs)), torch.tensor([last.index(n - 1) for n in lens])]
        shift = torch.tensor([width - n for n in lens])
        src = ((cols[None, :] - shift[:, None]) % width).to(
            self.device
        )  # new column j holds old column j - shift
        for layer in cache.layers:
            gather = src[:, None, :, None].expand(-1, layer.keys.shape[1], -1, layer.keys.shape[3])
            layer.keys = layer.keys.gather(2, gather)
            layer.values = layer.values.gather(2, gather)
        for seq, n in zip(seqs, lens, strict=True):
            seq.cache_len = n
        self._sample_into(seqs, logits, events)
        return Batch(list(seqs), cache, right_mask.flip(1).to(self.device))

    def _decode(self, events: list) -> None:
        batch = self._batch
        assert batch.mask is not None
        ids = torch.tensor([[s.generated[-1]] for s in batch.rows], device=self.device)
        positions = torch.tensor([[s.cache_len] for s in batch.rows], device=self.device)
        batch.mask = torch.cat([batch.mask, batch.mask.new_ones((len(batch), 1))], dim=1)
        out = self._forward(ids, batch.mask, positions, batch.cache, [s.slot for s in batch.rows])
        for seq in batch.rows:
            seq.cache_len += 1
        self._sample_into(batch.rows, out.logits[:, -1], events)

    def _sample_into(self, seqs: list[Sequence], logits: torch.Tensor, events: list) -> None:
        """Next token of every row: greedy rows in one argmax (one device sync), sampled rows one by one."""
        greedy = torch.argmax(logits, dim=-1).tolist()
        sampled = [i for i, s in enumerate(seqs) if s.temperature > 0]
        rows = logits[sampled].float().cpu() if sampled else None
        for k, i in enumerate(sampled):
            greedy[i] = sample(rows[k], seqs[i].temperature, seqs[i].top_p, seqs[i].generator)
        for seq, token in zip(seqs, greedy, strict=True):
            events.append(self._advance(seq, token))

    def _advance(self, seq: Sequence, token: int) -> tuple[Sequence, str, str | None]:
        seq.generated.append(token)
        if token in self._eos and not seq.ignore_eos:
            seq.finish_reason = "stop"
            return seq, seq.stream.flush(), "stop"
        delta, stopped = seq.stream.push(token)
        if stopped:
            seq.finish_reason = "stop"
        elif len(seq.generated) >= seq.max_tokens or seq.cache_len + 1 >= self.max_model_len:
            seq.finish_reason = "length"
            delta += seq.stream.flush()
        return seq, delta, seq.finish_reason


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


class _suppress_cancel:
    def __enter__(self) -> None:
        return None

    def __exit__(self, typ: Any, *_: Any) -> bool:
        return typ is asyncio.CancelledError
