"""Round trip of a real PEFT LoRA adapter on a tiny random Phi-3 through the registry."""

from __future__ import annotations

import pytest

from adept.adapters import AdapterRegistry
from adept.errors import Conflict
from adept.models import canonical_model_id


def test_lora_adapter_round_trip_gives_identical_outputs(tiny_phi3, tmp_path):
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_phi3, dtype=torch.float32)
    model = get_peft_model(
        base, LoraConfig(r=4, lora_alpha=8, target_modules=["qkv_proj", "o_proj"], init_lora_weights=False)
    )
    model.eval()
    ids = torch.tensor([[1, 5, 9, 42, 7, 3]])
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        with model.disable_adapter():
            base_logits = model(input_ids=ids).logits
    assert not torch.allclose(expected, base_logits)  # the adapter really changes the model
    src = tmp_path / "trained"
    model.save_pretrained(src)

    base_id = canonical_model_id(str(tiny_phi3))
    registry = AdapterRegistry(str(tmp_path / "store"))
    published = registry.publish(
        "acme", "legal", src, {"base_model": base_id}, expected_base_model=str(tiny_phi3)
    )
    with pytest.raises(Conflict):
        registry.publish(
            "acme",
            "legal",
            src,
            {"base_model": "microsoft/Phi-3-mini-4k-instruct"},
            expected_base_model=base_id,
        )

    got = registry.resolve("acme", "legal")
    assert got.id == published.id == "acme/legal@v1"
    assert got.manifest.rank == 4 and sorted(got.manifest.target_modules) == ["o_proj", "qkv_proj"]
    fresh = AutoModelForCausalLM.from_pretrained(tiny_phi3, dtype=torch.float32)
    reloaded = PeftModel.from_pretrained(fresh, got.path).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).logits, expected)
