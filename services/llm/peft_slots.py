"""Many LoRA adapters in one peft model, added and removed by name while the base stays loaded.

The base model is wrapped in a ``PeftModel`` when the first adapter arrives. From then on every
forward pass names an adapter per row (``adapter_names``, ``"__base__"`` for base rows): peft
runs the base layer once for the whole batch and each adapter's LoRA product on its rows only.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

BASE = "__base__"


class AdapterSlots:
    """The base model plus named LoRA adapters. Not thread-safe: call from the engine's model thread."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.peft: Any = None
        self.device = next(model.parameters()).device

    @property
    def names(self) -> list[str]:
        return [] if self.peft is None else sorted(self.peft.peft_config)

    def add(self, name: str, path: Path) -> None:
        """Load the PEFT adapter in ``path`` as ``name``; on any error the model is left as it was.

        Raises:
            FileNotFoundError, ValueError, OSError, RuntimeError: unreadable or mismatched adapter files.
        """
        from peft import PeftConfig, get_peft_model
        from peft.utils import load_peft_weights, set_peft_model_state_dict

        if not (path / "adapter_config.json").is_file():
            raise FileNotFoundError(f"no adapter_config.json in {path}")
        config = PeftConfig.from_pretrained(str(path))
        config.inference_mode = True
        # Read the weights before touching the model, so corrupt files change nothing.
        weights = load_peft_weights(str(path), device=str(self.device))
        try:
            if self.peft is None:
                self.peft = get_peft_model(self.model, config, adapter_name=name)
            else:
                self.peft.add_adapter(name, config)
            result = set_peft_model_state_dict(self.peft, weights, adapter_name=name)
            missing = [k for k in result.missing_keys if f".{name}." in k]
            if missing:
                raise ValueError(f"adapter weights do not match its config: {len(missing)} tensors missing")
        except BaseException:
            if self.peft is not None and name in self.peft.peft_config:
                self.peft.delete_adapter(name)
            raise
        if self.peft.active_adapter not in self.peft.peft_config:
            self.peft.set_adapter(name)  # peft keeps a stale active name after its last adapter was deleted
        self.peft.eval()

    def remove(self, name: str) -> None:
        """Delete adapter ``name`` (no-op if absent)."""
        if self.peft is not None and name in self.peft.peft_config:
            with warnings.catch_warnings():
                warnings.simplefilter(
                    "ignore"
                )  # "adapter X was active, now Y": rows name adapters explicitly
                self.peft.delete_adapter(name)

    def forward(self, *, adapter_names: list[str], **kwargs: Any) -> Any:
        """One forward pass; row ``i`` uses adapter ``adapter_names[i]``."""
        if self.peft is None or not self.peft.peft_config:
            return self.model(**kwargs)  # no adapters (left): the wrapped layers compute the base alone
        return self.peft(**kwargs, adapter_names=adapter_names)
