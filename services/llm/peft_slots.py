"""Many LoRA adapters in one peft model, added and removed by name while the base stays loaded.

The base model is wrapped in a ``PeftModel`` when the first adapter arrives. From then on every
forward pass names an adapter per row (``adapter_names``, ``"__base__"`` for base rows): peft
runs the base layer once for the whole batch and each adapter's LoRA product on its rows only.

Loading is split so the model thread only pays for the injection: ``prepare`` (any thread) reads
the config and the weights and casts them to the base model's dtype and device; ``inject`` (the
model thread, between steps) creates the LoRA modules on the meta device and assigns the
prepared tensors — no random initialisation, no fp32 copies next to a bf16 base.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BASE = "__base__"


@dataclass(frozen=True)
class PreparedAdapter:
    """An adapter read from disk, its tensors already in the base model's dtype and on its device."""

    config: Any  # peft.PeftConfig
    weights: dict[str, Any]  # name -> tensor


class AdapterSlots:
    """The base model plus named LoRA adapters. ``inject``/``remove``/``forward``: model thread only."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.peft: Any = None
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype

    @property
    def names(self) -> list[str]:
        return [] if self.peft is None else sorted(self.peft.peft_config)

    def prepare(self, path: Path) -> PreparedAdapter:
        """Read and convert the PEFT adapter in ``path``; touches no model state (safe on any thread).

        Raises:
            FileNotFoundError, ValueError, OSError, RuntimeError: unreadable or malformed adapter files.
        """
        from peft import PeftConfig
        from peft.utils import load_peft_weights

        if not (path / "adapter_config.json").is_file():
            raise FileNotFoundError(f"no adapter_config.json in {path}")
        config = PeftConfig.from_pretrained(str(path))
        config.inference_mode = True
        weights = load_peft_weights(str(path), device="cpu")
        # copy=True: safetensors may map the file; the adapter must not change if the file later does.
        weights = {k: v.to(device=self.device, dtype=self.dtype, copy=True) for k, v in weights.items()}
        return PreparedAdapter(config, weights)

    def inject(self, name: str, prepared: PreparedAdapter) -> None:
        """Add ``prepared`` as adapter ``name``; on any error the model is left as it was.

        Raises:
            ValueError, RuntimeError: the weights do not fit this base model.
        """
        from peft import get_peft_model
        from peft.utils import set_peft_model_state_dict

        try:
            if self.peft is None:
                self.peft = get_peft_model(
                    self.model,
                    prepared.config,
                    adapter_name=name,
                    autocast_adapter_dtype=False,
                    low_cpu_mem_usage=True,
                )
            else:
                self.peft.add_adapter(
                    name, prepared.config, low_cpu_mem_usage=True, autocast_adapter_dtype=False
                )
            result = set_peft_model_state_dict(
                self.peft, prepared.weights, adapter_name=name, low_cpu_mem_usage=True
            )
            missing = [k for k in result.missing_keys if f".{name}." in k]
            if missing:
                raise ValueError(f"adapter weights do not match its config: {len(missing)} tensors missing")
            left_on_meta = [n for n, p in self.peft.named_parameters() if f".{name}." in n and p.is_meta]
            if left_on_meta:
                raise ValueError(
                    f"adapter weights do not match its config: {len(left_on_meta)} tensors missing"
                )
        except BaseException:
            if self.peft is not None and name in self.peft.peft_config:
                self.remove(name)
            raise
        if self.peft.active_adapter not in self.peft.peft_config:
            self.peft.set_adapter(name)  # peft keeps a stale active name after its last adapter was deleted
        self.peft.eval()

    def add(self, name: str, path: Path) -> None:
        """``prepare`` then ``inject`` on the calling thread (tools and tests)."""
        self.inject(name, self.prepare(path))

    def remove(self, name: str) -> None:
        """Delete adapter ``name`` (no-op if absent)."""
        if self.peft is not None and name in self.peft.peft_config:
            with warnings.catch_warnings():
                # "adapter X was active, now Y": rows name their adapters explicitly.
                warnings.simplefilter("ignore")
                self.peft.delete_adapter(name)

    def forward(self, *, adapter_names: list[str], **kwargs: Any) -> Any:
        """One forward pass; row ``i`` uses adapter ``adapter_names[i]``."""
        if self.peft is None or not self.peft.peft_config:
            return self.model(**kwargs)  # no adapters (left): the wrapped layers compute the base alone
        return self.peft(**kwargs, adapter_names=adapter_names)
