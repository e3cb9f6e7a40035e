"""FineTuneJobConfig: shipped YAMLs validate, bad input is reported all at once, combinations are checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from adept.config.base import load_config
from adept.config.platform import PlatformConfig
from adept.config.training import DEFAULT_TARGET_MODULES, FineTuneJobConfig, default_target_modules
from adept.errors import ConfigError

CONFIGS = sorted((Path(__file__).resolve().parents[3] / "training" / "configs").glob("*.yaml"))
MINIMAL = {"tenant": "acme", "adapter": "style", "data": {"path": "train.jsonl"}}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_validate(path: Path) -> None:
    cfg = load_config(FineTuneJobConfig, path, env=False)
    assert cfg.resolved_run_name == f"{cfg.tenant}-{cfg.adapter}"


def test_the_three_documented_configs_ship() -> None:
    assert {p.name for p in CONFIGS} >= {
        "cpu-quick.yaml",
        "phi3-mini-lora-4gpu.yaml",
        "phi3-mini-qlora-1gpu.yaml",
    }


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(
        "tenant: Acme!\nadapter: ok\ndata: {path: x.jsonl, max_seq_length: 4}\nlora: {rank: 0}\ntrian: {}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(FineTuneJobConfig, job, ["method=dora", "train.learning_rate=-1"], env=False)
    fields = " ".join(err.value.errors)
    for name in ("tenant", "data.max_seq_length", "lora.rank", "trian", "method", "train.learning_rate"):
        assert name in fields, (name, err.value.errors)
    assert len(err.value.errors) == 6


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"method": "qlora", "deepspeed": {"stage": 3}}, "ZeRO-3 cannot shard a 4-bit"),
        ({"deepspeed": {"stage": 0, "offload_optimizer": True}}, "offload_optimizer needs"),
        ({"deepspeed": {"stage": 2, "offload_params": True}}, "offload_params needs"),
        ({"lora": {"target_modules": []}}, "non-empty list"),
        ({"workers": {"resources_per_worker": {"CPU": -1}}}, ">= 0"),
    ],
)
def test_bad_combinations_are_rejected(overrides: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_config(FineTuneJobConfig, None, env=False, base={**MINIMAL, **overrides})


def test_qlora_is_lora_with_a_quantized_base() -> None:
    lora = FineTuneJobConfig.model_validate(MINIMAL)
    qlora = FineTuneJobConfig.model_validate({**MINIMAL, "method": "qlora"})
    assert (lora.quantize_base, qlora.quantize_base) == (False, True)
    assert qlora.qlora.quant_type == "nf4" and qlora.qlora.double_quant


def test_target_module_defaults_per_architecture() -> None:
    assert default_target_modules("phi3") == ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
    assert default_target_modules("llama") == DEFAULT_TARGET_MODULES["llama"]
    assert "q_proj" in default_target_modules("llama") and "down_proj" in default_target_modules("llama")
    assert default_target_modules("gpt_neox") == "all-linear"


def test_every_field_is_described() -> None:
    def walk(model: type) -> None:
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            ann = field.annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields"):
                walk(ann)

    walk(FineTuneJobConfig)


def test_fingerprint_ignores_logging_and_placement() -> None:
    base = FineTuneJobConfig.model_validate(MINIMAL)
    same = FineTuneJobConfig.model_validate(
        {**MINIMAL, "train": {"log_every_steps": 1, "eval_every_steps": 3}, "workers": {"num_workers": 4}}
    )
    other = FineTuneJobConfig.model_validate({**MINIMAL, "lora": {"rank": 4}})
    assert base.fingerprint() == same.fingerprint() != other.fingerprint()


def test_unset_model_and_stores_come_from_the_platform(tmp_path: Path) -> None:
    platform = PlatformConfig(data_dir=tmp_path / "p", model="bundled:served", adapter_store_uri="s3://b/a")
    cfg = FineTuneJobConfig.model_validate(MINIMAL)
    with pytest.raises(ValueError, match="not bound"):
        _ = cfg.resolved_storage_path  # an unbound job cannot guess where it lives
    bound = cfg.bind(platform)
    assert bound.resolved_base_model == "bundled:served"
    assert bound.resolved_storage_path == str(tmp_path / "p" / "training")
    assert bound.resolved_adapter_store == "s3://b/a"  # where serving reads, not <data_dir>/adapters


def test_what_the_job_names_wins_each_on_its_own(tmp_path: Path) -> None:
    platform = PlatformConfig(data_dir=tmp_path / "p", model="bundled:served")
    own = FineTuneJobConfig.model_validate(
        {**MINIMAL, "base_model": "bundled:other", "output": {"data_dir": str(tmp_path / "job")}}
    ).bind(platform)
    assert own.resolved_base_model == "bundled:other"
    assert own.resolved_storage_path == str(tmp_path / "job" / "training")
    # Naming a data dir does not move publishing away from the platform's adapter store.
    assert own.resolved_adapter_store == str(tmp_path / "p" / "adapters")
