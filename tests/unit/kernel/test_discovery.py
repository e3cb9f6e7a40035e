"""``adept ask`` and the management commands find the data dir ``make run`` uses from anywhere in the project."""

from __future__ import annotations

import json
import os

from adept.admin_client import RUN_FILE
from tools.cli.discovery import (
    DEFAULT_URL,
    discover_api_key,
    discover_data_dir,
    discover_url,
    project_data_dir,
)


def _project(tmp_path):
    data = tmp_path / "proj" / ".adept"
    data.mkdir(parents=True)
    (data / "admin.key").write_text("adept-admin-x\n")
    (data / "demo.key").write_text("adept-demo-key\n")
    sub = tmp_path / "proj" / "services" / "llm"
    sub.mkdir(parents=True)
    return data, sub


def test_nearest_project_data_dir_is_found_from_a_subdirectory(tmp_path, monkeypatch):
    monkeypatch.delenv("ADEPT_DATA_DIR", raising=False)
    data, sub = _project(tmp_path)
    assert project_data_dir(sub) == data.resolve()
    assert discover_data_dir(None, sub) == data.resolve()
    assert discover_api_key(None, data) == "adept-demo-key"


def test_a_dot_adept_without_an_admin_key_is_not_a_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("ADEPT_DATA_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "x" / ".adept").mkdir(parents=True)
    assert project_data_dir(tmp_path / "x") is None
    assert discover_data_dir(None, tmp_path / "x") == tmp_path / "home" / ".adept"


def test_explicit_and_environment_win(tmp_path, monkeypatch):
    data, sub = _project(tmp_path)
    monkeypatch.setenv("ADEPT_DATA_DIR", str(tmp_path / "env"))
    assert discover_data_dir(None, sub) == tmp_path / "env"
    assert discover_data_dir(str(tmp_path / "cli"), sub) == tmp_path / "cli"
    monkeypatch.setenv("ADEPT_API_KEY", "adept-env")
    assert discover_api_key(None, data) == "adept-env"
    assert discover_api_key("adept-flag", data) == "adept-flag"


def test_url_comes_from_the_running_platform_of_the_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("ADEPT_URL", raising=False)
    data, _ = _project(tmp_path)
    assert discover_url(None, data) == DEFAULT_URL
    run = data / RUN_FILE
    run.parent.mkdir()
    # This test process stands in for the running platform: its pid is alive.
    run.write_text(json.dumps({"url": "http://127.0.0.1:8123", "pid": os.getpid(), "admin_key_file": "k"}))
    assert discover_url(None, data) == "http://127.0.0.1:8123"
    assert discover_url("http://h:1/", data) == "http://h:1"


def test_management_commands_use_the_project_data_dir(tmp_path, monkeypatch):
    from tools.cli.common import platform_config

    for var in ("ADEPT_DATA_DIR", "ADEPT_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    data, sub = _project(tmp_path)
    monkeypatch.chdir(sub)
    assert platform_config().data_dir == data.resolve()
