"""Per-tenant rate limits: requests per minute and tokens per minute over a sliding window.

Limits come from the tenant record (``TenantQuotas``; 0 = unlimited). Counting is per gateway
replica: with N gateway replicas a tenant may get up to N times its limit, which is why the
embedded and default configurations run one gateway replica.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

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


class QuotaEnforcer:
    """Admits requests within each tenant's quotas and charges their tokens afterwards."""

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

    def admit(self, tenant: Tenant) -> None:
        """Count one request, or raise ``RateLimited`` (429 with ``Retry-After``) without counting it."""
        q = tenant.quotas
        with self._lock:
            now = self._clock()
            requests, tokens = self._windows(tenant.name)
            rpm, tpm = q.requests_per_minute, q.tokens_per_minute
            if rpm and requests.used(now) + 1 > rpm:
                raise RateLimited(
                    f"tenant {tenant.name!r} exceeded its quota of {rpm} requests per minute",
                    retry_after=requests.retry_after(now, rpm, 1),
                )
            # Tokens are known only after generation, so a request is refused once the window is spent.
            if tpm and tokens.used(now) >= tpm:
                raise RateLimited(
                    f"tenant {tenant.name!r} exceeded its quota of {tpm} tokens per minute",
                    retry_after=tokens.retry_after(now, tpm, 1),
                    code="token_rate_limit_exceeded",
                )
            requests.add(now, 1)

    def charge_tokens(self, tenant: str, n: int) -> None:
        """Record ``n`` prompt + completion tokens used by ``tenant``."""
        with self._lock:
            self._windows(tenant)[1].add(self._clock(), n)

    def forget(self, tenant: str) -> None:
        """Drop a deleted tenant's counters."""
        with self._lock:
            self._requests.pop(tenant, None)
            self._tokens.pop(tenant, None)

    async def purge_tenant(self, tenant: str) -> None:
        """``adept.platform.TenantState``: a tenant created later under the same name starts afresh."""
        self.forget(tenant)
