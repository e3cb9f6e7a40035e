"""Sliding-window quotas, driven by a fake clock (no test waits on wall time)."""

from __future__ import annotations

import asyncio

import pytest

from adept.config.tenant import TenantQuotas
from adept.errors import RateLimited
from adept.tenancy import Tenant
from services.gateway.quotas import QuotaEnforcer, SlidingWindow


def admit(q: QuotaEnforcer, t: Tenant) -> None:
    asyncio.run(q.admit(t))


def tenant(rpm: int = 0, tpm: int = 0) -> Tenant:
    return Tenant("t", "", TenantQuotas(requests_per_minute=rpm, tokens_per_minute=tpm), "", "adept-xxxx")


def test_requests_per_minute_window_slides(clock):
    q = QuotaEnforcer(clock=clock)
    t = tenant(rpm=3)
    for _ in range(3):
        admit(q, t)
        clock.t += 10
    with pytest.raises(RateLimited) as e:
        admit(q, t)
    assert e.value.status == 429
    # The oldest request (t=1000) leaves the window at 1060; now is 1030.
    assert e.value.headers() == {"Retry-After": "30"}
    clock.t = 1060.0
    admit(q, t)  # one slot freed
    with pytest.raises(RateLimited):
        admit(q, t)


def test_refused_requests_do_not_count(clock):
    q = QuotaEnforcer(clock=clock)
    t = tenant(rpm=1)
    admit(q, t)
    for _ in range(5):
        with pytest.raises(RateLimited):
            admit(q, t)
    clock.t += 60
    admit(q, t)


def test_tokens_per_minute(clock):
    q = QuotaEnforcer(clock=clock)
    t = tenant(tpm=100)
    admit(q, t)
    q.charge_tokens("t", 60)
    admit(q, t)  # 60 < 100: still admitted
    q.charge_tokens("t", 60)
    with pytest.raises(RateLimited) as e:
        admit(q, t)
    assert e.value.code == "token_rate_limit_exceeded"
    clock.t += 61
    admit(q, t)


def test_zero_means_unlimited_and_tenants_are_separate(clock):
    q = QuotaEnforcer(clock=clock)
    for _ in range(1000):
        admit(q, tenant())
    a = Tenant("a", "", TenantQuotas(requests_per_minute=1), "", "")
    b = Tenant("b", "", TenantQuotas(requests_per_minute=1), "", "")
    admit(q, a)
    admit(q, b)
    with pytest.raises(RateLimited):
        admit(q, a)
    asyncio.run(q.purge_tenant("a"))
    admit(q, a)


def test_window_retry_after_needs_enough_to_drain():
    w = SlidingWindow(60)
    w.add(0, 50)
    w.add(30, 50)
    assert w.used(31) == 100
    assert w.retry_after(31, limit=100, need=40) == pytest.approx(29)  # first event leaves at 60
    assert w.retry_after(31, limit=100, need=100) == pytest.approx(59)
    assert w.used(60) == 50


def test_usage_reads_the_window(clock):
    q = QuotaEnforcer(clock=clock)
    t = tenant(rpm=10)
    admit(q, t)
    admit(q, t)
    q.charge_tokens("t", 42)
    assert asyncio.run(q.usage("t")) == (2, 42)
    clock.t += 61
    assert asyncio.run(q.usage("t")) == (0, 0)


def test_a_refusal_crosses_a_process_boundary_intact():
    """Shard actors return refusals as data (pickled by Ray); the gateway raises the same 429."""
    import pickle

    from services.gateway.quotas import QuotaLedger

    ledger = QuotaLedger()
    assert ledger.admit("t", 1, 0) is None
    refusal = pickle.loads(pickle.dumps(ledger.admit("t", 1, 0)))
    err = refusal.error()
    assert isinstance(err, RateLimited) and err.status == 429 and int(err.headers()["Retry-After"]) >= 1


def test_tenants_map_to_shards_stably_and_spread():
    from services.gateway.quota_shards import shard_of

    names = [f"tenant-{i}" for i in range(400)]
    first = [shard_of(n, 4) for n in names]
    assert first == [shard_of(n, 4) for n in names]  # every replica (and restart) agrees
    assert {s: first.count(s) for s in range(4)} == {s: first.count(s) for s in set(first)}
    assert min(first.count(s) for s in range(4)) > 60  # no shard is left out or overloaded
