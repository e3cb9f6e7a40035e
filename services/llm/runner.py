"""The model thread's side of a step: decode the running rows, prefill newcomers, sample, isolate failures.

Everything here runs on the engine's single model thread. A failure while computing one request
fails that request only:

- a batched decode that raises is retried row by row (each row rewrites its own cache column,
  so a retry is idempotent); rows that fail alone fail, the others carry on;
- a batched prefill that raises (a CUDA OOM on one long prompt) is retried one newcomer at a time;
- a prompt longer than ``prefill_chunk`` tokens is prefilled a slice per step, between the decode
  steps of the running rows (chunked prefill), so one long prompt never stalls every stream;
- a row whose logits are NaN/inf (a broken adapter) fails; the rest of the batch is sampled;
- an error while detokenizing fails that row.

``step`` returns one ``Outcome`` per row that produced a token or failed; it raises only for a
bug outside the per-request paths, which the engine's supervisor turns into a dead replica.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from adept.errors import AdeptError, Overloaded
from services.llm.batch import RunningBatch, Sequence
from services.llm.kv_cache import chunk_mask, decode_mask, prefill_mask
from services.llm.lora_slots import LoraSlots
from services.llm.protocol import TokenLogprob, TopLogprob
from services.llm.sampling import adjust_logits, sample_batch

log = logging.getLogger(__name__)


class GenerationFailed(AdeptError):
    """Generating one request failed on the model side; other requests were not affected."""

    code = "generation_failed"


@dataclass
class Outcome:
    """What one step did for one request: a text delta (maybe finishing it), or an error."""

    seq: Sequence
    delta: str = ""
    finish: str | None = None
    error: AdeptError | None = None


class ModelRunner:
    """Runs steps of the running batch on the model thread.

    Args:
        slots: the model and its adapters.
        batch: the running rows and their KV cache.
        eos_ids: tokens that end a generation.
        pad_id: token used to pad prefill rows.
        max_model_len: context window.
        sliding_window: the model's attention window (None: full attention).
        prefill_chunk: prompts longer than this are prefilled this many tokens per step.
    """

    def __init__(
        self,
        slots: LoraSlots,
        batch: RunningBatch,
        *,
        eos_ids: set[int],
        pad_id: int,
        max_model_len: int,
        sliding_window: int | None,
        prefill_chunk: int = 512,
    ) -> None:
        self.slots, self.batch = slots, batch
        self.prefill_chunk = prefill_chunk
        self.eos_ids, self.pad_id = eos_ids, pad_id
        self.max_model_len, self.sliding_window = max_model_len, sliding_window
        self.device, self.dtype = slots.device, slots.dtype
        self.grammars: Any = None  # a GrammarBook, set by the engine when a request first needs one
        self.token_text: Any = str  # token id -> its text (set by the engine: the tokenizer's decode)

    def step(self, admit: list[Sequence], preempt: list[Sequence]) -> list[Outcome]:
        """Drop cancelled and preempted rows, decode one token for the rest, prefill ``admit``."""
        out: list[Outcome] = []
        with torch.inference_mode():
            self.batch.remove({s for s in self.batch.holders if s.cancelled} | set(preempt))
            if self.batch.rows:
                self._decode(out)
            fresh = [s for s in admit if not s.cancelled]
            longs = [s for s in fresh if len(s.context_ids) > self.prefill_chunk]
            if longs and self.batch.filling is None:  # the engine admits one long prompt at a time
                seq = longs[0]
                try:
                    self.batch.reserve([seq])
                except Exception as e:
                    self.batch.clear_free_rows()
                    self._fail(seq, e, out)
                else:
                    seq.prefilled, self.batch.filling = 0, seq
            shorts = [s for s in fresh if s not in longs]
            if shorts:
                self._prefill(shorts, out)
            if self.batch.filling is not None:
                self._fill_chunk(out)
            self.batch.remove({s for s in self.batch.rows if s.finish_reason is not None})
        return out

    # -- chunked prefill ---------------------------------------------------------------------------
    def _fill_chunk(self, out: list[Outcome]) -> None:
        """Prefill the next slice of the long prompt in progress; on its last slice, its first token."""
        seq = self.batch.filling
        assert seq is not None
        context, start = seq.context_ids, seq.prefilled
        n = min(self.prefill_chunk, len(context) - start)
        row, width = len(self.batch.rows), start + n
        try:
            result = self.slots.forward(
                input_ids=torch.tensor([context[start:width]], device=self.device),
                attention_mask=chunk_mask(start, n, width, self.dtype, self.sliding_window, self.device),
                position_ids=torch.arange(start, width, device=self.device)[None, :],
                past_key_values=self.batch.cache.for_chunk(row, start, width),
                use_cache=True,
                logits_to_keep=1,
                slots=[seq.slot],
            )
        except Exception as e:
            self.batch.filling = None
            self.batch.cache.clear_rows(row, row + 1)
            self._fail(seq, e, out)
            return
        seq.prefilled = width
        if width < len(context):
            return
        seq.cache_len, self.batch.filling = width, None
        self.batch.rows.append(seq)  # its row already follows the running rows
        self._sample([seq], result.logits[:, -1], out)

    # -- decode ------------------------------------------------------------------------------------
    def _decode(self, out: list[Outcome]) -> None:
        rows = list(self.batch.rows)
        try:
            logits = self._decode_rows(0, len(rows))
        except Exception as e:
            if len(rows) == 1:
                self._fail(rows[0], e, out)
                return
            log.warning("batched decode of %d rows failed (%r); retrying row by row", len(rows), e)
            for i, seq in enumerate(rows):
                try:
                    self._sample([seq], self._decode_rows(i, i + 1), out)
                except Exception as row_error:
                    self._fail(seq, row_error, out)
            return
        self._sample(rows, logits, out)

    def _decode_rows(self, start: int, stop: int) -> torch.Tensor:
        rows = self.batch.rows[start:stop]
        ids = torch.tensor([[s.generated[-1]] for s in rows], device=self.device)
        positions = torch.tensor([s.cache_len for s in rows], device=self.device)
        width = max(s.cache_len for s in rows) + 1
        result = self.slots.forward(
            input_ids=ids,
            attention_mask=decode_mask(positions + 1, width, self.dtype, self.sliding_window),
            position_ids=positions[:, None],
            past_key_values=self.batch.cache.for_decode(start, stop, positions, width),
            use_cache=True,
            logits_to_keep=1,
            slots=[s.slot for s in rows],
        )
        for s in rows:
            s.cache_len += 1
        return result.logits[:, -1]

    # -- prefill -----------------------------------------------------------------------------------
    def _prefill(self, seqs: list[Sequence], out: list[Outcome]) -> None:
        start = None
        try:
            start = self.batch.reserve(seqs)
            logits = self._prefill_rows(seqs, start)
        except Exception as e:
            if start is not None:
                self.batch.unreserve(start, len(seqs))
            self.batch.clear_free_rows()  # the failed pass may have written into rows beyond the batch
            if len(seqs) == 1:
                self._fail(seqs[0], e, out)
                return
            log.warning("batched prefill of %d requests failed (%r); retrying one by one", len(seqs), e)
            for seq in seqs:
                start = None
                try:
                    start = self.batch.reserve([seq])
                    logits = self._prefill_rows([seq], start)
                except Exception as one_error:
                    if start is not None:
                        self.batch.unreserve(start, 1)
                    self.batch.clear_free_rows()
                    self._fail(seq, one_error, out)
                    continue
                self.batch.rows.append(seq)
                self._sample([seq], logits, out)
            return
        self.batch.rows.extend(seqs)
        self._sample(seqs, logits, out)

    def _prefill_rows(self, seqs: list[Sequence], start: int) -> torch.Tensor:
        """One forward over right-padded contexts written into rows ``start ..``; last-token logits per row."""
        contexts = [s.context_ids for s in seqs]
        lens = [len(c) for c in contexts]
        width = max(lens)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        for i, context in enumerate(contexts):
            ids[i, : lens[i]] = torch.tensor(context)
        last = sorted({n - 1 for n in lens})  # logits only where some row's context ends
        result = self.slots.forward(
            input_ids=ids.to(self.device),
            attention_mask=prefill_mask(
                torch.tensor(lens, device=self.device), width, self.dtype, self.sliding_window
            ),
            position_ids=torch.arange(width, device=self.device)[None, :].expand(len(seqs), -1),
            past_key_values=self.batch.cache.for_prefill(start, start + len(seqs), width),
            use_cache=True,
            logits_to_keep=torch.tensor(last, device=self.device),
            slots=[s.slot for s in seqs],
        )
        for seq, n in zip(seqs, lens, strict=True):
            seq.cache_len = n
        rows = torch.arange(len(seqs), device=self.device)
        return result.logits[rows, torch.tensor([last.index(n - 1) for n in lens], device=self.device)]

    # -- sampling ----------------------------------------------------------------------------------
    def _sample(self, seqs: list[Sequence], logits: torch.Tensor, out: list[Outcome]) -> None:
        raw = logits
        logits = adjust_logits(
            logits,
            [s.generated for s in seqs],
            [s.presence_penalty for s in seqs],
            [s.frequency_penalty for s in seqs],
            [s.logit_bias for s in seqs],
        )
        constrained = [i for i, s in enumerate(seqs) if s.grammar is not None]
        finite = None
        if constrained:
            finite = torch.isfinite(logits).all(
                dim=-1
            )  # before the mask's -inf: a broken adapter still fails
            logits = self.grammars.mask(logits, constrained, [seqs[i].grammar for i in constrained])
        tokens, finite = sample_batch(
            logits,
            [s.temperature for s in seqs],
            [s.top_p for s in seqs],
            [s.generator for s in seqs],
            finite=finite,
        )
        self._logprobs(seqs, raw, tokens)
        for seq, token, ok in zip(seqs, tokens, finite, strict=True):
            if not ok:
                self._fail(seq, GenerationFailed(_NON_FINITE), out)
                continue
            try:
                out.append(self._advance(seq, token))
            except Exception as e:
                self._fail(seq, e, out)

    def _logprobs(self, seqs: list[Sequence], raw: torch.Tensor, tokens: list[int]) -> None:
        """Log-probabilities of the sampled tokens (and the top alternatives) for rows that asked."""
        rows = [i for i, s in enumerate(seqs) if s.logprobs is not None]
        if not rows:
            return
        lp = torch.log_softmax(raw[rows].float(), dim=-1)
        k = max(seqs[i].logprobs or 0 for i in rows)
        chosen = lp[torch.arange(len(rows)), torch.tensor([tokens[i] for i in rows])].tolist()
        top_v, top_i = lp.topk(k, dim=-1) if k else (lp[:, :0], lp[:, :0].long())
        top_v, top_i = top_v.tolist(), top_i.tolist()
        decode = self.token_text
        for n, i in enumerate(rows):
            want = seqs[i].logprobs or 0
            seqs[i].pending_logprobs.append(
                TokenLogprob(
                    token=decode(tokens[i]),
                    logprob=chosen[n],
                    top=[
                        TopLogprob(token=decode(t), logprob=v)
                        for t, v in zip(top_i[n][:want], top_v[n][:want], strict=True)
                    ],
                )
            )

    def _advance(self, seq: Sequence, token: int) -> Outcome:
        seq.generated.append(token)
        if seq.grammar is not None:
            if not seq.grammar.accept_token(token):
                raise GenerationFailed("the sampled token broke this request's output grammar")
            if seq.grammar.is_terminated():  # it accepted an end-of-turn token: the JSON is complete
                seq.finish_reason = "stop"
                return Outcome(seq, seq.stream.flush()[0], "stop")
        if token in self.eos_ids and not seq.ignore_eos:
            seq.finish_reason = "stop"
            return Outcome(seq, seq.stream.flush()[0], "stop")
        delta, stopped = seq.stream.push(token)
        if not stopped and (len(seq.generated) >= seq.max_tokens or seq.cache_len + 1 >= self.max_model_len):
            rest, stopped = seq.stream.flush()
            delta += rest
            seq.finish_reason = "stop" if stopped else "length"
        elif stopped:
            seq.finish_reason = "stop"
        return Outcome(seq, delta, seq.finish_reason)

    def _fail(self, seq: Sequence, error: BaseException, out: list[Outcome]) -> None:
        seq.finish_reason = "error"
        out.append(Outcome(seq, finish="error", error=as_request_error(seq, error)))


_NON_FINITE = (
    "the model produced non-finite scores (NaN or inf) for this request: its adapter's weights are "
    "probably broken; other requests were not affected"
)


def as_request_error(seq: Sequence, error: BaseException) -> AdeptError:
    """The error a client sees for a failure while computing its request (typed, never the raw text)."""
    if isinstance(error, AdeptError):
        return error
    if isinstance(error, torch.OutOfMemoryError):
        log.warning("request %s ran out of device memory: %s", seq.request_id, error)
        return Overloaded("the model ran out of device memory for this request; retry shortly", retry_after=5)
    log.error("request %s failed on the model thread", seq.request_id, exc_info=error)
    return GenerationFailed(
        f"generation failed for this request ({type(error).__name__}); other requests were not affected"
    )
