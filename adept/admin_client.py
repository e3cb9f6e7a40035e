"""The admin API of a running platform, from another process: the CLI, the operator, scripts.

A running platform holds its stores open (the Milvus Lite file, loaded adapters, quota
counters); other processes change them through its admin API, where the platform's own
``adept.platform.Platform`` does the work. This client is that transport: one method per admin
route, errors turned back into the ``AdeptError`` the server raised (same message, same exit code).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from adept.errors import AdeptError, Unavailable, error_from_http


@dataclass(frozen=True)
class RunningPlatform:
    """Where ``adept up`` serves a data dir (recorded in ``<data_dir>/run/platform.json``)."""

    url: str
    pid: int
    admin_key_file: str


RUN_FILE = Path("run") / "platform.json"


def record_running(data_dir: Path, url: str, admin_key_file: Path) -> Path:
    """Write the run file (0600) that lets CLI commands find this platform; returns its path."""
    import json

    path = data_dir / RUN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"url": url, "pid": os.getpid(), "admin_key_file": str(admin_key_file)}, f)
    os.replace(tmp, path)
    return path


def find_running(data_dir: Path) -> RunningPlatform | None:
    """The platform ``adept up`` runs on ``data_dir``, if its process is alive."""
    import json

    path = data_dir / RUN_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        running = RunningPlatform(str(data["url"]), int(data["pid"]), str(data["admin_key_file"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(running.pid, 0)
    except ProcessLookupError:
        return None  # a stale file from a platform that did not stop cleanly
    except PermissionError:
        pass  # alive, owned by another user
    return running


class PlatformHTTP:
    """One gateway over HTTP with one key (a tenant's or the admin's); errors come back as ``AdeptError``.

    Args:
        url: The gateway's base URL.
        key: The Bearer key every request carries.
        timeout_s: Per-request timeout (deleting a big tenant or ingesting a big batch can take a while).
    """

    def __init__(self, url: str, key: str, *, timeout_s: float = 600.0) -> None:
        import httpx

        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=httpx.Timeout(timeout_s, connect=10.0),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request; the JSON reply, or the server's error raised as an ``AdeptError``.

        The error keeps the server's message and code; ``details`` keeps a failed ingest's per-file reasons.
        """
        import httpx

        try:
            r = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise Unavailable(f"cannot reach Adept at {self.url}: {type(e).__name__}: {e}") from None
        if r.status_code >= 400:
            raise error_from_http(r.status_code, r.content, retry_after=r.headers.get("retry-after"))
        return r.json()


class AdminClient(PlatformHTTP):
    """Synchronous client of ``/admin/...`` on one gateway (the platform's admin key)."""

    @classmethod
    def for_running(cls, running: RunningPlatform) -> AdminClient:
        """A client for the platform ``find_running`` found, with the admin key it uses."""
        key = os.environ.get("ADEPT_ADMIN_KEY") or _read_key(Path(running.admin_key_file))
        return cls(running.url, key)

    # -- tenants -----------------------------------------------------------------------------------
    def create_tenant(self, spec: dict[str, Any]) -> dict[str, Any]:
        """The created tenant with its ``api_key`` (shown once)."""
        return self.call("POST", "/admin/tenants", json=spec)

    def list_tenants(self) -> list[dict[str, Any]]:
        return self.call("GET", "/admin/tenants")["data"]

    def get_tenant(self, name: str) -> dict[str, Any]:
        return self.call("GET", f"/admin/tenants/{name}")

    def rotate_key(self, name: str) -> str:
        return self.call("POST", f"/admin/tenants/{name}/rotate-key")["api_key"]

    def delete_tenant(self, name: str) -> dict[str, Any]:
        return self.call("DELETE", f"/admin/tenants/{name}")

    def purge_tenant(self, name: str) -> dict[str, Any]:
        return self.call("POST", f"/admin/tenants/{name}/purge")

    # -- adapters ----------------------------------------------------------------------------------
    def publish_adapter(
        self,
        tenant: str,
        name: str,
        path: str | Path,
        *,
        description: str = "",
        base_model: str | None = None,
        activate: bool = False,
    ) -> dict[str, Any]:
        """Publish a PEFT directory the gateway can read (same machine, or the shared volume)."""
        body = {
            "tenant": tenant,
            "name": name,
            "path": str(Path(path).expanduser().absolute()),
            "description": description,
            "base_model": base_model,
            "activate": activate,
        }
        return self.call("POST", "/admin/adapters", json=body)

    def list_adapters(self, tenant: str) -> list[dict[str, Any]]:
        return self.call("GET", f"/admin/adapters/{tenant}")["data"]

    def activate_adapter(self, tenant: str, name: str, version: str | None) -> dict[str, Any]:
        return self.call("POST", f"/admin/adapters/{tenant}/{name}/activate", json={"version": version})

    def delete_adapter(self, tenant: str, name: str, version: str | None = None) -> dict[str, Any]:
        params = {"version": version} if version else None
        return self.call("DELETE", f"/admin/adapters/{tenant}/{name}", params=params)

    def evaluate(self, tenant: str, model: str, evaluation: str) -> dict[str, float]:
        """Every metric's mean for ``model`` on ``evaluation`` (an evaluation set's JSONL), asked as
        ``tenant`` through the gateway's completion path: what eval-gated promotion compares."""
        body = {"model": model, "evaluation": evaluation}
        return self.call("POST", f"/admin/tenants/{tenant}/evaluate", json=body)["metrics"]

    def unload_adapter(self, adapter_id: str) -> list[str]:
        return self.call("POST", "/admin/adapters/unload", json={"model": adapter_id})["unloaded"]

    # -- a tenant's knowledge base -------------------------------------------------------------------
    def ingest_files(
        self, tenant: str, files: Sequence[tuple[str, bytes]], *, chunking: tuple[int, int] | None = None
    ) -> dict[str, Any]:
        """Upload ``[(name, bytes)]`` into the tenant's knowledge base; ``{"documents", "errors"}``.

        A batch where nothing could be ingested is an ``InvalidRequest`` whose ``details`` list
        every file's reason.
        """
        params = {"chunk_size_tokens": chunking[0], "chunk_overlap_tokens": chunking[1]} if chunking else None
        multipart = [("files", (name, data, "application/octet-stream")) for name, data in files]
        return self.call("POST", f"/admin/kb/{tenant}/documents", files=multipart, params=params)

    def ingest_records(
        self, tenant: str, records: list[dict[str, Any]], *, chunking: tuple[int, int] | None = None
    ) -> dict[str, Any]:
        params = {"chunk_size_tokens": chunking[0], "chunk_overlap_tokens": chunking[1]} if chunking else None
        return self.call("POST", f"/admin/kb/{tenant}/documents", json={"records": records}, params=params)

    def list_documents(self, tenant: str) -> list[dict[str, Any]]:
        return self.call("GET", f"/admin/kb/{tenant}/documents")["documents"]

    def delete_document(self, tenant: str, document_id: str) -> dict[str, Any]:
        from urllib.parse import quote

        return self.call("DELETE", f"/admin/kb/{tenant}/documents/{quote(document_id, safe='/')}")


def _read_key(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise AdeptError(
            f"cannot read the running platform's admin key {path}: {e.strerror or e} (or set ADEPT_ADMIN_KEY)"
        ) from None
