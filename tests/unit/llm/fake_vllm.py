"""A faithful fake of the part of vLLM 0.29.0 that ``services/llm/vllm_engine.py`` uses.

vLLM cannot run here (it needs CUDA, and its pins conflict with the CPU environment; see
shared/ENVIRONMENT.md), so the contract tests run the vLLM engine against this fake. Its classes
copy the names, signatures and field defaults of vLLM 0.29.0; ``test_vllm_engine.py`` checks them
against ``vllm_0_29_0_api.json``, recorded from the real wheel's source files:

- ``vllm/v1/engine/async_llm.py``: ``AsyncLLM`` (``from_engine_args``, ``generate``, ``abort``,
  ``add_lora``, ``remove_lora``, ``list_loras``, ``check_health``, ``shutdown``, ``errored``);
- ``vllm/lora/request.py``: ``LoRARequest``;
- ``vllm/sampling_params.py``: ``SamplingParams``, ``RequestOutputKind``;
- ``vllm/outputs.py``: ``RequestOutput``, ``CompletionOutput``;
- ``vllm/engine/arg_utils.py``: ``EngineArgs``, ``AsyncEngineArgs``;
- ``vllm/exceptions.py`` and ``vllm/v1/engine/exceptions.py``: the error classes;
- ``vllm/lora/peft_helper.py``: ``PEFTHelper`` (the rules adapters are refused by).

Behaviour follows the real one where the engine depends on it: ``generate`` is an async
generator of ``RequestOutput``s (``DELTA`` text and token ids, ``finished`` on the last, finish
reason ``stop``/``length``, stop strings cut from the text); closing it aborts the request;
LoRA adapters are registered by integer id (``lora_int_id`` >= 1) and loaded from ``lora_path``;
rank/DoRA/bias/modules_to_save are refused as ``PEFTHelper.validate_legal`` does; a dead engine
raises ``EngineDeadError``. Tokens come from a real model (the tiny Phi-3 with peft adapters),
computed one request at a time — the fake is about the interface, not speed.
"""

from __future__ import annotations

import asyncio
import enum
import json
import sys
import types
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


class UsageContext(enum.Enum):
    ENGINE_CONTEXT = "ENGINE_CONTEXT"


# -- errors (vllm/exceptions.py, vllm/v1/engine/exceptions.py) ------------------------------------
class VLLMError(Exception):
    pass


class VLLMClientError(VLLMError):
    pass


class VLLMServerError(VLLMError):
    pass


class GracefulHTTPError(VLLMError):
    def __init__(self, message, http_status):
        super().__init__(message)
        self.message = message
        self.http_status = http_status


class QueueOverflowError(GracefulHTTPError):
    pass


class VLLMValidationError(VLLMClientError):
    pass


class EngineDeadError(VLLMServerError):
    pass


class EngineGenerateError(VLLMServerError):
    pass


# -- requests and outputs --------------------------------------------------------------------------
@dataclass
class LoRARequest:
    lora_name: str
    lora_int_id: int
    lora_path: str = ""
    base_model_name: str | None = None

    def __post_init__(self):
        if self.lora_int_id < 1:
            raise ValueError(f"id must be > 0, got {self.lora_int_id}")
        assert self.lora_path, "lora_path cannot be empty"


class RequestOutputKind(enum.Enum):
    CUMULATIVE = 0
    DELTA = 1
    FINAL_ONLY = 2


@dataclass
class StructuredOutputsParams:
    json: str | dict | None = None
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None
    disable_any_whitespace: bool = False
    disable_additional_properties: bool = False
    whitespace_pattern: str | None = None
    structural_tag: str | None = None


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    max_tokens: int | None = 16
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    output_kind: RequestOutputKind = RequestOutputKind.CUMULATIVE
    detokenize: bool = True
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: int | None = None
    logit_bias: dict[int, float] | None = None
    structured_outputs: Any = None

    def __post_init__(self):
        if not self.detokenize and self.stop:
            raise ValueError("stop strings are only supported when detokenize is True")


@dataclass
class Logprob:
    """vllm/logprobs.py: one token's log-probability and its rank among the vocabulary."""

    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: Any
    finish_reason: str | None = None
    stop_reason: int | str | None = None


class RequestOutput:
    def __init__(
        self,
        request_id,
        prompt,
        prompt_token_ids,
        prompt_logprobs,
        outputs,
        finished,
        metrics=None,
        lora_request=None,
        encoder_prompt=None,
        encoder_prompt_token_ids=None,
        num_cached_tokens=None,
        num_cache_creation_tokens=None,
        *,
        kv_transfer_params=None,
        ec_transfer_params=None,
        **kwargs,
    ):
        self.request_id, self.prompt, self.prompt_token_ids = request_id, prompt, prompt_token_ids
        self.outputs, self.finished, self.lora_request = outputs, finished, lora_request


@dataclass
class EngineArgs:
    model: str = "facebook/opt-125m"
    dtype: str = "auto"
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.9
    kv_cache_memory_bytes: int | None = None
    max_num_seqs: int | None = None
    enable_lora: bool = False
    max_loras: int = 1
    max_lora_rank: int = 16
    max_cpu_loras: int | None = None
    scheduling_policy: str = "fcfs"


@dataclass
class AsyncEngineArgs(EngineArgs):
    pass


class PEFTHelper:
    """vLLM's adapter rules (vllm/lora/peft_helper.py)."""

    def __init__(self, config: dict) -> None:
        self.r = config["r"]
        self.use_dora = config.get("use_dora", False)
        self.modules_to_save = config.get("modules_to_save")
        self.bias = config.get("bias", "none")

    def _validate_features(self):
        error_msg = []
        if self.modules_to_save:
            error_msg.append("vLLM only supports modules_to_save being None.")
        if self.use_dora:
            error_msg.append("vLLM does not yet support DoRA.")
        return error_msg

    def validate_legal(self, lora_config):
        error_msg = self._validate_features()
        if self.r > lora_config.max_lora_rank:
            error_msg.append(f"LoRA rank {self.r} is greater than max_lora_rank {lora_config.max_lora_rank}.")
        if self.bias != "none":
            error_msg.append("Adapter bias is not supported.")
        if error_msg:
            raise ValueError(f"{' '.join(error_msg)}")


@dataclass
class _ModelConfig:
    max_model_len: int
    vocab_size: int = 0

    def get_vocab_size(self) -> int:
        return self.vocab_size


@dataclass
class _Calls:
    """What the engine asked of the fake, for assertions."""

    added: list[int] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)
    priorities: dict[str, int] = field(default_factory=dict)
    loras_of: dict[str, int | None] = field(default_factory=dict)
    outputs: list[list[int]] = field(default_factory=list)  # token ids generated, per request
    prompts: list[dict[str, Any]] = field(default_factory=list)  # the prompt dicts received
    params: list[Any] = field(default_factory=list)  # the SamplingParams received
    running: int = 0  # requests inside generate now
    max_running: int = 0


class AsyncLLM:
    """vLLM's async engine, on a real transformers model with peft adapters."""

    def __init__(self, engine_args: AsyncEngineArgs) -> None:
        from peft import PeftModel  # noqa: F401  (fail early if peft is missing)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.args = engine_args
        self.model = AutoModelForCausalLM.from_pretrained(engine_args.model).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(engine_args.model)
        self.model_config = _ModelConfig(
            engine_args.max_model_len or self.model.config.max_position_embeddings,
            self.model.config.vocab_size,
        )
        self.peft: Any = None
        self.loras: dict[int, LoRARequest] = {}
        self.calls = _Calls()
        self._lock = asyncio.Lock()
        self._dead = False
        self.output_handler = None

    @classmethod
    def from_engine_args(
        cls,
        engine_args,
        start_engine_loop=True,
        usage_context=UsageContext.ENGINE_CONTEXT,
        stat_loggers=None,
    ):
        return cls(engine_args)

    # -- LoRA ----------------------------------------------------------------------------------
    async def add_lora(self, lora_request):
        if lora_request.lora_int_id in self.loras:
            return True
        config = json.loads((Path(lora_request.lora_path) / "adapter_config.json").read_text())
        PEFTHelper(config).validate_legal(self.args)
        name = f"lora_{lora_request.lora_int_id}"
        if self.peft is None:
            from peft import PeftModel

            self.peft = PeftModel.from_pretrained(self.model, lora_request.lora_path, adapter_name=name)
        else:
            self.peft.load_adapter(lora_request.lora_path, adapter_name=name)
        self.loras[lora_request.lora_int_id] = lora_request
        self.calls.added.append(lora_request.lora_int_id)
        return True

    async def remove_lora(self, lora_id):
        if lora_id not in self.loras:
            return False
        del self.loras[lora_id]
        self.peft.delete_adapter(f"lora_{lora_id}")
        self.calls.removed.append(lora_id)
        return True

    async def list_loras(self):
        return set(self.loras)

    # -- health --------------------------------------------------------------------------------
    @property
    def errored(self):
        return self._dead

    @property
    def dead_error(self):
        return EngineDeadError()

    async def check_health(self):
        if self.errored:
            raise self.dead_error

    fail_next: BaseException | None = None  # test hook: the next generate raises this

    def kill(self) -> None:
        """Test hook: the engine core process dies."""
        self._dead = True

    def shutdown(self, timeout=None):
        self._dead = True

    def get_tokenizer(self):
        return self.tokenizer

    async def abort(self, request_id, internal=False):
        ids = (request_id,) if isinstance(request_id, str) else tuple(request_id)
        self.calls.aborted.extend(ids)

    # -- generation ----------------------------------------------------------------------------
    async def generate(
        self,
        prompt,
        sampling_params,
        request_id,
        *,
        prompt_text=None,
        lora_request=None,
        tokenization_kwargs=None,
        trace_headers=None,
        priority=0,
        data_parallel_rank=None,
        session_id=None,
        reasoning_ended=None,
        reasoning_parser_kwargs=None,
    ) -> AsyncGenerator[RequestOutput, None]:
        if self._dead:
            raise EngineDeadError()
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        self.calls.priorities[request_id] = priority
        self.calls.loras_of[request_id] = None if lora_request is None else lora_request.lora_int_id
        if lora_request is not None and lora_request.lora_int_id not in self.loras:
            await self.add_lora(lora_request)  # vLLM loads an unknown adapter on first use
        params = sampling_params
        assert params.output_kind is RequestOutputKind.DELTA, "the fake implements DELTA outputs"
        ids = list(prompt["prompt_token_ids"])
        self.calls.prompts.append(dict(prompt))
        self.calls.params.append(sampling_params)
        stops = [params.stop] if isinstance(params.stop, str) else list(params.stop or [])
        eos = set(params.stop_token_ids or []) | {self.tokenizer.eos_token_id}
        gen = torch.Generator().manual_seed(params.seed) if params.seed is not None else None
        out_ids: list[int] = []
        self.calls.outputs.append(out_ids)
        self.calls.running += 1
        self.calls.max_running = max(self.calls.max_running, self.calls.running)
        sent = ""
        cache = None
        try:
            for _ in range(params.max_tokens):
                if self._dead:
                    raise EngineDeadError()
                async with self._lock:
                    logits, cache = await asyncio.to_thread(
                        self._forward, ids if cache is None else ids[-1:], cache, lora_request
                    )
                token = self._choose(logits, params, gen)
                ids.append(token)
                out_ids.append(token)
                text = ""
                if params.detokenize:
                    text = self.tokenizer.decode(out_ids, skip_special_tokens=params.skip_special_tokens)
                finish, stop_reason = None, None
                cut = [i for i in (text.find(s) for s in stops) if i >= 0]
                if cut:
                    text, finish, stop_reason = text[: min(cut)], "stop", stops[0]
                elif token in eos and not params.ignore_eos:
                    finish, stop_reason = "stop", token
                elif len(out_ids) >= params.max_tokens:
                    finish = "length"
                if finish is None and text.endswith("\ufffd"):
                    delta = ""
                else:
                    delta, sent = text[len(sent) :], text
                logprobs = (
                    None if params.logprobs is None else [self._logprobs(logits, token, params.logprobs)]
                )
                piece = CompletionOutput(0, delta, [token], None, logprobs, finish, stop_reason)
                yield RequestOutput(
                    request_id, None, prompt["prompt_token_ids"], None, [piece], finish is not None
                )
                if finish is not None:
                    return
        except (asyncio.CancelledError, GeneratorExit):
            await self.abort(request_id, internal=True)
            raise
        finally:
            self.calls.running -= 1

    def _forward(self, ids: list[int], cache: Any, lora: LoRARequest | None):
        import contextlib

        model = self.model if self.peft is None else self.peft
        ctx = contextlib.nullcontext()
        if self.peft is not None:
            if lora is None:
                ctx = self.peft.disable_adapter()
            else:
                self.peft.set_adapter(f"lora_{lora.lora_int_id}")
        with ctx, torch.inference_mode():
            out = model(input_ids=torch.tensor([ids]), past_key_values=cache, use_cache=True)
        return out.logits[0, -1], out.past_key_values

    @staticmethod
    def _logprobs(logits: torch.Tensor, token: int, k: int) -> dict[int, Logprob]:
        """vLLM's default ``raw_logprobs``: the sampled token and the ``k`` most likely, with ranks (1 = top)."""
        lp = torch.log_softmax(logits.float(), -1)
        out = {token: Logprob(float(lp[token]), int((lp > lp[token]).sum()) + 1)}
        values, ids = lp.topk(k) if k else (lp[:0], lp[:0].long())
        for rank, (v, t) in enumerate(zip(values.tolist(), ids.tolist(), strict=True), start=1):
            out.setdefault(t, Logprob(v, rank))
        return out

    @staticmethod
    def _choose(logits: torch.Tensor, params: SamplingParams, gen: torch.Generator | None) -> int:
        if params.temperature <= 0:
            return int(logits.argmax())
        probs = torch.softmax(logits.float() / params.temperature, -1)
        return int(torch.multinomial(probs, 1, generator=gen))


def install(monkeypatch: Any) -> types.SimpleNamespace:
    """Put the fake under vLLM's module names (``sys.modules``) for the duration of a test."""
    this = sys.modules[__name__]
    layout: dict[str, Iterable[str]] = {
        "vllm": (),
        "vllm.engine": (),
        "vllm.engine.arg_utils": ("EngineArgs", "AsyncEngineArgs"),
        "vllm.v1": (),
        "vllm.v1.engine": (),
        "vllm.v1.engine.async_llm": ("AsyncLLM",),
        "vllm.v1.engine.exceptions": ("EngineDeadError", "EngineGenerateError"),
        "vllm.lora": (),
        "vllm.lora.request": ("LoRARequest",),
        "vllm.lora.peft_helper": ("PEFTHelper",),
        "vllm.sampling_params": ("SamplingParams", "RequestOutputKind", "StructuredOutputsParams"),
        "vllm.outputs": ("RequestOutput", "CompletionOutput"),
        "vllm.exceptions": (
            "VLLMError",
            "VLLMClientError",
            "VLLMServerError",
            "GracefulHTTPError",
            "QueueOverflowError",
            "VLLMValidationError",
        ),
    }
    for name, attrs in layout.items():
        module = types.ModuleType(name)
        for attr in attrs:
            setattr(module, attr, getattr(this, attr))
        monkeypatch.setitem(sys.modules, name, module)
    return types.SimpleNamespace(**{a: getattr(this, a) for attrs in layout.values() for a in attrs})
