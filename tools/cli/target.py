"""Which platform a management command acts on, and how it gets there.

- ``--url`` (or ``$ADEPT_URL``): a running platform, anywhere, through its admin API.
- else, a platform ``adept up`` runs on this data dir: through its admin API too, because it
  holds the stores open (the Milvus Lite file, loaded adapters, quota counters) and must be the
  one that changes them.
- else, nothing runs: the kernel's ``Platform`` over the data dir's stores, in this process.

Either way the operation is the kernel's: the admin API runs ``Platform`` in the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from tools.cli.common import platform_config

T = TypeVar("T")

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="ADEPT_URL",
        help="Manage the platform running at this URL through its admin API "
        "(default: the one `adept up` runs on the data dir, else the data dir itself).",
        show_default=False,
    ),
]
AdminKeyOption = Annotated[
    str | None,
    typer.Option(
        "--admin-key",
        envvar="ADEPT_ADMIN_KEY",
        help="Admin key for --url (default: the data dir's admin.key).",
        show_default=False,
    ),
]


@dataclass
class Target:
    """Exactly one of ``client`` (a running platform's admin API) and ``platform`` (this process)."""

    where: str
    client: Any = None
    platform: Any = None

    @property
    def remote(self) -> bool:
        return self.client is not None


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class _LocalDocuments:
    """The data dir's knowledge base, opened only when a tenant's documents must go (no model loaded)."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    async def delete_tenant(self, tenant: str) -> None:
        from services.retrieval.store import ChunkStore

        def delete() -> None:
            store = ChunkStore.existing(
                self.cfg.resolved_milvus_uri,
                self.cfg.collection,
                token=self.cfg.milvus_token,
                client_options=self.cfg.milvus_client_options(),
            )
            if store is not None:
                try:
                    store.delete_tenant(tenant)
                finally:
                    store.close()

        await asyncio.to_thread(delete)


@contextlib.contextmanager
def open_target(
    data_dir: str | None, overrides: list[str] | None, url: str | None, admin_key: str | None
) -> Iterator[Target]:
    """The platform to act on (see the module docstring); closed on exit."""
    from adept.admin_client import AdminClient, find_running

    cfg = platform_config(data_dir, overrides)
    if url:
        key = admin_key or _data_dir_key(cfg.data_dir)
        with AdminClient(url, key) as client:
            yield Target(f"the platform at {url}", client=client)
        return
    running = find_running(cfg.data_dir)
    if running is not None:
        client = AdminClient(running.url, admin_key) if admin_key else AdminClient.for_running(running)
        with client:
            yield Target(f"the running platform at {running.url} (pid {running.pid})", client=client)
        return
    from adept.platform import Platform

    platform = Platform(cfg, documents=_LocalDocuments(cfg))
    try:
        yield Target(f"data dir {cfg.data_dir}", platform=platform)
    finally:
        platform.close()


def _data_dir_key(data_dir: Path) -> str:
    from adept.errors import AuthenticationError

    key_file = data_dir / "admin.key"
    if key_file.is_file():
        return key_file.read_text(encoding="utf-8").strip()
    raise AuthenticationError("no admin key for --url: pass --admin-key or set ADEPT_ADMIN_KEY")
