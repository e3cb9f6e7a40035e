"""Cluster mode's tenant store: ``Tenant`` resources, watched and cached; each carries its key's sha256.

Every gateway replica keeps an in-memory mirror of the namespace's ``Tenant`` resources, fed by a
list + watch of the Kubernetes API. Each Tenant carries the sha256 of its API key in an annotation
(``adept.dev/key-sha256``); requests authenticate against the mirror, so no request makes an API
call, and a key created, rotated or revoked anywhere (the operator, another replica, ``kubectl``)
takes effect on every replica as fast as the watch delivers the event. Writes go to the API first
and then into this replica's mirror, so a replica always sees its own changes at once.

Why an annotation and not a Secret: a sha256 of a 256-bit random key is not a secret (nothing can
be learned from it but the key's identity), while reading Secrets cannot be limited by label in
RBAC — a gateway allowed to watch key-hash Secrets could read every Secret of the namespace. So
gateways read only Tenants. The key itself, when the operator issues it, goes into a Secret for the
tenant's administrators (``adept-tenant-<name>-key``), which only the operator writes; a key issued
through the admin API is shown once and stored nowhere.
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
HASH_ANNOTATION = "adept.dev/key-sha256"
PREFIX_ANNOTATION = "adept.dev/key-prefix"
ISSUED_ANNOTATION = "adept.dev/issued-at"


def key_annotations(api_key: str, now: str | None = None) -> dict[str, str]:
    """What a Tenant (and its key Secret) records about its current key: sha256, shown prefix, issue time."""
    return {
        HASH_ANNOTATION: hash_api_key(api_key),
        PREFIX_ANNOTATION: api_key[:SHOWN_KEY_CHARS],
        ISSUED_ANNOTATION: now or now_iso(),
    }


# --- the key Secret --------------------------------------------------------------------------------
def key_secret_name(tenant: str) -> str:
    return f"adept-tenant-{tenant}-key"


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


def build_key_secret(
    tenant: str,
    api_key: str,
    *,
    namespace: str,
    owner: Mapping[str, Any] | None = None,
    now: str | None = None,
) -> dict[str, Any]:
    """The Secret holding the tenant's key, for its administrators (gateways never read it)."""
    meta: dict[str, Any] = {
        "name": key_secret_name(tenant),
        "namespace": namespace,
        "labels": {**MANAGED_BY, LABEL_TENANT: tenant, LABEL_COMPONENT: KEY_SECRET_COMPONENT},
        "annotations": key_annotations(api_key, now),
    }
    if owner and owner.get("metadata", {}).get("uid"):
        meta["ownerReferences"] = [build_owner_reference(owner)]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": meta,
        "data": {"api-key": _b64(api_key)},
    }


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

    Gateways use the reading side and ``create``/``update``/``delete``/``rotate_key`` (RBAC:
    Tenants only); the operator also writes the key Secrets (``issue_key``, ``ensure_key``).

    Args:
        namespace: Where Tenant resources and their key Secrets live (the release namespace).
        kube: API wrapper; default: in-cluster config, else ``KUBECONFIG``.
        ready_timeout_s: How long the first read waits for the first listing.
    """

    def __init__(self, namespace: str, *, kube: Kube | None = None, ready_timeout_s: float = 15.0) -> None:
        self.namespace = namespace
        self.kube = kube or Kube()
        self.ready_timeout_s = ready_timeout_s
        self._lock = threading.Lock()
        self._by_hash: dict[str, str] = {}
        self._mirror: Mirror | None = None

    # -- the mirror -------------------------------------------------------------------------------
    def _watching(self) -> Mirror:
        """Start the watch on first use (the operator writes keys, and reads Tenants through kopf)."""
        with self._lock:
            if self._mirror is None:
                self._mirror = Mirror(self.kube, self.namespace, "tenants", on_change=self._index).start()
            mirror = self._mirror
        if not mirror.ready.wait(self.ready_timeout_s):
            raise Unavailable(
                f"tenant store: cannot list tenants in namespace {self.namespace}: "
                f"{mirror.error or 'no answer from the Kubernetes API'}"
            )
        return mirror

    def _index(self) -> None:
        """Rebuild ``sha256 -> tenant`` from the mirrored Tenants' annotations."""
        mirror = self._mirror
        if mirror is None:
            return
        table = {}
        for obj in list(mirror.objects.values()):
            digest = (obj["metadata"].get("annotations") or {}).get(HASH_ANNOTATION)
            if digest:
                table[digest] = _name(obj)
        self._by_hash = table

    def _tenant(self, obj: Mapping[str, Any]) -> Tenant:
        spec, status, meta = obj.get("spec") or {}, obj.get("status") or {}, obj["metadata"]
        prefix = (meta.get("annotations") or {}).get(PREFIX_ANNOTATION) or status.get("keyPrefix") or ""
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

    # -- reading (from the mirror: no API call) ----------------------------------------------------
    def get(self, name: str) -> Tenant:
        name = valid_tenant_name(name)
        obj = self._watching().objects.get(name)
        if not self._live(obj):
            raise NotFound(f"tenant {name!r} not found")
        return self._tenant(obj)

    def list(self) -> list[Tenant]:
        objs = list(self._watching().objects.values())
        return sorted((self._tenant(o) for o in objs if self._live(o)), key=lambda t: t.name)

    def authenticate(self, api_key: str) -> Tenant:
        digest = check_presented_key(api_key)
        mirror = self._watching()
        # Looking up the sha256 of what the caller sent reveals nothing about stored keys (the
        # caller chose the input; keys have 256 bits), so a dict lookup needs no constant-time compare.
        owner = self._by_hash.get(digest)
        obj = mirror.objects.get(owner) if owner else None
        if obj is None or not self._live(obj):
            raise AuthenticationError("invalid API key")
        return self._tenant(obj)

    # -- keys -------------------------------------------------------------------------------------
    def _set_key(self, name: str, annotations: dict[str, str]) -> dict[str, Any]:
        """Record a key on the Tenant (the only place gateways look); the previous key stops working."""
        obj = self.kube.patch(self.namespace, "tenants", name, {"metadata": {"annotations": annotations}})
        obj = obj or self.kube.get(self.namespace, "tenants", name)  # an API that answers without the object
        if obj is not None and self._mirror is not None:
            self._mirror.put(obj)
        return obj

    def issue_key(self, name: str, *, owner: Mapping[str, Any] | None = None) -> str:
        """Operator: a new key into the key Secret, then onto the Tenant; the previous key stops working.

        The Secret is written first: a crash in between leaves a Secret whose key ``ensure_key``
        puts on the Tenant, never a working key nobody can read.
        """
        api_key = new_api_key()
        secret = build_key_secret(name, api_key, namespace=self.namespace, owner=owner)
        if self.kube.get_secret(self.namespace, _name(secret)) is None:
            self.kube.create_secret(secret)
        else:  # rotation, or a leftover of a tenant deleted while the operator was down
            self.kube.patch_secret(secret)
        self._set_key(name, secret["metadata"]["annotations"])
        return api_key

    def ensure_key(self, name: str, *, owner: Mapping[str, Any] | None = None) -> dict[str, str]:
        """Operator: make the Tenant's key and its key Secret agree; returns the key's annotations.

        - no key anywhere: one is issued (into the Secret and onto the Tenant);
        - a Secret but no key on the Tenant (a crash after writing the Secret): the Secret's key is
          put on the Tenant, so it works without changing;
        - a Secret whose key is no longer the Tenant's (rotated through the admin API): the stale
          Secret is deleted, so nobody is handed a dead key;
        - a key on the Tenant and no Secret (issued through the admin API, shown once): kept.
        """
        tenant = self.kube.get(self.namespace, "tenants", name)
        if tenant is None:
            raise NotFound(f"tenant {name!r} not found")
        current = dict(tenant["metadata"].get("annotations") or {})
        secret = self.kube.get_secret(self.namespace, key_secret_name(name))
        held = decode_secret_value(secret, "api-key") if secret is not None else None
        if held and not current.get(HASH_ANNOTATION):
            issued = ((secret or {}).get("metadata", {}).get("annotations") or {}).get(ISSUED_ANNOTATION)
            current.update(key_annotations(held, issued))
            self._set_key(name, key_annotations(held, issued))
        elif held and hash_api_key(held) != current.get(HASH_ANNOTATION):
            self.kube.delete_secret(self.namespace, key_secret_name(name))
        elif not current.get(HASH_ANNOTATION):
            self.issue_key(name, owner=owner)
            current = dict(
                self.kube.get(self.namespace, "tenants", name)["metadata"].get("annotations") or {}
            )
        return {k: v for k, v in current.items() if k in (PREFIX_ANNOTATION, ISSUED_ANNOTATION)}

    def has_key_secret(self, name: str) -> bool:
        return self.kube.get_secret(self.namespace, key_secret_name(name)) is not None

    def revoke_keys(self, name: str) -> None:
        """Operator: delete the key Secret (idempotent); the Tenant's own record goes with the Tenant."""
        self.kube.delete_secret(self.namespace, key_secret_name(name))

    # -- writing (API first, then this replica's mirror) --------------------------------------------
    def create(self, spec: TenantSpec) -> tuple[Tenant, str]:
        """Create the Tenant carrying its key's hash: the key works at once and is shown only here."""
        name = valid_tenant_name(spec.name)
        if self.kube.get(self.namespace, "tenants", name) is not None:
            raise Conflict(f"tenant {name!r} already exists")
        api_key = new_api_key()
        body = {
            "apiVersion": API_VERSION,
            "kind": "Tenant",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": dict(MANAGED_BY),
                "annotations": key_annotations(api_key),
            },
            "spec": {"displayName": spec.display_name, "quotas": spec.quotas.model_dump()},
        }
        try:
            obj = self.kube.create(self.namespace, "tenants", body)
        except Conflict:
            raise Conflict(f"tenant {name!r} already exists") from None
        obj = obj or self.kube.get(self.namespace, "tenants", name) or body  # an API that answers without it
        if self._mirror is not None:
            self._mirror.put(obj)
        return self._tenant(obj), api_key

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
        if self._mirror is not None:
            self._mirror.put(obj)
        return self._tenant(obj)

    def delete(self, name: str) -> None:
        """Delete the Tenant resource; its key stops working now (a Tenant being deleted authenticates nobody)."""
        name = valid_tenant_name(name)
        if not self.kube.delete(self.namespace, "tenants", name):
            raise NotFound(f"tenant {name!r} not found")
        if self._mirror is not None:
            self._mirror.drop(name)

    def rotate_key(self, name: str) -> str:
        """A new key, recorded on the Tenant and shown once (an operator-issued key Secret goes stale: the operator drops it)."""
        name = valid_tenant_name(name)
        if not self._live(self.kube.get(self.namespace, "tenants", name)):
            raise NotFound(f"tenant {name!r} not found")
        api_key = new_api_key()
        self._set_key(name, key_annotations(api_key))
        return api_key

    def close(self) -> None:
        with self._lock:
            mirror, self._mirror = self._mirror, None
        if mirror is not None:
            mirror.stop()
