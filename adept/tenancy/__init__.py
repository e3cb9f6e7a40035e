"""Tenants and their API keys, behind a small store interface chosen by configuration.

``PlatformConfig.tenant_store`` picks the store: ``sqlite`` keeps tenants in one SQLite file in
the data dir (:class:`SQLiteTenantStore`, embedded mode); ``kubernetes`` reads ``Tenant``
resources and the key-hash Secrets the operator writes, watched and cached in memory
(:class:`~adept.tenancy.kubernetes.KubernetesTenantStore`, cluster mode).

API keys are ``adept-`` plus 256 random bits from :mod:`secrets`. Only their sha256 is stored:
keys carry full entropy, so a fast hash is enough (no password-style KDF needed), and the
stored hash is compared with :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from adept.config.tenant import TenantQuotas, TenantSpec, check_tenant_name
from adept.errors import AuthenticationError, InvalidRequest

if TYPE_CHECKING:
    from adept.config.platform import PlatformConfig

KEY_PREFIX = "adept-"
# Shown in listings so an operator can tell keys apart; far too short to guess the rest (256 bits).
SHOWN_KEY_CHARS = len(KEY_PREFIX) + 4


@dataclass(frozen=True)
class Tenant:
    """A tenant as stored. Never carries its API key, only a short prefix for display."""

    name: str
    display_name: str
    quotas: TenantQuotas
    created_at: str
    key_prefix: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view (admin API, CLI ``--json``)."""
        return {
            "name": self.name,
            "display_name": self.display_name,
            "quotas": self.quotas.model_dump(),
            "created_at": self.created_at,
            "key_prefix": self.key_prefix,
        }


@runtime_checkable
class TenantStore(Protocol):
    """What the gateway, the CLI and the operator need from a tenant store."""

    def create(self, spec: TenantSpec) -> tuple[Tenant, str]:
        """Create a tenant; return it with its API key (shown once, never stored). Conflict if it exists."""
        ...

    def get(self, name: str) -> Tenant:
        """The tenant named ``name``; NotFound if absent."""
        ...

    def list(self) -> list[Tenant]:
        """All tenants, sorted by name."""
        ...

    def update(self, spec: TenantSpec) -> Tenant:
        """Replace display name and quotas; NotFound if absent. The key is unchanged."""
        ...

    def delete(self, name: str) -> None:
        """Delete a tenant (its key stops working at once); NotFound if absent."""
        ...

    def authenticate(self, api_key: str) -> Tenant:
        """The tenant owning ``api_key``; AuthenticationError otherwise (never says why)."""
        ...

    def rotate_key(self, name: str) -> str:
        """Issue a new key for ``name``; the old one stops working at once."""
        ...

    def close(self) -> None:
        """Release connections and background watches (idempotent)."""
        ...


def new_api_key() -> str:
    """A fresh API key: ``adept-`` + 43 url-safe characters (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(api_key: str) -> str:
    """Hex sha256 of the key: the only form in which keys are stored."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def valid_tenant_name(name: str) -> str:
    try:
        return check_tenant_name(name)
    except ValueError as e:
        raise InvalidRequest(str(e), param="name") from None


def check_presented_key(api_key: object) -> str:
    """The sha256 of a plausibly formed key; AuthenticationError for anything else (never says why)."""
    if not isinstance(api_key, str) or not api_key.startswith(KEY_PREFIX) or len(api_key) > 200:
        raise AuthenticationError("invalid API key")
    return hash_api_key(api_key)


def open_tenant_store(cfg: PlatformConfig) -> TenantStore:
    """The tenant store this installation is configured with (``PlatformConfig.tenant_store``).

    ``sqlite``: ``<data_dir>/tenants.sqlite``. ``kubernetes``: ``Tenant`` resources of
    ``cfg.resolved_kubernetes_namespace``, watched (the first listing happens here, so an
    unreachable API server is an ``Unavailable`` now, not at the first request).
    """
    if cfg.tenant_store == "kubernetes":
        from adept.tenancy.kubernetes import KubernetesTenantStore

        return KubernetesTenantStore(cfg.resolved_kubernetes_namespace)
    return SQLiteTenantStore(cfg.tenants_db)


from adept.tenancy.sqlite import SQLiteTenantStore  # noqa: E402  (it builds on the names above)

__all__ = [
    "KEY_PREFIX",
    "SQLiteTenantStore",
    "Tenant",
    "TenantStore",
    "hash_api_key",
    "new_api_key",
    "open_tenant_store",
]
