"""Tenant isolation: 1,000 randomized cross-tenant attempts, admin routes, keys never exposed."""

from __future__ import annotations

import pytest

from bench.reliability.isolation import (
    admin_refuses_tenant_keys,
    capture_logs,
    cross_tenant,
    keys_never_exposed,
    release_logs,
    timing_safe_comparison,
)
from bench.reliability.report import assert_passed

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def logs():
    handler = capture_logs()
    yield handler.lines
    release_logs(handler)


def test_a_thousand_cross_tenant_attempts_leak_nothing(platform, tenants, logs):
    out = cross_tenant(platform.url, tenants, attempts=1000, seed=7, include_metrics=False)
    assert out.bad_inputs == 1000
    assert_passed(out)


def test_metrics_reveal_no_other_tenant(platform, tenants):
    out = cross_tenant(platform.url, tenants, attempts=60, seed=3, include_metrics=True)
    assert out.details["metrics_leaks"] == 0
    assert_passed(out)


def test_admin_routes_refuse_tenant_keys(platform, tenants):
    assert_passed(admin_refuses_tenant_keys(platform.url, tenants))


def test_keys_never_in_responses_metrics_logs_or_data_dir(platform, tenants, logs):
    assert_passed(keys_never_exposed(platform.url, platform.admin_key, tenants, platform.data_dir, logs))


def test_key_comparison_is_timing_safe():
    assert_passed(timing_safe_comparison())
