"""LoRA slots compute what peft computes: per targeted module type, mixed batches, reused slots, refusals.

Real PEFT adapters (random non-zero A and B) on the tiny random Phi-3; the reference is peft's own
``PeftModel`` holding the same adapter, on its own copy of the base model.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from adept.errors import InvalidRequest
from services.llm.lora_slots import BASE, LoraSlots

ATOL = 2e-5  # float32


def save_lora(model, dest: Path, seed: int, targets: list[str], **config) -> Path:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config.setdefault("r", 8)
    config.setdefault("lora_alpha", 16)
    lora = LoraConfig(target_modules=targets, init_lora_weights=False, **config)
    get_peft_model(copy.deepcopy(model), lora).save_pretrained(dest)
    return dest


@pytest.fixture(scope="module")
def base(tiny_phi3):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_phi3).eval()


def peft_logits(base, adapter: Path | None, ids: torch.Tensor) -> torch.Tensor:
    from peft import PeftModel

    model = copy.deepcopy(base)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter)).eval()
    with torch.inference_mode():
        return model(input_ids=ids).logits


def slot_logits(slots: LoraSlots, rows: list[int], ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return slots.forward(slots=rows, input_ids=ids).logits


def prompt_ids(base, rows: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, base.config.vocab_size, (rows, 9), generator=g)


@pytest.mark.parametrize(
    ("module", "config"),
    [
        ("qkv_proj", {"r": 8, "lora_alpha": 16}),
        ("o_proj", {"r": 4, "lora_alpha": 32}),
        ("gate_up_proj", {"r": 16, "lora_alpha": 8, "use_rslora": True}),
        ("down_proj", {"r": 8, "lora_alpha": 16, "rank_pattern": {"layers.1.mlp.down_proj": 2},
                       "alpha_pattern": {"layers.1.mlp.down_proj": 4}}),
    ],
)  # fmt: skip
def test_one_module_type_equals_peft(base, tmp_path, module, config):
    adapter = save_lora(base, tmp_path / module, seed=7, targets=[module], **config)
    slots = LoraSlots(copy.deepcopy(base), max_loras=2, max_lora_rank=16)
    slots.inject(1, slots.prepare(adapter))
    ids = prompt_ids(base, 2)
    want = peft_logits(base, adapter, ids)
    got = slot_logits(slots, [1, 1], ids)
    assert not torch.allclose(want, peft_logits(base, None, ids), atol=1e-3)  # the adapter matters
    torch.testing.assert_close(got, want, atol=ATOL, rtol=1e-4)


def test_a_mixed_batch_equals_each_row_alone_and_peft(base, tmp_path):
    adapters = [
        save_lora(base, tmp_path / "attn", 1, ["qkv_proj", "o_proj"], r=8),
        save_lora(base, tmp_path / "mlp", 2, ["gate_up_proj", "down_proj"], r=4, lora_alpha=4),
        save_lora(base, tmp_path / "all", 3, ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"], r=16),
    ]
    slots = LoraSlots(copy.deepcopy(base), max_loras=4, max_lora_rank=16)
    for slot, adapter in enumerate(adapters):
        slots.inject(slot, slots.prepare(adapter))
    rows = [0, BASE, 1, 2, 0, BASE, 2]
    ids = prompt_ids(base, len(rows), seed=1)
    mixed = slot_logits(slots, rows, ids)
    for i, slot in enumerate(rows):
        alone = slot_logits(slots, [slot], ids[i : i + 1])
        torch.testing.assert_close(mixed[i : i + 1], alone, atol=ATOL, rtol=1e-4)
        reference = peft_logits(base, None if slot == BASE else adapters[slot], ids[i : i + 1])
        torch.testing.assert_close(mixed[i : i + 1], reference, atol=ATOL, rtol=1e-4)


def test_a_reused_slot_keeps_nothing_of_its_previous_adapter(base, tmp_path):
    big = save_lora(base, tmp_path / "big", 4, ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"], r=16)
    small = save_lora(base, tmp_path / "small", 5, ["down_proj"], r=2)
    slots = LoraSlots(copy.deepcopy(base), max_loras=1, max_lora_rank=16)
    slots.inject(0, slots.prepare(big))
    slots.release(0)
    slots.inject(0, slots.prepare(small))
    ids = prompt_ids(base, 1, seed=2)
    torch.testing.assert_close(
        slot_logits(slots, [0], ids), peft_logits(base, small, ids), atol=ATOL, rtol=1e-4
    )
    assert slots.names == [str(small)]


def test_adapters_run_in_the_models_dtype_and_match_peft_in_bf16(base, tmp_path):
    adapter = save_lora(base, tmp_path / "a", 6, ["qkv_proj", "down_proj"])
    model = copy.deepcopy(base).to(torch.bfloat16)
    slots = LoraSlots(model, max_loras=1, max_lora_rank=8)
    slots.inject(0, slots.prepare(adapter))
    assert {t.dtype for pair in slots._stacks.values() for t in pair} == {torch.bfloat16}
    ids = prompt_ids(base, 1, seed=3)
    want = peft_logits(base, adapter, ids)  # the float32 reference
    got = slot_logits(slots, [0], ids).float()
    assert (got - want).abs().max() < 0.1 * want.abs().max()


def _edit_config(adapter: Path, **changes) -> None:
    path = adapter / "adapter_config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_adapters_the_slots_cannot_serve_are_refused_clearly(base, tmp_path):
    slots = LoraSlots(copy.deepcopy(base), max_loras=1, max_lora_rank=8)
    too_big = save_lora(base, tmp_path / "r16", 1, ["o_proj"], r=16)
    with pytest.raises(InvalidRequest, match=r"rank 16 exceeds .* max_lora_rank 8") as err:
        slots.prepare(too_big)
    assert err.value.code == "adapter_incompatible" and err.value.status == 400

    dora = save_lora(base, tmp_path / "dora", 2, ["o_proj"], use_dora=True)
    with pytest.raises(InvalidRequest, match="DoRA"):
        slots.prepare(dora)

    embedding = save_lora(base, tmp_path / "emb", 3, ["embed_tokens"])
    with pytest.raises(InvalidRequest, match="not a LoRA A/B matrix of a linear layer"):
        slots.prepare(embedding)

    biased = save_lora(base, tmp_path / "bias", 4, ["o_proj"], lora_bias=True)
    with pytest.raises(InvalidRequest, match="lora_bias"):
        slots.prepare(biased)

    lying = save_lora(base, tmp_path / "lying", 5, ["o_proj"], r=16)
    _edit_config(lying, r=4)  # the config says 4, the weights are rank 16
    with pytest.raises(InvalidRequest, match="rank 16"):
        slots.prepare(lying)
    assert slots.names == [] and not slots._layers  # nothing reached the model


def test_an_adapter_for_another_base_model_is_refused(tiny_phi3, base, tmp_path):
    from transformers import AutoModelForCausalLM, Phi3Config

    config = Phi3Config.from_pretrained(tiny_phi3)
    config.hidden_size, config.intermediate_size = 32, 64
    other = AutoModelForCausalLM.from_config(config)
    adapter = save_lora(other, tmp_path / "other", 1, ["o_proj"])
    slots = LoraSlots(copy.deepcopy(base), max_loras=1, max_lora_rank=8)
    with pytest.raises(ValueError, match="do not fit this base model"):
        slots.prepare(adapter)


def test_slots_are_preallocated_once_per_targeted_layer(base, tmp_path):
    slots = LoraSlots(copy.deepcopy(base), max_loras=3, max_lora_rank=8)
    first = slots.prepare(save_lora(base, tmp_path / "a", 1, ["o_proj"]))
    allocated = dict(slots._stacks)
    assert set(allocated) == {f"model.layers.{i}.self_attn.o_proj" for i in range(2)}
    a, b = allocated["model.layers.0.self_attn.o_proj"]
    assert a.shape == (4, 8, 64) and b.shape == (4, 8, 64)  # 3 slots + the zero slot, padded to rank 8
    slots.inject(0, first)
    slots.inject(2, slots.prepare(save_lora(base, tmp_path / "b", 2, ["o_proj"], r=4)))
    assert all(slots._stacks[k][0] is allocated[k][0] for k in allocated)  # copied in, never reallocated
