"""Ray token files and the environment a local Ray cluster gets (adept.ray_auth)."""

from __future__ import annotations

import os

import pytest

from adept import ray_auth


def test_token_is_created_private_and_reused(tmp_path):
    path = ray_auth.token_path(tmp_path)
    token = ray_auth.load_or_create_token(path)
    assert len(token) == 64 and int(token, 16) >= 0  # 256 random bits, hex
    assert path.stat().st_mode & 0o777 == 0o600
    assert ray_auth.load_or_create_token(path) == token


def test_a_wide_token_file_is_tightened_and_an_empty_one_filled(tmp_path):
    path = tmp_path / "tok"
    path.write_text("")
    os.chmod(path, 0o644)
    token = ray_auth.load_or_create_token(path)
    assert token and path.read_text() == token
    assert path.stat().st_mode & 0o777 == 0o600


def test_unreadable_token_location_is_a_storage_error(tmp_path):
    from adept.errors import StorageError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StorageError, match="Ray token file"):
        ray_auth.load_or_create_token(blocker / "sub" / "tok")


def test_local_cluster_env_forces_token_mode_and_loopback(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "stray")
    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)
    before = ray_auth.use_local_cluster_env(tmp_path)
    try:
        assert os.environ["RAY_AUTH_MODE"] == "token"
        assert os.environ["RAY_AUTH_TOKEN_PATH"] == str(tmp_path / "ray_auth_token")
        assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
        assert "RAY_AUTH_TOKEN" not in os.environ  # it would win over the data dir's token
        from ray._raylet import AuthenticationMode, get_authentication_mode

        assert get_authentication_mode() == AuthenticationMode.TOKEN  # Ray's cached mode followed
    finally:
        ray_auth.restore_env(before)
    assert os.environ["RAY_AUTH_MODE"] == "disabled" and os.environ["RAY_AUTH_TOKEN"] == "stray"
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ


def test_auth_headers():
    assert ray_auth.auth_headers("abc") == {"Authorization": "Bearer abc"}
    assert ray_auth.auth_headers(None) == {}
