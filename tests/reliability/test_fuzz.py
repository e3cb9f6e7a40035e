"""Bad input gets a polite 4xx: targeted cases one by one, then schemathesis over the whole schema.

Cases that currently break a guarantee are ``xfail(strict=True)`` with the owner and the fix:
when the fix lands they pass, and strict xfail turns that into a reminder to drop the mark.
"""

from __future__ import annotations

import os

import httpx
import pytest

from bench.reliability.fuzz import (
    _judge,
    canary_listener,
    features_beside_a_stream,
    schema_fuzz,
    targeted_cases,
)
from bench.reliability.report import Outcome, assert_passed
from bench.reliability.schema_walk import walk

pytestmark = pytest.mark.integration


class _T:
    name, key = "t", "k"

    def headers(self) -> dict[str, str]:
        return {}


CASE_NAMES = [c[0] for c in targeted_cases(_T(), "http://x", "m")]
# Cases that break a guarantee go here as {name: "owner: file — why"} (strict xfail) until fixed.
KNOWN: dict[str, str] = {}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=KNOWN[n])) if n in KNOWN else n
        for n in CASE_NAMES
    ],
)
def test_targeted_bad_input(platform, tenants, name):
    tenant = tenants[0]
    out = Outcome(name)
    with canary_listener() as (ssrf, hits), httpx.Client(base_url=platform.url, timeout=120) as c:
        case = next(x for x in targeted_cases(tenant, ssrf, tenant.adapters[0]) if x[0] == name)
        _, method, path, kwargs, allowed = case
        kwargs = dict(kwargs)
        headers = {**tenant.headers(), **kwargs.pop("headers", {})}
        if path.startswith("/admin"):
            headers["Authorization"] = f"Bearer {platform.admin_key}"
        try:
            r = c.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as e:
            pytest.fail(f"the server dropped the connection: {type(e).__name__}: {e}")
        _judge(out, name, r, allowed)
        assert "x-injected" not in {k.lower() for k in r.headers}
        assert not hits, f"the platform fetched a URL it was only given as data: {hits}"
    assert_passed(out)
    # The server is still healthy for everyone after each bad input.
    ok = httpx.get(f"{platform.url}/v1/models", headers=tenants[1].headers(), timeout=60)
    assert ok.status_code == 200


def test_bad_feature_values_never_touch_another_tenants_stream(platform, tenants):
    out = features_beside_a_stream(platform.url, attacker=tenants[0], victim=tenants[1])
    assert out.bad_inputs >= 60
    assert_passed(out)


def test_every_route_with_and_without_keys(platform, tenants):
    keys = {"tenant": tenants[0].key, "admin": platform.admin_key}
    out = walk(platform.url, keys, cases_per_variant=4, seed=1)
    assert len(out.details["operations"]) >= 20
    assert_passed(out)


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("ADEPT_RELIABILITY_HEAVY"), reason="~75 s; set ADEPT_RELIABILITY_HEAVY=1"
)
def test_schemathesis_every_route(platform, tenants):
    keys = {"tenant": tenants[0].key, "admin": platform.admin_key}
    out = schema_fuzz(platform.url, keys, examples_per_operation=1, seed=1)
    assert len(out.details["operations"]) >= 20
    assert_passed(out)
