"""A full replica queue answers over HTTP: 429 for the tenant that floods, 503 overall, both with Retry-After.

The gateway's real app over the real engine (the in-process platform of the reliability suite):
one row, one waiting request per tenant, two waiting in all.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def small_platform(tiny_phi3: Path, tmp_path_factory: pytest.TempPathFactory):
    from bench.reliability.inproc import serving_config, start_inprocess

    llm = {
        "max_batch_size": 1,
        "max_queued_requests": 2,
        "max_queued_per_tenant": 1,
        # The first request must hold the only row until the test lets it go, however fast the machine.
        "max_tokens_limit": 4096,
        "max_model_len": 8192,
    }
    cfg = serving_config(tmp_path_factory.mktemp("bp"), tiny_phi3, llm=llm)
    p = start_inprocess(cfg, "adept-admin-" + secrets.token_urlsafe(24))
    yield p
    p.stop()


def _tenant(p, name: str) -> dict[str, str]:
    r = httpx.post(
        f"{p.url}/admin/tenants",
        json={"name": name, "quotas": {"requests_per_minute": 0}},
        headers={"Authorization": f"Bearer {p.admin_key}"},
    )
    r.raise_for_status()
    return {"Authorization": f"Bearer {r.json()['api_key']}"}


def test_full_queue_is_429_per_tenant_and_503_overall_with_retry_after(small_platform):
    p = small_platform
    keys = {t: _tenant(p, f"{t}-{secrets.token_hex(2)}") for t in ("a", "b", "c")}
    body = {
        "model": str(p.config.platform.model),
        "messages": [{"role": "user", "content": "restore power"}],
        "max_tokens": 64,
    }

    async def wait_for(predicate, what: str):
        deadline = time.monotonic() + 60
        while not predicate():
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.02)

    async def main():
        async with httpx.AsyncClient(base_url=p.url, timeout=120) as c:
            long = {**body, "stream": True, "max_tokens": 4096}
            async with c.stream("POST", "/v1/chat/completions", json=long, headers=keys["a"]) as running:
                assert running.status_code == 200  # headers come after the first token: it holds the only row
                queued = [
                    asyncio.ensure_future(c.post("/v1/chat/completions", json=body, headers=keys[t]))
                    for t in ("a", "b")
                ]
                await wait_for(lambda: len(p.engine.waiting) == 2, "two requests waiting")
                per_tenant = await c.post("/v1/chat/completions", json=body, headers=keys["a"])
                overall = await c.post("/v1/chat/completions", json=body, headers=keys["c"])
            # Leaving the stream disconnects it: the row is freed and the queued requests run.
            done = await asyncio.gather(*queued)
        return per_tenant, overall, done

    per_tenant, overall, done = asyncio.run(main())
    assert per_tenant.status_code == 429 and int(per_tenant.headers["Retry-After"]) >= 1
    assert per_tenant.json()["error"]["code"] == "too_many_queued_requests"
    assert overall.status_code == 503 and int(overall.headers["Retry-After"]) >= 1
    assert overall.json()["error"]["code"] == "overloaded"
    assert [r.status_code for r in done] == [200, 200]  # the queued ones were served afterwards
