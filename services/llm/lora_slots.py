"""LoRA adapters in preallocated, stacked weight slots; one batched LoRA product for a mixed batch.

As S-LoRA/Punica and vLLM's ``max_loras`` do: every targeted ``nn.Linear`` of the base model gets
two stacked tensors, ``A [max_loras + 1, max_lora_rank, in]`` and ``B [max_loras + 1,
max_lora_rank, out]``, in the model's dtype and on its device. Slot ``s`` holds one adapter
(its rank ``r`` in the first ``r`` rows of each, zeros beyond; zeros in a module it does not target);
the last slot stays zero for base rows. A forward pass names a slot per row (``BASE`` = -1 for
the base model) and each wrapped layer adds, for the whole batch at once::

    y = base(x) + bmm(bmm(x, A[slot_of_row, :R]ᵀ), B[slot_of_row, :R])

(a gather of each row's A and B by its slot, then two batched matmuls: BGMV), where ``R`` is the
largest rank among the slots the batch uses, so a rank-8 batch never pays for ``max_lora_rank``.
The scaling (``alpha / r``, or ``alpha / sqrt(r)`` with rsLoRA) is folded into B when prepared.
The cost of a step barely depends on how many adapters the batch mixes: no loop per adapter.

Loading is split so the model thread only copies: ``prepare`` (any thread) reads the config and
the safetensors, validates them, folds the scaling, converts to the model's dtype and device in
the stack layout, and allocates a module's stacks the first time an adapter targets it;
``inject`` (the model thread, between steps) copies the prepared tensors into one slot and zeroes
what an earlier occupant left there — a copy of the adapter's own size, no module surgery.

Only plain LoRA on ``nn.Linear`` layers is computed here: DoRA, trained biases, modules_to_save,
embedding LoRA and the like are refused with ``InvalidRequest`` (``adapter_incompatible``), as
publishing refuses them (``adept.adapter_compat``) and vLLM's kernels would.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adept.adapter_compat import ServingLimits, check_adapter_compatible
from adept.errors import InvalidRequest

BASE = -1  # the slot index of a base-model row
_PREFIX = "base_model.model."  # how peft names the wrapped model's modules in adapter_model.safetensors
# adapter_config.json features whose math the slot product does not compute (set: refused).
_UNSUPPORTED = (
    "lora_bias",
    "fan_in_fan_out",
    "layer_replication",
    "use_qalora",
    "alora_invocation_tokens",
    "target_parameters",
    "trainable_token_indices",
    "use_bdlora",
    "arrow_config",
    "kasa_config",
    "monteclora_config",
)


@dataclass(frozen=True)
class PreparedAdapter:
    """An adapter read from disk, validated, in the stack layout, dtype and device of the model.

    ``modules`` maps a module path (``model.layers.0.self_attn.qkv_proj``) to ``(A [r, in],
    B [r, out])``, the scaling already folded into B.
    """

    source: str
    rank: int
    modules: dict[str, tuple[torch.Tensor, torch.Tensor]]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes + b.nbytes for a, b in self.modules.values())


class _Batch:
    """What the wrapped layers read during one forward pass: each row's slot, as a device index."""

    def __init__(self, index: torch.Tensor, used: tuple[int, ...], single: int | None) -> None:
        self.index = index  # [rows]: the stack index of each row (the zero slot for base rows)
        self.used = used  # distinct stack indices in the batch
        self.single = single  # the one slot every row uses, if so (a plain matmul, no gather)


class SlotLinear(nn.Module):
    """An ``nn.Linear`` plus its adapters' slots: ``base(x) + x A_row B_row`` for every row at once."""

    def __init__(self, base: nn.Linear, owner: LoraSlots, lora_a: torch.Tensor, lora_b: torch.Tensor) -> None:
        super().__init__()
        self.base = base
        self.owner = owner  # not a submodule: a plain reference
        # [slots + 1, R, in], [slots + 1, R, out]: a slot's first r rows are one contiguous block each.
        self.lora_a, self.lora_b = lora_a, lora_b
        self.ranks = [0] * lora_a.shape[0]  # columns of each slot that may be non-zero

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        batch = self.owner.batch
        if batch is None:
            return out
        r = max(self.ranks[s] for s in batch.used)
        if r == 0:
            return out  # no row's adapter targets this layer
        if batch.single is not None:
            s = batch.single
            return out + (x @ self.lora_a[s, :r].t()) @ self.lora_b[s, :r]
        a = self.lora_a[:, :r].index_select(0, batch.index)  # [rows, r, in]
        b = self.lora_b[:, :r].index_select(0, batch.index)  # [rows, r, out]
        rows = x.shape[0]
        h = torch.bmm(x.reshape(rows, -1, x.shape[-1]), a.transpose(1, 2))
        return torch.baddbmm(out.reshape(rows, -1, out.shape[-1]), h, b).reshape(out.shape)


class LoraSlots:
    """The base model with ``max_loras`` adapter slots. ``inject`` and ``forward``: model thread only.

    Args:
        model: the base causal LM (on its device, in its dtype).
        max_loras: slots (adapters resident at once; ``LLMConfig.max_adapters_per_replica``).
        max_lora_rank: largest rank a slot holds (``PlatformConfig.max_lora_rank``).
    """

    def __init__(self, model: Any, *, max_loras: int = 8, max_lora_rank: int = 64) -> None:
        if max_loras < 1 or max_lora_rank < 1:
            raise ValueError(f"max_loras ({max_loras}) and max_lora_rank ({max_lora_rank}) must be >= 1")
        self.model = model
        self.max_loras, self.max_lora_rank = max_loras, max_lora_rank
        self.limits = ServingLimits(max_lora_rank=max_lora_rank)
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        # Every Linear an adapter may target, with its shape; read once, so ``prepare`` never walks
        # the model while the model thread swaps layers in.
        self._linears = {
            n: (m.in_features, m.out_features) for n, m in model.named_modules() if isinstance(m, nn.Linear)
        }
        self._stacks: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # allocated by prepare
        self._layers: dict[str, SlotLinear] = {}  # installed by inject
        self._alloc = threading.Lock()
        self.batch: _Batch | None = None
        self.occupants: dict[int, str] = {}  # slot -> where its adapter came from

    @property
    def zero_slot(self) -> int:
        return self.max_loras

    @property
    def names(self) -> list[str]:
        """Where the adapters in occupied slots came from (their directories)."""
        return [self.occupants[s] for s in sorted(self.occupants)]

    @property
    def nbytes(self) -> int:
        """Memory the slot stacks take (all modules adapters have targeted so far)."""
        return sum(a.nbytes + b.nbytes for a, b in self._stacks.values())

    # -- loading ------------------------------------------------------------------------------
    def prepare(self, path: Path) -> PreparedAdapter:
        """Read, validate and convert the PEFT adapter in ``path``; touches no running state (any thread).

        Raises:
            InvalidRequest: a feature or rank these slots cannot serve (``adapter_incompatible``).
            FileNotFoundError, ValueError, OSError, RuntimeError: unreadable or malformed adapter files.
        """
        from safetensors.torch import load_file

        path = Path(path)
        config_file = path / "adapter_config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"no adapter_config.json in {path}")
        config = json.loads(config_file.read_text())
        if not isinstance(config, dict):
            raise ValueError("adapter_config.json is not a JSON object")
        problems = check_adapter_compatible(config, self.limits)
        problems += [f"{key}={config[key]!r} is not supported" for key in _UNSUPPORTED if config.get(key)]
        weights_file = path / "adapter_model.safetensors"
        if not weights_file.is_file():
            raise FileNotFoundError(f"no adapter_model.safetensors in {path}")
        # load_file maps the file; every tensor is copied below, so later changes to it change nothing.
        weights = load_file(str(weights_file), device="cpu")
        pairs: dict[str, dict[str, torch.Tensor]] = {}
        for key, tensor in weights.items():
            module, kind = _split_key(key)
            if module is None or module not in self._linears:
                problems.append(f"weight {key} is not a LoRA A/B matrix of a linear layer of this base model")
                continue
            pairs.setdefault(module, {})[kind] = tensor
        if problems:
            raise InvalidRequest(
                "the adapter cannot be served: " + "; ".join(sorted(set(problems))[:8]),
                code="adapter_incompatible",
                param="adapter",
            )
        if not pairs:
            raise ValueError("adapter_model.safetensors holds no LoRA weights")
        alpha = config.get("lora_alpha", 8)
        alpha_pattern = config.get("alpha_pattern") or {}
        modules: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for module, pair in pairs.items():
            if set(pair) != {"A", "B"}:
                raise ValueError(f"adapter weights do not match its config: {module} lacks lora_A or lora_B")
            a, b = pair["A"], pair["B"]
            fan_in, fan_out = self._linears[module]
            r = a.shape[0]
            if a.shape != (r, fan_in) or b.shape != (fan_out, r):
                raise ValueError(
                    f"adapter weights do not fit this base model: {module} is {fan_in}->{fan_out}, "
                    f"its LoRA A is {tuple(a.shape)} and B {tuple(b.shape)}"
                )
            if r > self.max_lora_rank:
                raise InvalidRequest(
                    f"the adapter cannot be served: LoRA rank {r} of {module} exceeds this platform's "
                    f"max_lora_rank {self.max_lora_rank}",
                    code="adapter_incompatible",
                    param="adapter",
                )
            # The rank is the weights' (rank_pattern only told peft how to build them); alpha may vary too.
            key = _pattern_key(alpha_pattern, module)
            module_alpha = alpha_pattern[key] if key is not None else alpha
            scale = module_alpha / math.sqrt(r) if config.get("use_rslora") else module_alpha / r
            # Folded in fp32, then one cast: (x A) (scale B) is peft's scale * B(A(x)).
            a_r = a.to(device=self.device, dtype=self.dtype, copy=True).contiguous()
            b_t = (b.float() * scale).t().to(device=self.device, dtype=self.dtype).contiguous()
            modules[module] = (a_r, b_t)
        self._allocate(list(modules))
        return PreparedAdapter(str(path), max(a.shape[0] for a, _b in modules.values()), modules)

    def _allocate(self, modules: list[str]) -> None:
        """Zeroed stacks for modules no adapter targeted before (worker thread; the model reads none yet)."""
        with self._alloc:
            for module in modules:
                if module in self._stacks:
                    continue
                fan_in, fan_out = self._linears[module]
                n, r = self.max_loras + 1, self.max_lora_rank
                self._stacks[module] = (
                    torch.zeros((n, r, fan_in), dtype=self.dtype, device=self.device),
                    torch.zeros((n, r, fan_out), dtype=self.dtype, device=self.device),
                )

    def inject(self, slot: int, prepared: PreparedAdapter) -> None:
        """Model thread, between steps: copy ``prepared`` into ``slot``, zeroing what was there before."""
        if not 0 <= slot < self.max_loras:
            raise ValueError(f"slot {slot} is outside 0..{self.max_loras - 1}")
        for module in prepared.modules:
            if module not in self._layers:
                self._install(module)
        for module, layer in self._layers.items():
            old = layer.ranks[slot]
            new = prepared.modules.get(module)
            if new is None:
                if old:
                    layer.lora_a[slot, :old].zero_()
                    layer.lora_b[slot, :old].zero_()
                layer.ranks[slot] = 0
                continue
            a, b = new
            r = a.shape[0]
            layer.lora_a[slot, :r].copy_(a)
            layer.lora_b[slot, :r].copy_(b)
            if old > r:
                layer.lora_a[slot, r:old].zero_()
                layer.lora_b[slot, r:old].zero_()
            layer.ranks[slot] = r
        self.occupants[slot] = prepared.source

    def _install(self, module: str) -> None:
        """Put a ``SlotLinear`` around the base layer ``module`` (model thread)."""
        parent_name, _, child = module.rpartition(".")
        parent = self.model.get_submodule(parent_name) if parent_name else self.model
        base = getattr(parent, child)
        lora_a, lora_b = self._stacks[module]
        layer = SlotLinear(base, self, lora_a, lora_b)
        setattr(parent, child, layer)
        self._layers[module] = layer

    def release(self, slot: int) -> None:
        """``slot`` holds no adapter any more (bookkeeping: its tensors are overwritten by the next inject)."""
        self.occupants.pop(slot, None)

    # -- computing ----------------------------------------------------------------------------
    def forward(self, *, slots: list[int], **kwargs: Any) -> Any:
        """One forward pass of the model; row ``i`` uses slot ``slots[i]`` (``BASE``: no adapter)."""
        stacked = [self.zero_slot if s == BASE else s for s in slots]
        used = tuple(sorted(set(stacked)))
        if not self._layers or used == (self.zero_slot,):
            return self.model(**kwargs)
        index = torch.tensor(stacked, device=self.device)
        self.batch = _Batch(index, used, used[0] if len(used) == 1 else None)
        try:
            return self.model(**kwargs)
        finally:
            self.batch = None


def _split_key(key: str) -> tuple[str | None, str]:
    """``base_model.model.<module>.lora_A.weight`` -> ``(<module>, "A")``; ``(None, "")`` for anything else."""
    for kind in ("A", "B"):
        suffix = f".lora_{kind}.weight"
        if key.startswith(_PREFIX) and key.endswith(suffix):
            return key[len(_PREFIX) : -len(suffix)], kind
    return None, ""


def _pattern_key(patterns: dict[str, Any], module: str) -> str | None:
    """The ``alpha_pattern`` key that applies to ``module``, as peft matches it (``get_pattern_key``)."""
    import re

    for key in patterns:
        if re.match(rf"(.*\.)?({key})$", module):
            return key
    return None
