"""Tenant and admin authentication, and the admin key file."""

from __future__ import annotations

import os
import stat

import pytest

from adept.errors import AuthenticationError, PermissionDenied
from adept.tenancy import hash_api_key
from services.gateway.auth import Authenticator, bearer_token, load_or_create_admin_key


def test_admin_key_file_is_created_once_with_mode_0600(tmp_path, monkeypatch):
    monkeypatch.delenv("ADEPT_ADMIN_KEY", raising=False)
    path = tmp_path / "sub" / "admin.key"
    key, source = load_or_create_admin_key(path)
    assert source == str(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_or_create_admin_key(path)[0] == key  # second start reads the same key
    os.chmod(path, 0o644)
    load_or_create_admin_key(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_admin_key_from_environment_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("ADEPT_ADMIN_KEY", "from-env")
    assert load_or_create_admin_key(tmp_path / "admin.key") == ("from-env", "env:ADEPT_ADMIN_KEY")
    assert not (tmp_path / "admin.key").exists()


@pytest.mark.parametrize(
    "header", [None, "", "Bearer", "Bearer ", "Basic abc", "Token x", "Bearer " + "x" * 300]
)
def test_missing_or_malformed_header_is_401(header):
    with pytest.raises(AuthenticationError):
        bearer_token(header)


def test_tenant_and_admin_keys_are_kept_apart(store, tenants):
    auth = Authenticator(store, hash_api_key("admin-secret"))
    acme_key = tenants["acme"][1]
    assert auth.tenant(f"Bearer {acme_key}").name == "acme"
    assert auth.tenant(f"bearer {acme_key}").name == "acme"
    with pytest.raises(AuthenticationError):
        auth.tenant("Bearer admin-secret")  # the admin key is not a tenant
    with pytest.raises(AuthenticationError):
        auth.tenant("Bearer adept-not-a-key")
    auth.admin("Bearer admin-secret")
    with pytest.raises(PermissionDenied):
        auth.admin(f"Bearer {acme_key}")  # admin routes refuse tenant keys
    with pytest.raises(AuthenticationError):
        auth.admin("Bearer wrong")


def test_deleted_tenant_key_stops_working(store, tenants):
    auth = Authenticator(store, hash_api_key("admin-secret"))
    store.delete("acme")
    with pytest.raises(AuthenticationError):
        auth.tenant(f"Bearer {tenants['acme'][1]}")


def test_an_admin_key_file_that_cannot_be_tightened_is_used_and_reported(tmp_path, monkeypatch, caplog):
    """Tests run as root, who may chmod any file: the refusal (another user's file) is simulated."""
    monkeypatch.delenv("ADEPT_ADMIN_KEY", raising=False)
    path = tmp_path / "admin.key"
    path.write_text("adept-admin-existing\n")

    def refuse(p, mode):
        raise PermissionError(1, "Operation not permitted", str(p))

    monkeypatch.setattr(os, "chmod", refuse)
    with caplog.at_level("WARNING", logger="services.gateway.auth"):
        assert load_or_create_admin_key(path) == ("adept-admin-existing", str(path))
    assert any("0600" in r.getMessage() and "not permitted" in r.getMessage() for r in caplog.records)
