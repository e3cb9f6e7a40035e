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

Fair share: each request gets vLLM ``priority`` = how many requests its tenant already has in
flight (vLLM's priority scheduler admits lower values first and preempts for them), so a lone
tenant's request goes ahead of a flooding tenant's backlog. The queue is bounded like the HF
engine's (429 per tenant, 503 overall, with Retry-After).
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adept.adapter_compat import ServingLimits, ensure_adapter_compatible
from adept.config.llm import DEFAULT_RAG_INSTRUCTION
from adept.errors import AdeptError, InvalidRequest, NotFound, Overloaded, RateLimited, Unavailable
from services.llm.engine import END_MARKERS, EngineObserver, tenant_of
from services.llm.prompting import PromptBuilder
from services.llm.protocol import GenerateChunk, GenerateRequest, Usage
from services.llm.runner import GenerationFailed
from services.llm.streaming import TextStream

log = logging.getLogger(__name__)


def vllm_available() -> bool:
    """vLLM importable and a CUDA device present (what ``llm.engine: auto`` needs to pick vLLM)."""
    import importlib.util

    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None


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
        max_tokens_limit, default_max_tokens, rag_instruction, observer: as for ``Engine``.
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
        default_max_tokens: int = 256,
        rag_instruction: str = DEFAULT_RAG_INSTRUCTION,
        observer: EngineObserver | None = None,
        max_queued_requests: int = 256,
        max_queued_per_tenant: int = 64,
        max_lora_rank: int = 64,
    ) -> None:
        self.llm = llm
        self.tokenizer = tokenizer
        self.device = "cuda"
        self.max_model_len = max_model_len
        self.max_batch_size = max_batch_size
        self.max_tokens_limit = max_tokens_limit
        self.default_max_tokens = default_max_tokens
        self.observer = observer or EngineObserver()
        self.max_queued_requests = max_queued_requests
        self.max_queued_per_tenant = max_queued_per_tenant
        self.limits = ServingLimits(max_lora_rank=max_lora_rank)
        self.prompts = PromptBuilder(tokenizer, max_model_len=max_model_len, rag_instruction=rag_instruction)
        vocab = tokenizer.get_vocab()
        self._stop_ids = sorted({vocab[m] for m in END_MARKERS if m in vocab})
        self._loras: dict[str, _Lora] = {}
        self._lora_ids = itertools.count(1)  # vLLM wants ids > 0; never reused
        self._inflight: collections.Counter[str] = collections.Counter()  # tenant -> requests in flight
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
            "scheduling_policy": "priority",
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
    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(self.prompts.encode(t)) for t in texts]

    async def generate(self, req: GenerateRequest, adapter_id: str = "") -> AsyncIterator[GenerateChunk]:
        """Stream the answer to ``req``; same chunks and errors as ``Engine.generate``."""
        from vllm.sampling_params import RequestOutputKind, SamplingParams

        self.check_health_now()
        max_tokens = req.max_tokens or self.default_max_tokens
        if max_tokens > self.max_tokens_limit:
            raise InvalidRequest(
                f"max_tokens={max_tokens} exceeds this server's limit of {self.max_tokens_limit}",
                param="max_tokens",
            )
        lora = None
        if adapter_id:
            lora = self._loras.get(adapter_id)
            if lora is None or lora.doomed:
                raise NotFound(f"adapter {adapter_id} is not loaded on this replica", code="model_not_found")
        prompt = self.prompts.build(req, max_tokens)
        tenant = req.tenant if req.tenant is not None else tenant_of(adapter_id)
        priority = self._admit(tenant)
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
        )
        self._inflight[tenant] += 1
        if lora is not None:
            lora.users += 1
        stream = _typed_errors(
            self.llm.generate(
                {"prompt_token_ids": prompt.ids},
                params,
                req.request_id,
                lora_request=None if lora is None else lora.request,
                priority=priority,
            ),
            self,
        )
        text = TextStream(self.tokenizer, req.stop, prompt_ids=prompt.ids)
        completion, first = 0, True
        try:
            async for out in stream:
                piece = out.outputs[0]
                delta, stopped = "", False
                for token in piece.token_ids:
                    completion += 1
                    more, stopped = text.push(token)
                    delta += more
                    if stopped:
                        break
                if not stopped and out.finished:
                    if piece.finish_reason not in ("stop", "length"):
                        raise GenerationFailed(f"generation ended early ({piece.finish_reason})")
                    rest, stopped = text.flush()
                    delta += rest
                if not stopped and not out.finished:
                    if delta or first:  # the first chunk always goes out: it marks TTFT
                        first = False
                        yield GenerateChunk(text=delta)
                    continue
                usage = Usage(prompt_tokens=len(prompt.ids), completion_tokens=completion)
                finish = "stop" if stopped or piece.finish_reason != "length" else "length"
                yield GenerateChunk(
                    text=delta, finish_reason=finish, usage=usage, passages_used=prompt.passages_used
                )
                return  # on a stop string, closing the stream aborts the request in vLLM
        finally:
            await stream.aclose()  # the client went away: vLLM aborts the request
            self._inflight[tenant] -= 1
            if self._inflight[tenant] <= 0:
                del self._inflight[tenant]
            if lora is not None:
                lora.users -= 1
                if lora.doomed and lora.users == 0:
                    key = next((k for k, v in self._loras.items() if v is lora), None)
                    if key is not None:
                        await self._remove(key, lora)

    def _admit(self, tenant: str) -> int:
        """Bounded queue per tenant and overall; the request's vLLM priority (its tenant's load)."""
        mine, total = self._inflight[tenant], sum(self._inflight.values())
        if mine >= self.max_batch_size + self.max_queued_per_tenant:
            raise RateLimited(
                f"too many of your requests are waiting for this model replica ({mine}); retry shortly",
                retry_after=1.0,
                code="too_many_queued_requests",
            )
        if total >= self.max_batch_size + self.max_queued_requests:
            raise Overloaded("the model replica's queue is full; retry shortly", retry_after=1.0)
        return mine

    def check_health_now(self) -> None:
        if self._dead is not None or self.llm.errored:
            raise Unavailable("this model replica has failed and is being replaced; retry shortly")

    def check_health(self) -> None:
        """Raise if vLLM's engine core died (Serve then replaces the replica)."""
        if self._dead is not None or self.llm.errored:
            raise RuntimeError(f"the vLLM engine died: {self._dead or self.llm.dead_error!r}")

    @property
    def waiting_requests(self) -> int:
        return max(0, sum(self._inflight.values()) - self.max_batch_size)

    async def close(self) -> None:
        self.llm.shutdown()


async def _typed_errors(stream: Any, engine: VLLMEngine) -> AsyncIterator[Any]:
    """vLLM's exceptions, classified by type, as the platform's typed errors."""
    from vllm.exceptions import GracefulHTTPError, VLLMClientError
    from vllm.v1.engine.exceptions import EngineDeadError

    try:
        async for out in stream:
            yield out
    except AdeptError:
        raise
    except EngineDeadError as e:
        engine._dead = e
        raise Unavailable("this model replica failed; retry shortly") from None
    except GracefulHTTPError:
        raise Overloaded("the model replica is at capacity; retry shortly", retry_after=1.0) from None
    except VLLMClientError as e:
        raise InvalidRequest(f"the model server refused the request ({type(e).__name__})") from None
    except Exception as e:
        log.error("vLLM generation failed", exc_info=e)
        raise GenerationFailed(
            f"generation failed for this request ({type(e).__name__}); other requests were not affected"
        ) from None
    finally:
        await stream.aclose()  # closing vLLM's generator aborts the request (async_llm.py, generate)
