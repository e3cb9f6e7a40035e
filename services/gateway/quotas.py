"""Per-tenant rate limits: requests per minute and tokens per minute over a sliding window.

Limits come from the tenant record (``TenantQuotas``; 0 = unlimited). The rules live in
``QuotaLedger``; where the ledger lives decides what "per tenant" means:

- ``QuotaEnforcer``: one ledger in this process (unit tests, the in-process platform);
- ``services.gateway.quota_shards.SharedQuotas``: one ledger per shard of tenants, each in a named
  Ray actor that every gateway replica calls, so a tenant's requests are counted once however many
  gateway replicas serve them (the Serve application always uses it).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from adept.errors import RateLimited
from adept.tenancy import Tenant

WINDOW_S = 60.0


class SlidingWindow:
    """Amounts recorded at times; ``used`` is the sum within the last ``window_s`` seconds."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self._events: deque[tuple[float, int]] = deque()
        self._total = 0

    def _expire(self, now: float) -> None:
        horizon = now - self.window_s
        while self._events and self._events[0][0] <= horizon:
            self._total -= self._events.popleft()[1]

    def used(self, now: float) -> int:
        self._expire(now)
        return self._total

    def add(self, now: float, amount: int) -> None:
        if amount > 0:
            self._events.append((now, amount))
            self._total += amount

    def retry_after(self, now: float, limit: int, need: int) -> float:
        """Seconds until ``used + need <= limit`` holds again (the window may need to drain fully)."""
        self._expire(now)
        excess = self._total + need - limit
        for t, amount in self._events:
            excess -= amount
            if excess <= 0:
                return max(0.0, t + self.window_s - now)
        return self.window_s


@dataclass(frozen=True)
class Refusal:
    """Why a request was refused: plain data, so it crosses a Ray actor call intact."""

    message: str
    retry_after: float
    code: str | None = None

    def error(self) -> RateLimited:
        return RateLimited(self.message, retry_after=self.retry_after, code=self.code)


class QuotaLedger:
    """Every tenant's request and token windows; the quota rules, wherever the ledger lives.

    Thread-safe. ``clock`` is the ledger's own (one clock per ledger, so callers on several
    machines never compare their clocks).
    """

    def __init__(self, *, window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._requests: dict[str, SlidingWindow] = {}
        self._tokens: dict[str, SlidingWindow] = {}

    def _windows(self, tenant: str) -> tuple[SlidingWindow, SlidingWindow]:
        if tenant not in self._requests:
            self._requests[tenant] = SlidingWindow(self.window_s)
            self._tokens[tenant] = SlidingWindow(self.window_s)
        return self._requests[tenant], self._tokens[tenant]

    def admit(self, tenant: str, rpm: int, tpm: int) -> Refusal | None:
        """Count one request of ``tenant``, or return why not (a refused request is not counted)."""
        with self._lock:
            now = self._clock()
            requests, tokens = self._windows(tenant)
            if rpm and requests.used(now) + 1 > rpm:
                return Refusal(
                    f"tenant {tenant!r} exceeded its quota of {rpm} requests per minute",
                    requests.retry_after(now, rpm, 1),
                )
            # Tokens are known only after generation, so a request is refused once the window is spent.
            if tpm and tokens.used(now) >= tpm:
                return Refusal(
                    f"tenant {tenant!r} exceeded its quota of {tpm} tokens per minute",
                    tokens.retry_after(now, tpm, 1),
                    "token_rate_limit_exceeded",
                )
            requests.add(now, 1)
            return None

    def charge(self, tenant: str, n: int) -> None:
        """Record ``n`` prompt + completion tokens used by ``tenant``."""
        with self._lock:
            self._windows(tenant)[1].add(self._clock(), n)

    def usage(self, tenant: str) -> tuple[int, int]:
        """Requests and tokens ``tenant`` used within the window."""
        with self._lock:
            now = self._clock()
            requests, tokens = self._requests.get(tenant), self._tokens.get(tenant)
            return (requests.used(now) if requests else 0, tokens.used(now) if tokens else 0)

    def forget(self, tenant: str) -> None:
        """Drop a deleted tenant's windows."""
        with self._lock:
            self._requests.pop(tenant, None)
            self._tokens.pop(tenant, None)


class Quotas(Protocol):
    """What the gateway needs from a quota counter (also an ``adept.platform.TenantState``)."""

    window_s: float

    async def admit(self, tenant: Tenant) -> None:
        """Count one request, or raise ``RateLimited`` (429 with ``Retry-After``) without counting it."""
        ...

    def charge_tokens(self, tenant: str, n: int) -> None:
        """Record ``n`` tokens used by ``tenant`` (never blocks the caller)."""
        ...

    async def usage(self, tenant: str) -> tuple[int, int]:
        """Requests and tokens ``tenant`` used within the window."""
        ...

    async def purge_tenant(self, tenant: str) -> None:
        """A tenant created later under the same name starts afresh."""
        ...


class QuotaEnforcer:
    """``Quotas`` counted in this process: right for one process only (tests, the in-process platform)."""

    def __init__(self, *, window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.ledger = QuotaLedger(window_s=window_s, clock=clock)
        self.window_s = window_s

    async def admit(self, tenant: Tenant) -> None:
        refusal = self.ledger.admit(
            tenant.name, tenant.quotas.requests_per_minute, tenant.quotas.tokens_per_minute
        )
        if refusal is not None:
            raise refusal.error()

    def charge_tokens(self, tenant: str, n: int) -> None:
        self.ledger.charge(tenant, n)

    async def usage(self, tenant: str) -> tuple[int, int]:
        return self.ledger.usage(tenant)

    async def purge_tenant(self, tenant: str) -> None:
        self.ledger.forget(tenant)
