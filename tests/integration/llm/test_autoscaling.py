"""Embedded mode scales for real: a ramp from several tenants adds an LLM replica, quiet takes it away,
and through both no request fails and no stream is cut.

Real Ray Serve on this machine (loopback only), the tiny Phi-3 with one LoRA adapter per tenant.
The autoscaling delays are short (look-back 12 s, just above Serve's 10 s metric push interval, so
Serve accepts the configuration without a warning); every wait on the autoscaler is a condition
with a generous cap, so a busy machine makes the test slower, never flaky. It
asserts on events (2 replicas reached, back to 1, zero failures, every stream complete), never
on speed.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bench.autoscaling import (
    Plan,
    autoscaling_config,
    free_port,
    run_autoscaling,
    summarise,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def platform(tiny_phi3: Path, short_tmp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from bench.reliability.seed import make_lora, seed_tenants
    from services.embedded import start_platform

    admin_key = "adept-admin-autoscaling-" + str(random.getrandbits(64))
    monkeypatch.setenv("ADEPT_ADMIN_KEY", admin_key)
    root = Path(tempfile_dir(short_tmp))
    lora = make_lora(tiny_phi3, tmp_path / "lora", seed=1)
    cfg = autoscaling_config(root / "data", tiny_phi3, free_port(), max_replicas=2, max_batch_size=4)
    started = start_platform(cfg, num_cpus=2, timeout_s=600)
    try:
        tenants = seed_tenants(started.url, admin_key, lora, n=3, finetuning=False, docs_per_tenant=1)
        yield started, tenants
    finally:
        started.stop()


def tempfile_dir(parent: Path) -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="as-", dir=parent)  # short: Ray's unix sockets live under it


# Serve's "look_back_period_s must be greater than metrics_interval_s" (a config it will refuse) fails the test.
@pytest.mark.filterwarnings("error:.*look_back_period_s:FutureWarning")
def test_replicas_follow_the_load_up_and_down_without_losing_a_request(platform):
    started, tenants = platform
    # Target 0.75 x batch 4 = 3 ongoing requests per replica: 10 streams ask for 2 replicas (the max).
    plan = Plan(peak=10, warm_s=2.0, ramp_s=6.0, hold_s=5.0, max_replicas=2, quiet_concurrency=1)
    raw = run_autoscaling(started, tenants, plan, max_tokens=48)
    result = summarise(raw, plan, ray_temp=started.ray_temp_dir, app=started.config.app_name, capacity=2)
    samples = result["samples"]
    assert result["scaled_up"], f"never reached 2 replicas: {samples[-5:]}"
    assert result["scaled_down"], f"never came back to 1 replica: {samples[-5:]}"
    peak_at = next(i for i, s in enumerate(samples) if s["running"] == 2)
    assert any(s["running"] == 1 and not s["stopping"] for s in samples[peak_at:])  # 2, then back to 1
    assert result["failed"] == 0, result["problems"]
    assert result["cut_streams"] == 0
    records = result["records"]
    assert records and all(r["status"] == 200 and r["problem"] is None for r in records)
    assert {r["tenant"] for r in records} == {t.name for t in tenants}  # every tenant took part
    # Requests kept flowing through the scale-down: some ran after a replica began to drain.
    assert any(r["start"] >= result["timeline"]["quiet"] for r in records)
