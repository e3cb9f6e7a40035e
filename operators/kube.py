"""The few Kubernetes API calls the operator and the cluster tenant store make, as plain dicts.

Errors come back as Adept's: 404 -> ``NotFound``, 409 -> ``Conflict``, anything else (5xx,
connection refused, timeouts) -> ``Unavailable``, which handlers turn into a retry.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from adept.errors import Conflict, NotFound, Unavailable
from operators.models import GROUP, VERSION


@contextlib.contextmanager
def _api_errors(what: str) -> Iterator[None]:
    from kubernetes.client.exceptions import ApiException

    try:
        yield
    except ApiException as e:
        if e.status == 404:
            raise NotFound(f"{what} not found") from None
        if e.status == 409:
            raise Conflict(f"{what} already exists or was changed concurrently") from None
        raise Unavailable(f"Kubernetes API error on {what}: {e.status} {e.reason}") from None
    except (OSError, ValueError) as e:  # urllib3 connection errors subclass OSError
        raise Unavailable(f"Kubernetes API unreachable ({what}): {type(e).__name__}") from None


class Kube:
    """Thin wrapper over the ``kubernetes`` client; in-cluster config first, then ``KUBECONFIG``."""

    def __init__(self, api_client: Any = None) -> None:
        from kubernetes import client, config

        if api_client is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            api_client = client.ApiClient()
        self._client = api_client
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    def _plain(self, obj: Any) -> dict[str, Any]:
        return obj if isinstance(obj, dict) else self._client.sanitize_for_serialization(obj)

    # -- Secrets --------------------------------------------------------------------------------
    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            with _api_errors(f"Secret {namespace}/{name}"):
                return self._plain(self.core.read_namespaced_secret(name, namespace))
        except NotFound:
            return None

    def create_secret(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        with _api_errors(f"Secret {meta['namespace']}/{meta['name']}"):
            self.core.create_namespaced_secret(meta["namespace"], body)

    def patch_secret(self, body: dict[str, Any]) -> None:
        """Merge ``body`` (data, labels, annotations) into the existing Secret."""
        meta = body["metadata"]
        with _api_errors(f"Secret {meta['namespace']}/{meta['name']}"):
            self.core.patch_namespaced_secret(meta["name"], meta["namespace"], body)

    def delete_secret(self, namespace: str, name: str) -> bool:
        """Delete; False when it was already gone."""
        try:
            with _api_errors(f"Secret {namespace}/{name}"):
                self.core.delete_namespaced_secret(name, namespace)
            return True
        except NotFound:
            return False

    def list_secrets(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        with _api_errors(f"Secrets in {namespace}"):
            items = self._plain(self.core.list_namespaced_secret(namespace, label_selector=label_selector))[
                "items"
            ]
        # Filter here as well: some API servers (and emulators) ignore selectors.
        wanted = dict(part.split("=", 1) for part in label_selector.split(",") if "=" in part)
        return [
            s
            for s in items
            if all(((s.get("metadata") or {}).get("labels") or {}).get(k) == v for k, v in wanted.items())
        ]

    # -- adept.dev objects ----------------------------------------------------------------------
    def get(self, namespace: str, plural: str, name: str) -> dict[str, Any] | None:
        try:
            with _api_errors(f"{plural}/{name}"):
                return self._plain(
                    self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
                )
        except NotFound:
            return None

    def list(self, namespace: str, plural: str) -> list[dict[str, Any]]:
        with _api_errors(f"{plural} in {namespace}"):
            return self._plain(self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural))[
                "items"
            ]

    def create(self, namespace: str, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        with _api_errors(f"{plural}/{body['metadata']['name']}"):
            return self._plain(
                self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)
            )

    def patch(self, namespace: str, plural: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        with _api_errors(f"{plural}/{name}"):
            return self._plain(
                self.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, plural, name, body)
            )

    def delete(self, namespace: str, plural: str, name: str) -> bool:
        """Delete; False when it was already gone."""
        try:
            with _api_errors(f"{plural}/{name}"):
                self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
            return True
        except NotFound:
            return False
