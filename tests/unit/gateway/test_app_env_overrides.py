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
