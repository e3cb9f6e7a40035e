"""GPU code paths of the recipe's building blocks: bf16 LoRA, packed sdpa attention, QLoRA with bitsandbytes
CUDA kernels, DeepSpeed ZeRO-2/3 with NCCL. Run with ``pytest -m gpu`` on a machine with a CUDA GPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

from tests.unit.training.test_builders import TARGETS, _dequantized_reference  # noqa: E402
from training.builders import build_deepspeed_config, build_lora_model, build_optimizer, trainable_parameters  # noqa: E402
from training.data import collate, pack, parse_example, render_example  # noqa: E402

QA = [
    {"prompt": f"question {i}: what is a feeder?", "completion": f"answer {i}: a line from the substation."}
    for i in range(16)
]


def _packed_batch(tiny_phi3: Path, device: str):
    from adept.models import load_tokenizer

    tok = load_tokenizer(tiny_phi3)
    rows = pack([render_example(tok, parse_example(x), 256)[:2] for x in QA], 256)
    batch = collate(rows, tok.pad_token_id, packed=True)
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}


def _loss(model, batch):
    logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.size(-1)),
        batch["labels"][:, 1:].reshape(-1),
        ignore_index=-100,
    )


def test_bf16_lora_trains_on_packed_rows(tiny_phi3: Path) -> None:
    model = build_lora_model(
        tiny_phi3, rank=8, alpha=16, dropout=0.0, device="cuda", dtype="auto", gradient_checkpointing=True
    )
    assert next(model.base_model.model.model.parameters()).dtype == torch.bfloat16  # auto -> bf16 on CUDA
    batch = _packed_batch(tiny_phi3, "cuda")
    opt = build_optimizer(trainable_parameters(model), lr=1e-2, weight_decay=0.0)
    losses = []
    for _ in range(20):
        loss = _loss(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5, losses


def test_packed_rows_do_not_leak_with_cuda_sdpa(tiny_phi3: Path) -> None:
    from transformers import AutoModelForCausalLM

    from adept.models import load_tokenizer

    tok = load_tokenizer(tiny_phi3)
    examples = [render_example(tok, parse_example(x), 256)[:2] for x in QA[:2]]
    (row,) = pack(examples, 512)
    batch = collate([row], tok.pad_token_id, packed=True)
    model = AutoModelForCausalLM.from_pretrained(
        str(tiny_phi3), dtype=torch.bfloat16, attn_implementation="sdpa"
    ).cuda()
    n0 = len(examples[0][0])
    with torch.no_grad():
        packed = model(
            input_ids=batch["input_ids"].cuda(), position_ids=batch["position_ids"].cuda(), use_cache=False
        ).logits[0, n0:]
        alone = model(input_ids=torch.tensor([examples[1][0]]).cuda(), use_cache=False).logits[0]
    torch.testing.assert_close(packed.float(), alone.float(), atol=2e-2, rtol=2e-2)


def test_qlora_cuda_gradients_match_a_dequantized_reference(tiny_phi3: Path) -> None:
    model = build_lora_model(
        tiny_phi3,
        rank=8,
        alpha=16,
        dropout=0.0,
        quantize_base=True,
        device="cuda",
        dtype="float32",
        compute_dtype="float32",
        seed=1,
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    ref = _dequantized_reference(tiny_phi3, model).cuda()
    ids = torch.randint(10, 500, (2, 24), device="cuda")
    model.eval()
    with torch.no_grad():
        model(input_ids=ids[:1, :5], use_cache=False)  # the CPU bug's trigger; must be harmless here too
    model.train()
    grads = []
    for m in (model, ref):
        m.zero_grad()
        m(input_ids=ids, labels=ids, use_cache=False).loss.backward()
        grads.append({n: p.grad.detach().clone() for n, p in m.named_parameters() if p.requires_grad})
    assert len(grads[0]) == 2 * 2 * len(TARGETS)
    worst = max(((grads[0][n] - grads[1][n]).norm() / grads[1][n].norm()).item() for n in grads[0])
    assert worst < 1e-3, worst


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_zero_on_nccl(tiny_phi3: Path, stage: int) -> None:
    deepspeed = pytest.importorskip("deepspeed")
    import torch.distributed as dist

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(29500 + stage), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0"
    )
    if not dist.is_initialized():
        dist.init_process_group("nccl", rank=0, world_size=1)
    model = build_lora_model(tiny_phi3, rank=8, alpha=16, dropout=0.0, device="cuda", dtype="bfloat16")
    opt = build_optimizer(trainable_parameters(model), lr=1e-2, weight_decay=0.0)
    cfg = build_deepspeed_config(
        stage=stage, micro_batch_size=2, grad_accum_steps=1, max_grad_norm=1.0, bf16=True
    )
    engine, *_ = deepspeed.initialize(model=model, optimizer=opt, config=cfg, dist_init_required=False)
    batch = _packed_batch(tiny_phi3, "cuda")
    losses = []
    for _ in range(15):
        loss = _loss(engine, batch)
        engine.backward(loss)
        engine.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.3, losses
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    with deepspeed.zero.GatheredParameters([p for _, p in named], modifier_rank=None):
        shapes = {n: tuple(p.shape) for n, p in named}
    assert all(len(s) == 2 and min(s) == 8 for s in shapes.values()), (
        "gathered LoRA weights are whole matrices"
    )
