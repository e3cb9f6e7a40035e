"""The real vLLM engine on a GPU through Ray Serve: streaming, tenants' adapters, unload (``-m gpu``).

Runs where a CUDA GPU and ``vllm==0.29.0`` are installed (the CUDA image; see
docs/serving-llm.md, "Verifying on a GPU cluster"). Everything else about the vLLM engine's
contract is tested against the fake in tests/unit/llm/test_vllm_engine.py.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from adept.adapters import AdapterRegistry
from adept.errors import InvalidRequest, NotFound
from services.llm.protocol import GenerateRequest

pytestmark = [pytest.mark.gpu, pytest.mark.integration]


@pytest.fixture(scope="module")
def vllm_handle(bundled_model: Path, short_tmp: Path, tmp_path_factory: pytest.TempPathFactory):
    import ray
    import torch
    from peft import LoraConfig, get_peft_model
    from ray import serve
    from transformers import AutoModelForCausalLM

    from services.llm.deployment import LLMDeployment

    assert torch.cuda.is_available(), "the gpu tier needs a CUDA device"
    data = tmp_path_factory.mktemp("vllm-data")
    registry = AdapterRegistry(str(data / "adapters"))
    base = AutoModelForCausalLM.from_pretrained(bundled_model)
    for name, seed, extra in (("a1", 1, {}), ("dora", 2, {"use_dora": True})):
        torch.manual_seed(seed)
        config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], **extra)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(bundled_model), config)
        for pname, p in model.named_parameters():
            if "lora_B" in pname:
                torch.nn.init.normal_(p, std=0.01)
        model.save_pretrained(data / "src" / name)
        registry.publish("acme", name, data / "src" / name, {"base_model": "bundled"})
    del base
    env = {k: os.environ[k] for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if k in os.environ}
    ray.init(
        num_gpus=1, include_dashboard=False, _temp_dir=str(short_tmp / "ray"), runtime_env={"env_vars": env}
    )
    try:
        platform = {
            "data_dir": str(data),
            "model": str(bundled_model),
            "device": "cuda",
            "dtype": "bfloat16",
            "max_lora_rank": 16,
        }
        llm = {"engine": "vllm", "max_tokens_limit": 64, "default_max_tokens": 32}
        app = LLMDeployment.options(ray_actor_options={"num_cpus": 1, "num_gpus": 1}).bind(platform, llm)
        yield serve.run(app, name="vllm-test", route_prefix=None)
    finally:
        serve.shutdown()
        ray.shutdown()


async def _answer(handle, model_id: str, text: str, **kw) -> tuple[str, list]:
    req = GenerateRequest(messages=[{"role": "user", "content": text}], temperature=0, max_tokens=24, **kw)
    chunks = [
        c async for c in handle.options(multiplexed_model_id=model_id, stream=True).generate.remote(req)
    ]
    return "".join(c.text for c in chunks), chunks


def test_vllm_replica_streams_adapters_and_refuses_dora(vllm_handle):
    async def main():
        base = await _answer(vllm_handle, "", "Say hello in Thai and in Chinese.")
        tuned = await _answer(vllm_handle, "acme/a1@v1", "Say hello in Thai and in Chinese.")
        return base, tuned

    (base_text, base_chunks), (tuned_text, _) = asyncio.run(main())
    assert base_chunks[-1].finish_reason in ("stop", "length") and len(base_chunks) > 2
    assert "\ufffd" not in base_text and base_text != tuned_text
    info = vllm_handle.info.remote().result()
    assert info["engine"] == "vllm" and info["loaded_adapters"] == ["acme/a1@v1"]
    with pytest.raises(InvalidRequest, match="DoRA"):
        asyncio.run(_answer(vllm_handle, "acme/dora@v1", "hi"))
    assert vllm_handle.unload.remote("acme/a1@v1").result()
    with pytest.raises(NotFound):
        asyncio.run(_answer(vllm_handle, "acme/ghost@v1", "hi"))
