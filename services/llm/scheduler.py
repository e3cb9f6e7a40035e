"""Who runs next: per-tenant fair queuing, a bounded queue, and who yields a row to a starved tenant.

Waiting requests sit in one queue per tenant. The next one admitted comes from the tenant with the
smallest virtual start tag (start-time fair queuing, weighted by each request's KV-token cost):
a tenant that has been served less recently goes first, so a lone tenant's request is admitted
at the next free row even while another tenant has hundreds queued. The queue is bounded
overall (503 ``Overloaded`` beyond it) and per tenant (429 ``RateLimited``), both with
``Retry-After``, so a flood costs the flooder, not the replica's memory.

Once admitted, every running row gets one token per step. When the batch is full and the
tenant next in line runs fewer rows than another tenant (by two or more), that tenant's newest
row is preempted: its cache is dropped and it goes back to the head of its queue with the
tokens it already has, to be recomputed by one prefill when it is admitted again (vLLM's
recompute preemption). Its stream just continues.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from adept.errors import Overloaded, RateLimited


class Queued(Protocol):
    tenant: str
    cost: int
    cancelled: bool


class FairQueue:
    """Per-tenant FIFO queues served by start-time fair queuing on request cost.

    Args:
        max_waiting: most requests waiting in all (HTTP 503 with Retry-After beyond).
        max_waiting_per_tenant: most requests one tenant may have waiting (HTTP 429 beyond).
        retry_after: seconds a rejected client should wait (a callable, so it follows the load).
    """

    def __init__(
        self, *, max_waiting: int, max_waiting_per_tenant: int, retry_after: Callable[[], float] = lambda: 1.0
    ) -> None:
        self.max_waiting = max_waiting
        self.max_waiting_per_tenant = max_waiting_per_tenant
        self.retry_after = retry_after
        self._queues: dict[str, collections.deque[Any]] = {}
        self._finish: dict[str, float] = {}  # virtual finish tag of each tenant's last admitted request
        self._vtime = 0.0  # start tag of the request admitted last
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def waiting_by_tenant(self) -> dict[str, int]:
        return {t: len(q) for t, q in self._queues.items()}

    def push(self, seq: Queued) -> None:
        """Queue a new request.

        Raises:
            RateLimited: this tenant already has ``max_waiting_per_tenant`` requests waiting.
            Overloaded: the replica already has ``max_waiting`` requests waiting.
        """
        mine = len(self._queues.get(seq.tenant, ()))
        if mine >= self.max_waiting_per_tenant:
            raise RateLimited(
                f"too many of your requests are waiting for this model replica ({mine}); retry shortly",
                retry_after=self.retry_after(),
                code="too_many_queued_requests",
            )
        if self._size >= self.max_waiting:
            raise Overloaded(
                "the model replica's queue is full; retry shortly", retry_after=self.retry_after()
            )
        self._queue(seq.tenant).append(seq)
        self._size += 1

    def push_front(self, seq: Queued) -> None:
        """Put a preempted request back at the head of its tenant's queue (never refused)."""
        self._queue(seq.tenant).appendleft(seq)
        self._size += 1

    def peek(self) -> Any | None:
        """The request fair queuing admits next, or None."""
        tenant = self._next_tenant()
        return None if tenant is None else self._queues[tenant][0]

    def pop(self) -> Any:
        """Remove and return ``peek()``, charging its cost to its tenant."""
        tenant = self._next_tenant()
        assert tenant is not None, "pop() on an empty FairQueue"
        seq = self._queues[tenant].popleft()
        start = self._start(tenant)
        self._vtime = start
        self._finish[tenant] = start + max(1, seq.cost)
        self._size -= 1
        if not self._queues[tenant]:
            del self._queues[tenant]
        return seq

    def drain(self, predicate: Callable[[Any], bool]) -> list[Any]:
        """Remove and return every waiting request matching ``predicate`` (cancelled ones, or all on shutdown)."""
        out: list[Any] = []
        for tenant in list(self._queues):
            keep = collections.deque()
            for seq in self._queues[tenant]:
                (out if predicate(seq) else keep).append(seq)
            if keep:
                self._queues[tenant] = keep
            else:
                del self._queues[tenant]
        self._size -= len(out)
        return out

    def _queue(self, tenant: str) -> collections.deque[Any]:
        if tenant not in self._queues:
            self._queues[tenant] = collections.deque()
        return self._queues[tenant]

    def _start(self, tenant: str) -> float:
        # A tenant returning after idling starts at the current virtual time: no credit for idle time.
        return max(self._finish.get(tenant, 0.0), self._vtime)

    def _next_tenant(self) -> str | None:
        if not self._queues:
            return None
        return min(self._queues, key=self._start)  # dicts keep insertion order: ties go to the earlier tenant


def preemption_victim(
    candidate_tenant: str, running: Iterable[Any], also_running: Iterable[Any] = ()
) -> Any | None:
    """The row of ``running`` to preempt so ``candidate_tenant`` gets one, or None if no tenant runs 2+ more.

    Takes the newest row (least work to recompute) of the tenant running the most rows;
    ``also_running`` (rows just admitted) count towards their tenants but are never preempted.
    """
    rows = list(running)
    counts = collections.Counter(s.tenant for s in [*rows, *also_running])
    if not counts:
        return None
    heaviest, n = counts.most_common(1)[0]
    if heaviest == candidate_tenant or n < counts.get(candidate_tenant, 0) + 2:
        return None
    mine = [s for s in rows if s.tenant == heaviest]
    return max(mine, key=lambda s: s.submitted) if mine else None
