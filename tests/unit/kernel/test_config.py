"""Config loading: all errors at once, env and key=value overrides, tolerant stored manifests."""

from __future__ import annotations

import os

import pytest

from adept.config.adapter import AdapterManifest
from adept.config.base import apply_overrides, env_overrides, load_config
from adept.config.platform import PlatformConfig
from adept.config.tenant import TenantSpec
from adept.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("ADEPT_"):
            monkeypatch.delenv(name)


def test_every_problem_is_reported_at_once(tmp_path):
    f = tmp_path / "platform.yaml"
    f.write_text("device: gpu\ndtype: float8\ncolour: blue\n")
    with pytest.raises(ConfigError) as exc:
        load_config(PlatformConfig, f)
    err = exc.value
    assert len(err.errors) == 3
    text = "\n".join(err.errors)
    assert "device" in text and "'gpu'" in text
    assert "dtype" in text and "'float8'" in text
    assert "colour: unknown field" in text


def test_env_overrides_apply_and_ignore_unrelated_variables(monkeypatch, tmp_path):
    monkeypatch.setenv("ADEPT_DEVICE", "cpu")
    monkeypatch.setenv("ADEPT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ADEPT_API_KEY", "adept-not-a-field")  # clients use this; must not break config
    cfg = load_config(PlatformConfig)
    assert cfg.device == "cpu"
    assert cfg.data_dir == tmp_path
    assert "api_key" not in env_overrides(PlatformConfig)


def test_priority_file_then_env_then_overrides(monkeypatch, tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("device: cuda\ncollection: from_file\n")
    monkeypatch.setenv("ADEPT_COLLECTION", "from_env")
    cfg = load_config(PlatformConfig, f, ["dtype=bfloat16"])
    assert (cfg.device, cfg.collection, cfg.dtype) == ("cuda", "from_env", "bfloat16")
    cfg = load_config(PlatformConfig, f, ["collection=from_cli"])
    assert cfg.collection == "from_cli"


def test_dotted_overrides_build_nested_values_and_parse_yaml_scalars():
    data = apply_overrides({}, ["quotas.max_adapters=3", "name=acme", "display_name="])
    assert data == {"quotas": {"max_adapters": 3}, "name": "acme", "display_name": ""}
    spec = TenantSpec.model_validate(data)
    assert spec.quotas.max_adapters == 3


def test_malformed_overrides_are_all_reported():
    with pytest.raises(ConfigError) as exc:
        apply_overrides({}, ["novalue", "=3", "ok=1"])
    assert len(exc.value.errors) == 2


def test_missing_and_non_mapping_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(PlatformConfig, tmp_path / "absent.yaml")
    f = tmp_path / "list.yaml"
    f.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(PlatformConfig, f)


def test_stored_manifest_tolerates_unknown_keys_with_a_warning():
    # Pins rule 4 of the house style: a newer Adept's manifest must still load here.
    data = {"tenant": "acme", "name": "legal", "base_model": "m", "added_in_v9": {"x": 1}}
    with pytest.warns(UserWarning, match=r"AdapterManifest: ignoring unknown keys \['added_in_v9'\]"):
        m = AdapterManifest.model_validate(data)
    assert m.base_model == "m"
    assert not hasattr(m, "added_in_v9")


def test_user_input_is_strict():
    with pytest.raises(ConfigError, match="unknown field"):
        load_config(TenantSpec, None, ["name=acme", "quota.rpm=3"], env=False)


def test_milvus_tls_options_need_https_and_reach_the_client():
    from adept.config.platform import PlatformConfig
    from adept.errors import ConfigError

    cfg = PlatformConfig(
        milvus_uri="https://milvus.db.svc:19530", milvus_tls_ca_file="/etc/adept/milvus-ca/ca.crt"
    )
    assert cfg.milvus_client_options() == {"secure": True, "server_pem_path": "/etc/adept/milvus-ca/ca.crt"}
    assert PlatformConfig(milvus_uri="https://m:19530").milvus_client_options() == {"secure": True}
    assert PlatformConfig(milvus_uri="http://m:19530").milvus_client_options() == {}
    with pytest.raises((ConfigError, ValueError), match="https://"):
        PlatformConfig(milvus_uri="http://m:19530", milvus_tls_ca_file="/ca.crt")
