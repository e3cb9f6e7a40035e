"""Who runs next: fair share by service (the virtual token counter), a bounded queue, and who yields a row.

Fair share follows VTC, the virtual token counter of "Fairness in Serving Large Language Models"
(Sheng et al., OSDI'24): every tenant has a counter of the service it received, charged for the
tokens actually processed — ``PROMPT_WEIGHT`` per prompt token when its request is admitted
(prefilled), ``OUTPUT_WEIGHT`` per token generated. Reservations are never charged: a client that
asks ``max_tokens=900`` and stops after one token paid for one token. The next request admitted
belongs to the tenant with the smallest counter, and may be any of that tenant's waiting requests
(the first that fits), not only the head of one global queue. A tenant that returns after idling
has its counter lifted to the smallest counter of the tenants being served, so idle time is not
banked as credit and the returning tenant is not punished for old service either.

The queue is bounded overall (503 ``Overloaded``) and per tenant (429 ``RateLimited``), both with
``Retry-After``, so a flood costs the flooder. A reserved part of the overall room only takes a
tenant's *first* waiting request: busy tenants filling the queue cannot get a newcomer refused.

Once admitted, every running row gets one token per step. When the batch is full and the tenant
next in line runs fewer rows than another tenant (by two or more), that tenant's newest row is
preempted: its cache is dropped and it goes back to the head of its queue with the tokens it
already has, to be recomputed by one prefill when it is admitted again (vLLM's recompute
preemption; the recompute is not charged again). Its stream just continues.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from adept.errors import Overloaded, RateLimited

PROMPT_WEIGHT = 1.0  # VTC's w_p: a prompt token costs one unit of service
OUTPUT_WEIGHT = 2.0  # VTC's w_q: a generated token costs two (a decode step is the scarcer resource)


class Queued(Protocol):
    tenant: str
    prompt_tokens: int
    preemptions: int
    cancelled: bool


class FairQueue:
    """Per-tenant FIFO queues; the least-served tenant (virtual token counter) goes next.

    Args:
        max_waiting: most requests waiting in all (HTTP 503 with Retry-After beyond).
        max_waiting_per_tenant: most requests one tenant may have waiting (HTTP 429 beyond).
        retry_after: seconds a rejected client should wait (a callable, so it follows the load).
        reserved: room kept for tenants with nothing waiting (default: a quarter of ``max_waiting``).
    """

    def __init__(
        self,
        *,
        max_waiting: int,
        max_waiting_per_tenant: int,
        retry_after: Callable[[], float] = lambda: 1.0,
        reserved: int | None = None,
    ) -> None:
        self.max_waiting = max_waiting
        self.max_waiting_per_tenant = max_waiting_per_tenant
        self.retry_after = retry_after
        self.reserved = min(max_waiting, max(1, max_waiting // 4) if reserved is None else reserved)
        self._queues: dict[str, collections.deque[Any]] = {}
        self.served: dict[str, float] = {}  # the virtual token counter of each tenant seen
        self._active: collections.Counter[str] = collections.Counter()  # waiting or in service
        self._floor = 0.0  # counter of the last tenant to go idle (lifts the next one when none is active)
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def waiting_by_tenant(self) -> dict[str, int]:
        return {t: len(q) for t, q in self._queues.items()}

    def push(self, seq: Queued) -> None:
        """Queue a new request; a tenant that had nothing waiting or running is lifted to the current minimum.

        Raises:
            RateLimited: this tenant already has ``max_waiting_per_tenant`` requests waiting.
            Overloaded: the queue is full (the shared part, or all of it for a tenant's first request).
        """
        mine = len(self._queues.get(seq.tenant, ()))
        if mine >= self.max_waiting_per_tenant:
            raise RateLimited(
                f"too many of your requests are waiting for this model replica ({mine}); retry shortly",
                retry_after=self.retry_after(),
                code="too_many_queued_requests",
            )
        room = self.max_waiting if mine == 0 else self.max_waiting - self.reserved
        if self._size >= room:
            raise Overloaded(
                "the model replica's queue is full; retry shortly", retry_after=self.retry_after()
            )
        if self._active[seq.tenant] == 0:
            active = [self.served.get(t, 0.0) for t, n in self._active.items() if n > 0]
            lift = min(active) if active else self._floor
            self.served[seq.tenant] = max(self.served.get(seq.tenant, 0.0), lift)
        self._queue(seq.tenant).append(seq)
        self._active[seq.tenant] += 1
        self._size += 1

    def push_front(self, seq: Queued) -> None:
        """Put a preempted request back at the head of its tenant's queue (never refused; still active)."""
        self._queue(seq.tenant).appendleft(seq)
        self._size += 1

    def tenants(self) -> list[str]:
        """Tenants with waiting requests, least served first (ties: the one with fewer requests active)."""
        return sorted(self._queues, key=lambda t: (self.served.get(t, 0.0), self._active[t]))

    def waiting(self, tenant: str) -> Iterator[Any]:
        """``tenant``'s waiting requests, oldest first (a snapshot: ``take`` may be called meanwhile)."""
        return iter(list(self._queues.get(tenant, ())))

    def peek(self) -> Any | None:
        """The oldest waiting request of the least-served tenant, or None."""
        tenants = self.tenants()
        return self._queues[tenants[0]][0] if tenants else None

    def pop(self) -> Any:
        """Remove and return ``peek()``, charging its prompt (see ``take``)."""
        seq = self.peek()
        assert seq is not None, "pop() on an empty FairQueue"
        self.take(seq)
        return seq

    def take(self, seq: Queued) -> None:
        """Admit ``seq`` (any waiting request): charge its prompt tokens, unless it is a preempted one's recompute."""
        queue = self._queues[seq.tenant]
        queue.remove(seq)
        if not queue:
            del self._queues[seq.tenant]
        self._size -= 1
        if seq.preemptions == 0:
            self.charge(seq.tenant, prompt_tokens=seq.prompt_tokens)

    def charge(self, tenant: str, *, prompt_tokens: int = 0, output_tokens: int = 0) -> None:
        """Add service received to ``tenant``'s counter."""
        cost = PROMPT_WEIGHT * prompt_tokens + OUTPUT_WEIGHT * output_tokens
        self.served[tenant] = self.served.get(tenant, 0.0) + cost

    def finished(self, seq: Queued) -> None:
        """``seq`` left for good (answered, failed, cancelled in the queue or in service)."""
        tenant = seq.tenant
        self._active[tenant] -= 1
        if self._active[tenant] <= 0:
            del self._active[tenant]
            if not self._active:
                self._floor = self.served.get(tenant, 0.0)

    def drain(self, predicate: Callable[[Any], bool]) -> list[Any]:
        """Remove and return every waiting request matching ``predicate`` (cancelled ones, or all on shutdown).

        The caller reports each through ``finished``.
        """
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
