"""Model reference resolution: bundled, local directories, hub ids (offline), dtypes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adept.errors import InvalidRequest, NotFound
from adept.models import (
    BUNDLED_EMBEDDING,
    canonical_model_id,
    disable_bnb_cpu_bf16_kernel,
    load_causal_lm,
    resolve_dtype,
    resolve_embedding_model,
    resolve_model,
)


def test_local_directory_resolves_to_itself(tiny_phi3: Path) -> None:
    assert resolve_model(str(tiny_phi3)) == tiny_phi3.absolute()


def test_canonical_id_comes_from_marker(tiny_phi3: Path, tmp_path: Path) -> None:
    assert canonical_model_id(str(tiny_phi3)) == "tiny-random-phi3"
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text("{}")
    assert canonical_model_id(str(plain)) == str(plain.absolute())
    assert canonical_model_id("microsoft/Phi-3-mini-4k-instruct") == "microsoft/Phi-3-mini-4k-instruct"
    assert canonical_model_id("bundled:smollm2-135m-instruct") == "bundled:smollm2-135m-instruct"


def test_missing_hub_model_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(NotFound, match="Phi-3-mini-4k-instruct"):
        resolve_model("microsoft/Phi-3-mini-4k-instruct")


@pytest.mark.parametrize("ref", ["", "   ", "bundled:nope"])
def test_bad_refs(ref: str) -> None:
    with pytest.raises((InvalidRequest, NotFound)):
        resolve_model(ref)


def test_missing_local_path_and_non_model_dir(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="not found"):
        resolve_model(str(tmp_path / "absent"))
    with pytest.raises(InvalidRequest, match="not a model directory"):
        resolve_model(str(tmp_path))


def test_bundled_embedding_model_is_a_sentence_transformers_dir() -> None:
    path = resolve_embedding_model(BUNDLED_EMBEDDING)
    assert (path / "modules.json").is_file()
    assert json.loads((path / "config.json").read_text())["hidden_size"] == 384
    with pytest.raises(InvalidRequest):
        resolve_embedding_model("bundled:smollm2-135m-instruct")


def test_dtypes() -> None:
    import torch

    assert resolve_dtype("cpu", "float32") is torch.float32
    assert resolve_dtype("cuda", "bfloat16") is torch.bfloat16
    assert resolve_dtype("cpu", "auto") in (torch.float32, torch.bfloat16)
    with pytest.raises(InvalidRequest):
        resolve_dtype("cpu", "int3")


def test_load_tiny_model_fp32(tiny_phi3: Path) -> None:
    import torch

    model = load_causal_lm(tiny_phi3, dtype="float32")
    assert next(model.parameters()).dtype is torch.float32
    assert disable_bnb_cpu_bf16_kernel(model) == 0  # nothing is 4-bit


def test_an_unreadable_marker_is_reported_and_the_path_identifies_the_model(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for name, marker in (("corrupt", "{not json"), ("no-id", '{"name": "x"}'), ("a-list", "[1]")):
        d = tmp_path / name
        d.mkdir()
        (d / "adept_model.json").write_text(marker)
        caplog.clear()
        with caplog.at_level("WARNING", logger="adept.models"):
            assert canonical_model_id(str(d)) == str(d.absolute())
        assert any("adept_model.json" in r.getMessage() for r in caplog.records), name


def test_hub_cache_scan_absent_is_empty_and_unreadable_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import huggingface_hub.utils._cache_manager as cache_manager

    from adept.models import _cached_hub_models

    monkeypatch.setattr(cache_manager, "HF_HUB_CACHE", str(tmp_path / "never-downloaded"))
    assert _cached_hub_models() == [] and not caplog.records
    not_a_dir = tmp_path / "cache-file"
    not_a_dir.write_text("x")
    monkeypatch.setattr(cache_manager, "HF_HUB_CACHE", str(not_a_dir))
    with caplog.at_level("WARNING", logger="adept.models"):
        assert _cached_hub_models() == []
    assert any("Hugging Face cache" in r.getMessage() for r in caplog.records)
