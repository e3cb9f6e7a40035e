"""Who is calling: a tenant (Bearer tenant key) or the platform admin (Bearer admin key).

The admin key comes from ``ADEPT_ADMIN_KEY`` or a file in the data dir, created at first start
with mode 0600. Replicas only ever hold its sha256, so the key itself never travels through
Ray (deployment arguments are stored by the Serve controller).
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import secrets
from pathlib import Path

from adept.errors import AuthenticationError, ConfigError, PermissionDenied, StorageError
from adept.tenancy import Tenant, TenantStore, hash_api_key

log = logging.getLogger(__name__)
ADMIN_KEY_PREFIX = "adept-admin-"
_MAX_KEY_CHARS = 256


def load_or_create_admin_key(path: Path, env_var: str = "ADEPT_ADMIN_KEY") -> tuple[str, str]:
    """The admin key and where it came from (``env:NAME`` or the file path).

    The file is created atomically with ``O_EXCL`` so two processes starting together agree
    on one key; an existing file is tightened to mode 0600.
    """
    from_env = os.environ.get(env_var, "").strip()
    if from_env:
        return from_env, f"env:{env_var}"
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = ADMIN_KEY_PREFIX + secrets.token_urlsafe(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            try:
                os.chmod(path, 0o600)
            except OSError as e:  # another user's file, a read-only mount: usable, but others may read it
                log.warning("cannot restrict the admin key file %s to mode 0600: %s", path, e.strerror or e)
            existing = path.read_text(encoding="utf-8").strip()
            if existing:
                return existing, str(path)
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC, 0o600)  # an empty leftover: fill it
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(key + "\n")
    except OSError as e:
        raise StorageError(f"cannot read or create the admin key file {path}: {e.strerror or e}") from None
    return key, str(path)


def admin_key_sha256(
    path: Path, env_var: str = "ADEPT_ADMIN_KEY", hash_env_var: str = "ADEPT_ADMIN_KEY_SHA256"
) -> str:
    """The sha256 of the admin key: ``$ADEPT_ADMIN_KEY_SHA256`` if set, else hashed from ``load_or_create_admin_key``.

    On a cluster the Ray pods get only the hash (from the admin Secret): the key itself reaches no
    Ray process — where replicas hold nothing but the hash anyway — only the operator and people.

    Raises:
        ConfigError: the variable is set but is not a sha256 (64 hex characters).
    """
    digest = os.environ.get(hash_env_var, "").strip().lower()
    if digest:
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ConfigError(f"{hash_env_var} must be the admin key's sha256 (64 hex characters)")
        return digest
    key, _ = load_or_create_admin_key(path, env_var)
    return hash_api_key(key)


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; 401 when absent or malformed."""
    if not authorization:
        raise AuthenticationError(
            "missing API key: send 'Authorization: Bearer <key>'", code="missing_api_key"
        )
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > _MAX_KEY_CHARS:
        raise AuthenticationError("malformed Authorization header: expected 'Bearer <key>'")
    return token


class Authenticator:
    """Turns an ``Authorization`` header into a tenant, or checks it is the admin key."""

    def __init__(self, store: TenantStore, admin_key_sha256: str) -> None:
        self.store = store
        self._admin_hash = admin_key_sha256

    def is_admin_key(self, token: str) -> bool:
        # Constant-time compare of fixed-length digests: timing says nothing about the key.
        return hmac.compare_digest(hash_api_key(token), self._admin_hash)

    def tenant(self, authorization: str | None) -> Tenant:
        """The calling tenant; 401 for a missing, malformed or unknown key (and for the admin key)."""
        token = bearer_token(authorization)
        if self.is_admin_key(token):
            raise AuthenticationError("the admin key is not a tenant key; use a tenant's API key here")
        return self.store.authenticate(token)

    def admin(self, authorization: str | None) -> None:
        """Pass only for the admin key; a valid tenant key gets 403, anything else 401."""
        token = bearer_token(authorization)
        if self.is_admin_key(token):
            return
        try:
            self.store.authenticate(token)
        except AuthenticationError:
            raise AuthenticationError("invalid admin key") from None
        raise PermissionDenied("admin routes need the admin key; tenant keys are refused")
