"""Builders: turn plain arguments into the objects a recipe trains with.

Each builder takes plain values, never the whole job config, so recipes, benchmarks and tests
share them. QLoRA is ``build_lora_model(..., quantize_base=True)``: the same LoRA path over a
4-bit NF4 base (bitsandbytes), loaded through ``adept.models.load_causal_lm``, which applies the
AVX512-BF16 CPU workaround (see ENVIRONMENT.md).
"""

from __future__ import annotations

import math
from typing import Any

from adept.config.training import default_target_modules


def build_tokenizer(model_dir: Any) -> Any:
    """The base model's tokenizer, with a pad token; fails when it has no chat template."""
    from adept.errors import InvalidRequest
    from adept.models import load_tokenizer

    tok = load_tokenizer(model_dir)
    if not getattr(tok, "chat_template", None):
        raise InvalidRequest(f"the tokenizer in {model_dir} has no chat template; use an instruct/chat model")
    return tok


def build_lora_model(
    model_dir: Any,
    *,
    rank: int,
    alpha: float,
    dropout: float,
    target_modules: list[str] | None = None,
    quantize_base: bool = False,
    quant_type: str = "nf4",
    double_quant: bool = True,
    compute_dtype: str = "auto",
    device: str = "cpu",
    dtype: str = "auto",
    gradient_checkpointing: bool = False,
    seed: int = 0,
    init_adapter: str | None = None,
) -> Any:
    """Load the base model (4-bit when ``quantize_base``) and wrap it with fresh LoRA adapters
    (or, with ``init_adapter``, with that PEFT adapter's weights as the starting point).

    Returns:
        A ``peft.PeftModel`` whose only trainable parameters are the LoRA matrices.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    from adept.models import disable_bnb_cpu_bf16_kernel, load_causal_lm

    model = load_causal_lm(
        model_dir,
        device=device,
        dtype=dtype,
        load_in_4bit=quantize_base,
        bnb_4bit_quant_type=quant_type,
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=None if compute_dtype == "auto" else compute_dtype,
    )
    model.config.use_cache = False  # the KV cache is useless in training and conflicts with checkpointing
    gc_kwargs = {"use_reentrant": False}
    if quantize_base:
        # Not peft's prepare_model_for_kbit_training: it upcasts every non-4-bit parameter
        # (embeddings, lm_head, norms) to fp32, which makes all activations fp32 and QLoRA use
        # more memory than bf16 LoRA. Freezing the base is all the 4-bit path needs here.
        for param in model.parameters():
            param.requires_grad = False
        disable_bnb_cpu_bf16_kernel(model)  # idempotent; keeps the guarantee local to this builder too
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs)
    targets = target_modules or default_target_modules(model.config.model_type)
    lora = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(seed)  # same adapter init on every worker and every run
    # LoRA weights in the compute dtype of the base (bf16 with bf16): PEFT's default keeps them in
    # fp32 beside a bf16 base, which casts activations at every adapted layer, both ways, every step.
    # The 4-bit path keeps PEFT's default (its compute dtype is bnb's, set above).
    peft_model = get_peft_model(model, lora, autocast_adapter_dtype=quantize_base)
    if init_adapter:  # fine-tuning a fine-tuned model: go on from its weights
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(peft_model, load_file(f"{init_adapter}/adapter_model.safetensors"))
    return peft_model


def trainable_parameters(model: Any) -> list[Any]:
    return [p for p in model.parameters() if p.requires_grad]


def build_optimizer(params: list[Any], *, lr: float, weight_decay: float) -> Any:
    """AdamW over the adapter weights: the fused kernel (one launch for all tensors) where torch has it."""
    import torch

    kwargs = {"lr": lr, "weight_decay": weight_decay, "betas": (0.9, 0.999), "eps": 1e-8}
    fusable = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    if fusable:
        try:
            return torch.optim.AdamW(params, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError):  # an older torch, or a dtype/device it does not fuse
            pass
    return torch.optim.AdamW(params, **kwargs)


def build_scheduler(optimizer: Any, *, schedule: str, warmup_steps: int, total_steps: int) -> Any:
    """Linear warm-up, then cosine / linear decay to 0, or constant."""
    import torch

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def build_deepspeed_config(
    *,
    stage: int,
    micro_batch_size: int,
    grad_accum_steps: int,
    max_grad_norm: float,
    bf16: bool,
    offload_optimizer: bool = False,
    offload_params: bool = False,
) -> dict[str, Any]:
    """A DeepSpeed config for ZeRO-2/3 with a client (torch) optimizer and scheduler."""
    zero: dict[str, Any] = {"stage": stage, "overlap_comm": False, "contiguous_gradients": True}
    if offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    if stage == 3:
        # Gathering the (small) adapter for saving must not trip the live-parameter limits.
        zero.update(stage3_gather_16bit_weights_on_model_save=False, stage3_param_persistence_threshold=0)
    return {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": grad_accum_steps,
        "gradient_clipping": max_grad_norm if max_grad_norm > 0 else 0.0,
        "zero_optimization": zero,
        "bf16": {"enabled": bf16},
        # Our AdamW is a plain torch optimizer; DeepSpeed only vouches for its own.
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
