"""The few Kubernetes API calls the platform makes (cluster tenant store, operator), as plain dicts.

Errors come back as Adept's: 404 -> ``NotFound``, 409 -> ``Conflict``, anything else (5xx,
connection refused, timeouts) -> ``Unavailable``, which callers turn into a retry. The
``kubernetes`` client is imported only when a ``Kube`` is made: laptops never need it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from adept.errors import Conflict, NotFound, Unavailable

GROUP = "adept.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


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


def _labels_match(obj: dict[str, Any], label_selector: str | None) -> bool:
    """Equality selectors (``a=b,c=d``) checked here too: some API servers (and emulators) ignore them."""
    wanted = dict(part.split("=", 1) for part in (label_selector or "").split(",") if "=" in part)
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in wanted.items())


class Kube:
    """Thin wrapper over the ``kubernetes`` client; in-cluster config first, then ``KUBECONFIG``."""

    def __init__(self, api_client: Any = None) -> None:
        from kubernetes import client, config

        if api_client is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                try:
                    config.load_kube_config()
                except (config.ConfigException, OSError) as e:
                    raise Unavailable(
                        f"no Kubernetes API: not in a pod and no usable KUBECONFIG ({e})"
                    ) from None
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
        return self.list_versioned(namespace, "secrets", label_selector)[0]

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
        return self.list_versioned(namespace, plural)[0]

    def _lister(self, namespace: str, plural: str) -> tuple[Any, tuple[Any, ...]]:
        if plural == "secrets":
            return self.core.list_namespaced_secret, (namespace,)
        return self.custom.list_namespaced_custom_object, (GROUP, VERSION, namespace, plural)

    def list_versioned(
        self, namespace: str, plural: str, label_selector: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Objects (``secrets`` or an adept.dev plural) and the list's resourceVersion, to watch from."""
        func, args = self._lister(namespace, plural)
        kwargs = {"label_selector": label_selector} if label_selector else {}
        with _api_errors(f"{plural} in {namespace}"):
            listing = self._plain(func(*args, **kwargs))
        items = [i for i in listing.get("items") or [] if _labels_match(i, label_selector)]
        return items, (listing.get("metadata") or {}).get("resourceVersion")

    def watch(
        self,
        namespace: str,
        plural: str,
        *,
        label_selector: str | None = None,
        resource_version: str | None = None,
        timeout_s: int = 300,
    ) -> WatchStream:
        """Changes of ``secrets`` or an adept.dev plural after ``resource_version``, as a ``WatchStream``.

        Raises:
            Unavailable: the watch could not be opened.
        """
        func, args = self._lister(namespace, plural)
        # "true", not True: the client writes a bool as "True", which the API server parses but emulators may not.
        kwargs: dict[str, Any] = {"watch": "true", "_preload_content": False, "timeout_seconds": timeout_s}
        if label_selector:
            kwargs["label_selector"] = label_selector
        if resource_version:
            kwargs["resource_version"] = resource_version
        what = f"watch {plural} in {namespace}"
        with _api_errors(what):
            response = func(*args, **kwargs)
        return WatchStream(response, what, label_selector)

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


class WatchStream:
    """``(event type, object)`` pairs of one watch request, until the server ends it.

    ``close()`` may be called from another thread: it shuts the connection down, which wakes a
    read blocked on it, so a watching thread can stop at once (and a process can exit cleanly).
    """

    def __init__(self, response: Any, what: str, label_selector: str | None) -> None:
        self._response = response
        self._what = what
        self._label_selector = label_selector
        self._closed = False

    def close(self) -> None:
        self._closed = True
        # urllib3 refuses (ValueError: no socket yet/any more; RuntimeError: the connection is back in
        # the pool) exactly when no read is left to interrupt: the watching thread is not blocked on it.
        with contextlib.suppress(ValueError, RuntimeError):
            self._response.shutdown()

    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        import json

        from kubernetes.watch.watch import iter_resp_lines
        from urllib3.exceptions import HTTPError

        try:
            for line in iter_resp_lines(self._response):
                if not line:
                    continue
                event = json.loads(line)
                if not isinstance(event, dict) or "type" not in event:
                    raise Unavailable(
                        f"{self._what}: the server answered something that is not a watch event"
                    )
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":  # e.g. 410 Gone: the resourceVersion is too old; list again
                    raise Unavailable(f"{self._what}: {obj.get('message', obj)}")
                if kind in ("ADDED", "MODIFIED", "DELETED") and _labels_match(obj, self._label_selector):
                    yield kind, obj
        except (HTTPError, OSError, ValueError) as e:
            if not self._closed:
                raise Unavailable(f"{self._what} broke: {type(e).__name__}: {e}") from None
        finally:
            self._response.release_conn()
