"""Fixtures for the LLM engine tests: the tiny Phi-3, real random LoRA adapters, a fresh engine."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.llm.protocol import GenerateRequest


def make_lora(model, dest: Path, seed: int) -> Path:
    """Save a real PEFT LoRA adapter for ``model`` with random non-zero A and B (so it changes outputs)."""
    import copy

    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["qkv_proj", "o_proj"], init_lora_weights=False)
    get_peft_model(copy.deepcopy(model), config).save_pretrained(dest)
    return dest


@pytest.fixture(scope="session")
def lora_dirs(tiny_phi3: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("loras")
    model = AutoModelForCausalLM.from_pretrained(tiny_phi3)
    return {name: make_lora(model, root / name, seed) for name, seed in (("a1", 1), ("a2", 2), ("a3", 3))}


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread: tiny matmuls gain nothing from two, and spin-waiting threads crawl on a busy CI box."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def make_engine(tiny_phi3: Path):
    """Build engines on a freshly loaded tiny model (LoRA slots wrap its layers in place, so never share one)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from services.llm.engine import Engine

    engines = []

    def build(**kwargs) -> Engine:
        kwargs.setdefault("batch_wait_ms", 0)
        kwargs.setdefault("max_tokens_limit", 128)
        eng = Engine(
            AutoModelForCausalLM.from_pretrained(tiny_phi3),
            AutoTokenizer.from_pretrained(tiny_phi3),
            **kwargs,
        )
        engines.append(eng)
        return eng

    yield build
    for eng in engines:
        eng._exec.shutdown(wait=True)


async def collect(engine, req: GenerateRequest, adapter_id: str = ""):
    """Run one request to the end: ``(text, last_chunk, number_of_chunks)``."""
    parts, last, n = [], None, 0
    async for chunk in engine.generate(req, adapter_id):
        parts.append(chunk.text)
        last, n = chunk, n + 1
    return "".join(parts), last, n


def chat(text: str, **kwargs) -> GenerateRequest:
    kwargs.setdefault("temperature", 0.0)
    kwargs.setdefault("max_tokens", 16)
    return GenerateRequest(messages=[{"role": "user", "content": text}], **kwargs)


def run(coro):
    return asyncio.run(coro)


def inject_fault(engine, predicate, error: BaseException):
    """Fault injection into the real model: raise ``error`` when a forward pass matches ``predicate``.

    ``predicate(input_ids, position_ids)`` sees the tensors the transformer body receives (after
    peft), so a test can fail exactly one request's prefill or one row's decode step. This injects a
    failure (as a CUDA OOM would strike); it does not stand in for any component.
    """
    body = engine.slots.model.model  # the decoder stack (LoRA slots wrap its linear layers, not it)

    def hook(_module, _args, kwargs):
        if predicate(kwargs.get("input_ids"), kwargs.get("position_ids")):
            raise error

    return body.register_forward_pre_hook(hook, with_kwargs=True)


def broken_lora(model, dest: Path, seed: int) -> Path:
    """A PEFT adapter whose B weights are NaN: loads fine, then poisons every row that uses it."""
    from safetensors.torch import load_file, save_file

    make_lora(model, dest, seed)
    weights = load_file(dest / "adapter_model.safetensors")
    for name, tensor in weights.items():
        if "lora_B" in name:
            tensor.fill_(float("nan"))
    save_file(weights, dest / "adapter_model.safetensors")
    return dest


@pytest.fixture(scope="session")
def tiny_phi3_sentencepiece(tiny_phi3: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Phi-3 with a SentencePiece-layout tokenizer (``▁`` spaces, byte fallback, Strip decoder)."""
    import shutil

    from tests.assets.byte_fallback import build_byte_fallback_tokenizer

    dest = tmp_path_factory.mktemp("phi3-sp") / "model"
    shutil.copytree(tiny_phi3, dest)
    for f in dest.glob("*token*"):
        f.unlink()
    tokenizer = build_byte_fallback_tokenizer()
    tokenizer.save_pretrained(dest)
    return dest
