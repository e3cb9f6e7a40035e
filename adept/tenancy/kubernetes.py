"""Cluster mode's tenant store: ``Tenant`` resources and their key-hash Secrets, watched and cached.

Every gateway replica keeps two in-memory mirrors, each fed by a list + watch of the Kubernetes
API: the ``Tenant`` resources of the namespace and the Secrets holding their keys' sha256. Requests
authenticate against the mirrors, so no request makes an API call, and a key created, rotated or
revoked anywhere (the operator, another replica, ``kubectl``) takes effect on every replica as fast
as the watch delivers the event. Writes go to the API first and then into this replica's mirrors,
so a replica always sees its own changes at once.

Each tenant has two Secrets: the key itself (for the tenant's administrators) and its sha256
(for gateways): gateways never need the key, and keeping the hash apart lets RBAC say so.
"""

from __future__ import annotations

import atexit
import base64
import logging
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from adept.config.tenant import TenantQuotas, TenantSpec
from adept.errors import AdeptError, AuthenticationError, Conflict, NotFound, Unavailable
from adept.kube import API_VERSION, Kube, WatchStream
from adept.tenancy import (
    SHOWN_KEY_CHARS,
    Tenant,
    check_presented_key,
    hash_api_key,
    new_api_key,
    now_iso,
    valid_tenant_name,
)

log = logging.getLogger(__name__)

LABEL_TENANT = "adept.dev/tenant"
LABEL_COMPONENT = "adept.dev/component"
MANAGED_BY = {"app.kubernetes.io/managed-by": "adept-operator", "app.kubernetes.io/part-of": "adept"}
KEY_SECRET_COMPONENT = "api-key"
HASH_SECRET_COMPONENT = "api-key-hash"
HASH_SELECTOR = f"{LABEL_COMPONENT}={HASH_SECRET_COMPONENT}"
PREFIX_ANNOTATION = "adept.dev/key-prefix"
ISSUED_ANNOTATION = "adept.dev/issued-at"


# --- the Secrets -----------------------------------------------------------------------------------
def key_secret_name(tenant: str) -> str:
    return f"adept-tenant-{tenant}-key"


def hash_secret_name(tenant: str) -> str:
    return f"adept-tenant-{tenant}-keyhash"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def build_owner_reference(owner: Mapping[str, Any]) -> dict[str, Any]:
    """An ownerReference to ``owner`` (a Kubernetes object): garbage collection follows it."""
    meta = owner["metadata"]
    return {
        "apiVersion": owner.get("apiVersion", API_VERSION),
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def build_key_secrets(
    tenant: str,
    api_key: str,
    *,
    namespace: str,
    owner: Mapping[str, Any] | None = None,
    now: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The tenant's two Secrets: the key itself (for the tenant's admins) and its sha256 (for gateways)."""
    now = now or now_iso()
    owners = [build_owner_reference(owner)] if owner and owner.get("metadata", {}).get("uid") else []

    def secret(name: str, component: str, data: dict[str, str]) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "name": name,
            "namespace": namespace,
            "labels": {**MANAGED_BY, LABEL_TENANT: tenant, LABEL_COMPONENT: component},
            "annotations": {PREFIX_ANNOTATION: api_key[:SHOWN_KEY_CHARS], ISSUED_ANNOTATION: now},
        }
        if owners:
            meta["ownerReferences"] = owners
        return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": meta, "data": data}

    key_secret = secret(key_secret_name(tenant), KEY_SECRET_COMPONENT, {"api-key": _b64(api_key)})
    hash_secret = secret(
        hash_secret_name(tenant), HASH_SECRET_COMPONENT, {"sha256": _b64(hash_api_key(api_key))}
    )
    return key_secret, hash_secret


def decode_secret_value(secret: Mapping[str, Any], key: str) -> str | None:
    """A value from a Secret's ``data`` (base64) or ``stringData``; None when absent."""
    data = secret.get("data") or {}
    if key in data and data[key] is not None:
        return base64.b64decode(data[key]).decode("utf-8")
    return (secret.get("stringData") or {}).get(key)


def _name(obj: Mapping[str, Any]) -> str:
    return obj["metadata"]["name"]


# --- the mirrors -----------------------------------------------------------------------------------
_running: weakref.WeakSet[Mirror] = weakref.WeakSet()


@atexit.register
def _stop_mirrors() -> None:
    """Stop the watch threads before the interpreter goes away.

    A daemon thread that wakes up while Python finalizes is ended with ``pthread_exit``, which
    aborts the process here (SIGABRT, exit code 134) instead of letting it exit cleanly.
    """
    mirrors = list(_running)
    for m in mirrors:
        m.stop()
    deadline = time.monotonic() + 2.0
    for m in mirrors:
        m.join(max(0.0, deadline - time.monotonic()))


class Mirror:
    """One list + watch of a kind of object in a namespace, kept as ``{name: object}``.

    A background thread lists, then watches from the listing's resourceVersion; when the watch
    ends or breaks it lists again (so missed events heal), backing off while the API is away.
    The last good state stays in use meanwhile.
    """

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        plural: str,
        *,
        label_selector: str | None = None,
        on_change: Callable[[], None] = lambda: None,
        watch_timeout_s: int = 300,
    ) -> None:
        self.kube, self.namespace, self.plural = kube, namespace, plural
        self.label_selector = label_selector
        self.objects: dict[str, dict[str, Any]] = {}
        self.ready = threading.Event()
        self.error: str | None = None
        self._on_change = on_change
        self._watch_timeout_s = watch_timeout_s
        self._stop = threading.Event()
        self._stream: WatchStream | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"adept-watch-{plural}", daemon=True)

    def start(self) -> Mirror:
        _running.add(self)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None:
            stream.close()  # wakes the thread if it is waiting for the next event

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def put(self, obj: Mapping[str, Any]) -> None:
        """Record a write this process just made (the watch confirms it later)."""
        with self._lock:
            self.objects[_name(obj)] = dict(obj)
        self._on_change()

    def drop(self, name: str) -> None:
        with self._lock:
            self.objects.pop(name, None)
        self._on_change()

    def _run(self) -> None:
        backoff = 1.0
        listed_at = float("-inf")
        while not self._stop.is_set():
            # A watch the server ends at once must not turn into a listing loop: one list per second at most.
            self._stop.wait(max(0.0, listed_at + 1.0 - time.monotonic()))
            listed_at = time.monotonic()
            try:
                items, version = self.kube.list_versioned(self.namespace, self.plural, self.label_selector)
                with self._lock:
                    self.objects = {_name(o): o for o in items}
                self._on_change()
                self.error = None
                self.ready.set()
                backoff = 1.0
                self._stream = self.kube.watch(
                    self.namespace,
                    self.plural,
                    label_selector=self.label_selector,
                    resource_version=version,
                    timeout_s=self._watch_timeout_s,
                )
                if self._stop.is_set():  # stopped while the watch was being opened
                    self._stream.close()
                for kind, obj in self._stream:
                    if kind == "DELETED":
                        self.drop(_name(obj))
                    else:
                        self.put(obj)
            except AdeptError as e:
                self.error = e.message
            except Exception as e:  # the client library's own failures (decoding, protocol): relist
                self.error = f"{type(e).__name__}: {e}"
            if self.error:
                log.warning("watching %s in %s: %s; listing again in %.0f s", self.plural, self.namespace,
                            self.error, backoff)  # fmt: skip
                self._stop.wait(backoff)
                backoff = min(30.0, backoff * 2)


# --- the store -------------------------------------------------------------------------------------
class KubernetesTenantStore:
    """``adept.tenancy.TenantStore`` over the ``Tenant`` resources of one namespace.

    Args:
        namespace: Where Tenant resources and their Secrets live (the release namespace).
        kube: API wrapper; default: in-cluster config, else ``KUBECONFIG``.
        ready_timeout_s: How long the first read waits for the first listings.
    """

    def __init__(self, namespace: str, *, kube: Kube | None = None, ready_timeout_s: float = 15.0) -> None:
        self.namespace = namespace
        self.kube = kube or Kube()
        self.ready_timeout_s = ready_timeout_s
        self._lock = threading.Lock()
        self._by_hash: dict[str, str] = {}
        self._mirrors: tuple[Mirror, Mirror] | None = None

    # -- mirrors ----------------------------------------------------------------------------------
    def _watching(self) -> tuple[Mirror, Mirror]:
        """Start the watches on first use (the operator only writes, and needs none)."""
        with self._lock:
            if self._mirrors is None:
                tenants = Mirror(self.kube, self.namespace, "tenants").start()
                hashes = Mirror(
                    self.kube, self.namespace, "secrets", label_selector=HASH_SELECTOR, on_change=self._index
                ).start()
                self._mirrors = (tenants, hashes)
            mirrors = self._mirrors
        deadline = time.monotonic() + self.ready_timeout_s
        for m in mirrors:
            if not m.ready.wait(max(0.0, deadline - time.monotonic())):
                raise Unavailable(
                    f"tenant store: cannot list {m.plural} in namespace {self.namespace}: "
                    f"{m.error or 'no answer from the Kubernetes API'}"
                )
        return mirrors

    def _index(self) -> None:
        """Rebuild ``sha256 -> tenant`` from the hash Secrets mirror."""
        if self._mirrors is None:
            return
        table = {}
        for secret in list(self._mirrors[1].objects.values()):
            digest = decode_secret_value(secret, "sha256")
            tenant = (secret["metadata"].get("labels") or {}).get(LABEL_TENANT)
            if digest and tenant:
                table[digest] = tenant
        self._by_hash = table

    def _tenant(self, obj: Mapping[str, Any]) -> Tenant:
        spec, status, meta = obj.get("spec") or {}, obj.get("status") or {}, obj["metadata"]
        prefix = status.get("keyPrefix") or ""
        if self._mirrors is not None:
            secret = self._mirrors[1].objects.get(hash_secret_name(meta["name"]))
            if secret is not None:
                prefix = (secret["metadata"].get("annotations") or {}).get(PREFIX_ANNOTATION) or prefix
        return Tenant(
            name=meta["name"],
            display_name=spec.get("displayName", ""),
            quotas=TenantQuotas.model_validate(spec.get("quotas") or {}),
            created_at=meta.get("creationTimestamp") or "",
            key_prefix=prefix,
        )

    @staticmethod
    def _live(obj: Mapping[str, Any] | None) -> bool:
        return obj is not None and not obj["metadata"].get("deletionTimestamp")

    # -- reading (from the mirrors: no API call) ---------------------------------------------------
    def get(self, name: str) -> Tenant:
        name = valid_tenant_name(name)
        obj = self._watching()[0].objects.get(name)
        if not self._live(obj):
            raise NotFound(f"tenant {name!r} not found")
        return self._tenant(obj)

    def list(self) -> list[Tenant]:
        objs = list(self._watching()[0].objects.values())
        return sorted((self._tenant(o) for o in objs if self._live(o)), key=lambda t: t.name)

    def authenticate(self, api_key: str) -> Tenant:
        digest = check_presented_key(api_key)
        tenants, _ = self._watching()
        # Looking up the sha256 of what the caller sent reveals nothing about stored keys (the
        # caller chose the input; keys have 256 bits), so a dict lookup needs no constant-time compare.
        owner = self._by_hash.get(digest)
        obj = tenants.objects.get(owner) if owner else None
        if obj is None or not self._live(obj):
            raise AuthenticationError("invalid API key")
        return self._tenant(obj)

    # -- keys -------------------------------------------------------------------------------------
    def issue_key(self, name: str, *, owner: Mapping[str, Any] | None = None) -> str:
        """Write a new key (and its hash) for ``name``; the previous key stops working. Returns the key."""
        api_key = new_api_key()
        for secret in build_key_secrets(name, api_key, namespace=self.namespace, owner=owner):
            if self.kube.get_secret(self.namespace, _name(secret)) is None:
                self.kube.create_secret(secret)
            else:  # rotation, or leftovers of a tenant deleted while the operator was down
                self.kube.patch_secret(secret)
            if secret["metadata"]["labels"][LABEL_COMPONENT] == HASH_SECRET_COMPONENT and self._mirrors:
                self._mirrors[1].put(secret)
        return api_key

    def ensure_key(self, name: str, *, owner: Mapping[str, Any] | None = None) -> dict[str, str]:
        """Make sure ``name`` has a key and its hash; returns the key Secret's annotations (prefix, issued-at).

        A missing key is issued; a missing hash (deleted by hand) is rebuilt from the key, so
        gateways authenticate again without the tenant's key changing.
        """
        key_secret = self.kube.get_secret(self.namespace, key_secret_name(name))
        if key_secret is None:
            self.issue_key(name, owner=owner)
            key_secret = self.kube.get_secret(self.namespace, key_secret_name(name)) or {}
        elif self.kube.get_secret(self.namespace, hash_secret_name(name)) is None:
            api_key = decode_secret_value(key_secret, "api-key") or ""
            annotations = (key_secret.get("metadata") or {}).get("annotations") or {}
            hash_secret = build_key_secrets(
                name, api_key, namespace=self.namespace, owner=owner, now=annotations.get(ISSUED_ANNOTATION)
            )[1]
            self.kube.create_secret(hash_secret)
            if self._mirrors:
                self._mirrors[1].put(hash_secret)
        return dict((key_secret.get("metadata") or {}).get("annotations") or {})

    def has_key(self, name: str) -> bool:
        return self.kube.get_secret(self.namespace, key_secret_name(name)) is not None

    def revoke_keys(self, name: str) -> None:
        """Delete both Secrets (idempotent): the key stops working on every replica."""
        for secret in (hash_secret_name(name), key_secret_name(name)):
            self.kube.delete_secret(self.namespace, secret)
        if self._mirrors:
            self._mirrors[1].drop(hash_secret_name(name))

    # -- writing (API first, then this replica's mirrors) -------------------------------------------
    def create(self, spec: TenantSpec) -> tuple[Tenant, str]:
        """Create the Secrets first, then the Tenant: the operator finds the key and keeps it."""
        name = valid_tenant_name(spec.name)
        if self.kube.get(self.namespace, "tenants", name) is not None:
            raise Conflict(f"tenant {name!r} already exists")
        api_key = self.issue_key(name)
        body = {
            "apiVersion": API_VERSION,
            "kind": "Tenant",
            "metadata": {"name": name, "namespace": self.namespace, "labels": dict(MANAGED_BY)},
            "spec": {"displayName": spec.display_name, "quotas": spec.quotas.model_dump()},
        }
        try:
            obj = self.kube.create(self.namespace, "tenants", body)
        except Conflict:
            raise Conflict(f"tenant {name!r} already exists") from None
        if self._mirrors:
            self._mirrors[0].put(obj)
        tenant = self._tenant(obj)
        return Tenant(
            tenant.name, tenant.display_name, tenant.quotas, tenant.created_at, api_key[:SHOWN_KEY_CHARS]
        ), api_key

    def update(self, spec: TenantSpec) -> Tenant:
        name = valid_tenant_name(spec.name)
        if not self._live(self.kube.get(self.namespace, "tenants", name)):
            raise NotFound(f"tenant {name!r} not found")
        obj = self.kube.patch(
            self.namespace,
            "tenants",
            name,
            {"spec": {"displayName": spec.display_name, "quotas": spec.quotas.model_dump()}},
        )
        if self._mirrors:
            self._mirrors[0].put(obj)
        return self._tenant(obj)

    def delete(self, name: str) -> None:
        """Delete the Tenant resource; the key stops working now, not when the operator's finalizer ends."""
        name = valid_tenant_name(name)
        if not self.kube.delete(self.namespace, "tenants", name):
            raise NotFound(f"tenant {name!r} not found")
        self.kube.delete_secret(self.namespace, hash_secret_name(name))
        if self._mirrors:
            self._mirrors[0].drop(name)
            self._mirrors[1].drop(hash_secret_name(name))

    def rotate_key(self, name: str) -> str:
        name = valid_tenant_name(name)
        if not self._live(self.kube.get(self.namespace, "tenants", name)):
            raise NotFound(f"tenant {name!r} not found")
        return self.issue_key(name)

    def close(self) -> None:
        with self._lock:
            mirrors, self._mirrors = self._mirrors, None
        for m in mirrors or ():
            m.stop()
