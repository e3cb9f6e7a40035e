"""build_app args take ADEPT_* environment overrides (how the chart passes the Milvus token)."""

from __future__ import annotations

import pytest

from adept.errors import ConfigError
from services.app import load_serving_config


def test_env_fills_secret_into_args(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("ADEPT_PLATFORM__MILVUS_TOKEN", "root:s3cret")
    cfg = load_serving_config({"platform": {"data_dir": str(tmp_path), "milvus_uri": "http://milvus:19530"}})
    assert cfg.platform.milvus_token == "root:s3cret"
    assert cfg.platform.milvus_uri == "http://milvus:19530"


def test_bad_env_value_is_reported_like_bad_args(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("ADEPT_PLATFORM__DEVICE", "tpu")
    with pytest.raises(ConfigError, match=r"platform\.device"):
        load_serving_config({"platform": {"data_dir": str(tmp_path)}})


def test_the_admin_key_hash_alone_configures_the_gateway(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Cluster mode: Ray pods get the admin key's sha256, never the key; nothing is written to the data dir."""
    from adept.tenancy import hash_api_key
    from services.gateway.auth import admin_key_sha256

    digest = hash_api_key("adept-admin-x")
    monkeypatch.delenv("ADEPT_ADMIN_KEY", raising=False)
    monkeypatch.setenv("ADEPT_ADMIN_KEY_SHA256", digest.upper())
    assert admin_key_sha256(tmp_path / "admin.key") == digest
    assert not (tmp_path / "admin.key").exists()
    monkeypatch.setenv("ADEPT_ADMIN_KEY_SHA256", "not-a-hash")
    with pytest.raises(ConfigError, match="ADEPT_ADMIN_KEY_SHA256"):
        admin_key_sha256(tmp_path / "admin.key")
    monkeypatch.delenv("ADEPT_ADMIN_KEY_SHA256")
    monkeypatch.setenv("ADEPT_ADMIN_KEY", "adept-admin-x")
    assert admin_key_sha256(tmp_path / "admin.key") == digest
