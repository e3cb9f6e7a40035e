"""Cluster-mode ``TenantStore``: tenants are ``Tenant`` resources, keys are hash Secrets.

Gateway replicas read; the operator (or this store, for the admin API) writes. ``authenticate``
hashes the presented key and looks it up among the ``api-key-hash`` Secrets of the namespace,
cached for ``cache_ttl`` seconds, so a rotated or deleted key stops working on every replica
within that time (at once on the replica that made the change).
"""

from __future__ import annotations

import hmac
import threading
import time
from typing import Any

from adept.config.tenant import TenantQuotas, TenantSpec, check_tenant_name
from adept.errors import AuthenticationError, Conflict, InvalidRequest, NotFound
from adept.tenancy import KEY_PREFIX, Tenant, hash_api_key, new_api_key
from operators import resources as R
from operators.kube import Kube
from operators.models import API_VERSION


def _valid(name: str) -> str:
    try:
        return check_tenant_name(name)
    except ValueError as e:
        raise InvalidRequest(str(e), param="name") from None


class KubernetesTenantStore:
    """``adept.tenancy.TenantStore`` over the Kubernetes API of one namespace.

    Args:
        namespace: Where Tenant resources and their Secrets live (the release namespace).
        kube: API wrapper; default: in-cluster config, else ``KUBECONFIG``.
        cache_ttl: Seconds a key-hash lookup table is reused before re-listing Secrets.
    """

    def __init__(self, namespace: str, *, kube: Kube | None = None, cache_ttl: float = 5.0) -> None:
        self.namespace = namespace
        self.kube = kube or Kube()
        self.cache_ttl = cache_ttl
        self._lock = threading.Lock()
        self._hashes: dict[str, str] = {}
        self._loaded_at = float("-inf")

    # -- reading ----------------------------------------------------------------------------------
    def _tenant(self, obj: dict[str, Any]) -> Tenant:
        spec, status, meta = obj.get("spec") or {}, obj.get("status") or {}, obj["metadata"]
        return Tenant(
            name=meta["name"],
            display_name=spec.get("displayName", ""),
            quotas=TenantQuotas.model_validate(spec.get("quotas") or {}),
            created_at=meta.get("creationTimestamp") or "",
            key_prefix=status.get("keyPrefix") or "",
        )

    def get(self, name: str) -> Tenant:
        obj = self.kube.get(self.namespace, "tenants", _valid(name))
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            raise NotFound(f"tenant {name!r} not found")
        return self._tenant(obj)

    def list(self) -> list[Tenant]:
        objs = [
            o for o in self.kube.list(self.namespace, "tenants") if not o["metadata"].get("deletionTimestamp")
        ]
        return sorted((self._tenant(o) for o in objs), key=lambda t: t.name)

    def _hash_table(self, refresh: bool = False) -> dict[str, str]:
        with self._lock:
            if refresh or time.monotonic() - self._loaded_at > self.cache_ttl:
                table = {}
                selector = f"{R.LABEL_COMPONENT}={R.HASH_SECRET_COMPONENT}"
                for secret in self.kube.list_secrets(self.namespace, selector):
                    digest = R.decode_secret_value(secret, "sha256")
                    tenant = (secret["metadata"].get("labels") or {}).get(R.LABEL_TENANT)
                    if digest and tenant:
                        table[digest] = tenant
                self._hashes, self._loaded_at = table, time.monotonic()
            return self._hashes

    def authenticate(self, api_key: str) -> Tenant:
        if not isinstance(api_key, str) or not api_key.startswith(KEY_PREFIX) or len(api_key) > 200:
            raise AuthenticationError("invalid API key")
        digest = hash_api_key(api_key)
        table = self._hash_table()
        if digest not in table:
            table = self._hash_table(refresh=True)  # a key issued since the last listing
        # The dict lookup finds the candidate; the constant-time compare is what decides.
        match = next((t for h, t in table.items() if hmac.compare_digest(h, digest)), None)
        if match is None:
            raise AuthenticationError("invalid API key")
        try:
            return self.get(match)
        except NotFound:
            raise AuthenticationError("invalid API key") from None

    # -- writing ----------------------------------------------------------------------------------
    def create(self, spec: TenantSpec) -> tuple[Tenant, str]:
        """Create the Secrets first, then the Tenant: the operator finds the key and keeps it."""
        name = _valid(spec.name)
        if self.kube.get(self.namespace, "tenants", name) is not None:
            raise Conflict(f"tenant {name!r} already exists")
        api_key = new_api_key()
        for secret in R.build_key_secrets(name, api_key, namespace=self.namespace):
            existing = self.kube.get_secret(self.namespace, secret["metadata"]["name"])
            if existing is None:
                self.kube.create_secret(secret)
            else:  # leftovers of a tenant deleted while the operator was down
                self.kube.patch_secret(secret)
        body = {
            "apiVersion": API_VERSION,
            "kind": "Tenant",
            "metadata": {"name": name, "namespace": self.namespace, "labels": dict(R.MANAGED_BY)},
            "spec": {"displayName": spec.display_name, "quotas": spec.quotas.model_dump()},
        }
        obj = self.kube.create(self.namespace, "tenants", body)
        self._hash_table(refresh=True)
        tenant = self._tenant(obj)
        return Tenant(
            tenant.name, tenant.display_name, tenant.quotas, tenant.created_at, api_key[: R.KEY_PREFIX_CHARS]
        ), api_key

    def update(self, spec: TenantSpec) -> Tenant:
        name = _valid(spec.name)
        self.get(name)
        obj = self.kube.patch(
            self.namespace,
            "tenants",
            name,
            {"spec": {"displayName": spec.display_name, "quotas": spec.quotas.model_dump()}},
        )
        return self._tenant(obj)

    def delete(self, name: str) -> None:
        """Delete the Tenant resource; the operator's finalizer removes documents, adapters and Secrets."""
        name = _valid(name)
        if not self.kube.delete(self.namespace, "tenants", name):
            raise NotFound(f"tenant {name!r} not found")
        # The key must stop working now, not when the finalizer has finished.
        self.kube.delete_secret(self.namespace, R.hash_secret_name(name))
        self._hash_table(refresh=True)

    def rotate_key(self, name: str) -> str:
        name = _valid(name)
        self.get(name)
        api_key = new_api_key()
        for secret in R.build_key_secrets(name, api_key, namespace=self.namespace):
            existing = self.kube.get_secret(self.namespace, secret["metadata"]["name"])
            if existing is None:
                self.kube.create_secret(secret)
            else:
                self.kube.patch_secret(secret)
        self._hash_table(refresh=True)
        return api_key
