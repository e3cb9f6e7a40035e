"""Sliding-window quotas, driven by a fake clock (no test waits on wall time)."""

from __future__ import annotations

import pytest

from adept.config.tenant import TenantQuotas
from adept.errors import RateLimited
from adept.tenancy import Tenant
from services.gateway.quotas import QuotaEnforcer, SlidingWindow


def tenant(rpm: int = 0, tpm: int = 0) -> Tenant:
    return Tenant("t", "", TenantQuotas(requests_per_minute=rpm, tokens_per_minute=tpm), "", "adept-xxxx")


def test_requests_per_minute_window_slides(clock):
    q = QuotaEnforcer(clock=clock)
    t = tenant(rpm=3)
    for _ in range(3):
        q.admit(t)
        clock.t += 10
    with pytest.raises(RateLimited) as e:
        q.admit(t)
    assert e.value.status == 429
    # The oldest request (t=1000) leaves the window at 1060; now is 1030.
    assert e.value.headers() == {"Retry-After": "30"}
    clock.t = 1060.0
    q.admit(t)  # one slot freed
    with pytest.raises(RateLimited):
        q.admit(t)


def test_refused_requests_do_not_count(clock):
    q = QuotaEnforcer(clock=clock)
    t = tenant(rpm=1)
    q.admit(t)
    for _ in range(5):
        with pytest.raises(RateLimited):
            q.admit(t)
    clock.t += 60
    q.admit(t)


def test_tokens_per_minute(clock):
    q = QuotaEnforcer(clock=clock)
    t = tenant(tpm=100)
    q.admit(t)
    q.charge_tokens("t", 60)
    q.admit(t)  # 60 < 100: still admitted
    q.charge_tokens("t", 60)
    with pytest.raises(RateLimited) as e:
        q.admit(t)
    assert e.value.code == "token_rate_limit_exceeded"
    clock.t += 61
    q.admit(t)


def test_zero_means_unlimited_and_tenants_are_separate(clock):
    q = QuotaEnforcer(clock=clock)
    for _ in range(1000):
        q.admit(tenant())
    a = Tenant("a", "", TenantQuotas(requests_per_minute=1), "", "")
    b = Tenant("b", "", TenantQuotas(requests_per_minute=1), "", "")
    q.admit(a)
    q.admit(b)
    with pytest.raises(RateLimited):
        q.admit(a)
    q.forget("a")
    q.admit(a)


def test_window_retry_after_needs_enough_to_drain():
    w = SlidingWindow(60)
    w.add(0, 50)
    w.add(30, 50)
    assert w.used(31) == 100
    assert w.retry_after(31, limit=100, need=40) == pytest.approx(29)  # first event leaves at 60
    assert w.retry_after(31, limit=100, need=100) == pytest.approx(59)
    assert w.used(60) == 50
