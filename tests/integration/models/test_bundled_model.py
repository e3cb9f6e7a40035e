"""The bundled SmolLM2 converts from its GGUF once and answers a simple question."""

from __future__ import annotations

from pathlib import Path

import pytest

from adept.models import (
    MARKER,
    canonical_model_id,
    list_models,
    load_causal_lm,
    load_tokenizer,
    resolve_model,
)

pytestmark = pytest.mark.integration


def test_bundled_model_converted_and_cached(bundled_model: Path) -> None:
    assert (bundled_model / MARKER).is_file() and (bundled_model / "model.safetensors").is_file()
    assert canonical_model_id(str(bundled_model)) == "bundled:smollm2-135m-instruct"
    # A second resolve reuses the cache (same directory, marker untouched).
    before = (bundled_model / MARKER).stat().st_mtime_ns
    assert resolve_model("bundled:smollm2-135m-instruct", bundled_model.parent) == bundled_model
    assert (bundled_model / MARKER).stat().st_mtime_ns == before
    listed = {m.ref: m for m in list_models(bundled_model.parent)}
    assert listed["bundled:smollm2-135m-instruct"].ready


def test_bundled_model_answers(bundled_model: Path) -> None:
    tok = load_tokenizer(bundled_model)
    model = load_causal_lm(bundled_model, dtype="float32")
    batch = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**batch, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0][batch["input_ids"].shape[1] :])
