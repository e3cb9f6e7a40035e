"""Quotas counted once for all gateway replicas: tenants spread over a few named Ray actors.

Each gateway replica would otherwise count on its own, and a tenant served by N replicas would get
up to N times its quota. Here the tenant's windows live in one ``QuotaShard`` actor (the shard is
the tenant name's sha256 modulo ``gateway.quota_shards``), which every replica finds by name and
calls for each request: a few hundred microseconds on one node, one network hop on a cluster.

The actors are detached (they outlive the replica that happened to create them) and restart on
failure with empty windows: a shard lost with its node forgets at most one window of counts.
A shard that does not answer within ``timeout_s`` fails the request with 503 (never admits it
uncounted).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

import ray
from ray.exceptions import RayError

from adept.errors import Unavailable
from adept.tenancy import Tenant
from services.gateway.quotas import WINDOW_S, QuotaLedger, Refusal

log = logging.getLogger(__name__)
NAMESPACE = "adept"


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=3)
class QuotaShard:
    """One shard's ``QuotaLedger`` (a Ray actor; its clock is the only one its tenants are timed by)."""

    def __init__(self, window_s: float) -> None:
        self.ledger = QuotaLedger(window_s=window_s)

    def admit(self, tenant: str, rpm: int, tpm: int) -> Refusal | None:
        return self.ledger.admit(tenant, rpm, tpm)

    def charge(self, tenant: str, n: int) -> None:
        self.ledger.charge(tenant, n)

    def usage(self, tenant: str) -> tuple[int, int]:
        return self.ledger.usage(tenant)

    def forget(self, tenant: str) -> None:
        self.ledger.forget(tenant)


def shard_of(tenant: str, shards: int) -> int:
    """The shard of ``tenant``: stable across processes and restarts (not Python's salted ``hash``)."""
    return int.from_bytes(hashlib.sha256(tenant.encode("utf-8")).digest()[:8], "big") % shards


def shard_name(app_name: str, index: int) -> str:
    return f"adept-quotas-{app_name}-{index}"


class SharedQuotas:
    """``services.gateway.quotas.Quotas`` over ``QuotaShard`` actors shared by every gateway replica.

    Args:
        app_name: The Serve application's name (two applications on one Ray cluster count apart).
        shards: How many actors the tenants are spread over (every replica must use the same number).
        window_s: The sliding window.
        timeout_s: How long a request waits for its shard before failing with 503.
    """

    def __init__(
        self, app_name: str, shards: int, *, window_s: float = WINDOW_S, timeout_s: float = 5.0
    ) -> None:
        self.app_name, self.shards = app_name, shards
        self.window_s, self.timeout_s = window_s, timeout_s
        self._handles: dict[int, Any] = {}

    def _shard(self, tenant: str) -> Any:
        index = shard_of(tenant, self.shards)
        handle = self._handles.get(index)
        if handle is None:
            # get_if_exists: replicas starting together agree on one actor per name.
            handle = QuotaShard.options(
                name=shard_name(self.app_name, index),
                namespace=NAMESPACE,
                lifetime="detached",
                get_if_exists=True,
            ).remote(self.window_s)
            self._handles[index] = handle
        return handle

    async def _call(self, tenant: str, method: str, *args: Any) -> Any:
        ref = getattr(self._shard(tenant), method).remote(tenant, *args)
        try:
            return await asyncio.wait_for(ref, self.timeout_s)
        except (TimeoutError, RayError) as e:
            self._handles.pop(shard_of(tenant, self.shards), None)  # look the actor up again next time
            raise Unavailable(f"quota counter unavailable: {type(e).__name__}") from None

    async def admit(self, tenant: Tenant) -> None:
        q = tenant.quotas
        refusal = await self._call(tenant.name, "admit", q.requests_per_minute, q.tokens_per_minute)
        if refusal is not None:
            raise refusal.error()

    def charge_tokens(self, tenant: str, n: int) -> None:
        if n > 0:
            # Fire and forget: the caller's response is not held up by accounting.
            self._shard(tenant).charge.remote(tenant, n)

    async def usage(self, tenant: str) -> tuple[int, int]:
        return tuple(await self._call(tenant, "usage"))  # type: ignore[return-value]

    async def purge_tenant(self, tenant: str) -> None:
        await self._call(tenant, "forget")
