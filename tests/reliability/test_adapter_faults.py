"""Damaged adapters in the registry: a clear error for that adapter only, everyone else unaffected."""

from __future__ import annotations

import pytest

from bench.reliability.adapter_faults import DAMAGE, adapter_faults
from bench.reliability.report import assert_passed

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def results(platform, tenants, lora_dir):
    base = platform.ctx.catalog.base_model_id
    return adapter_faults(
        platform.url, platform.admin_key, platform.data_dir / "adapters", tenants, lora_dir, base
    )


@pytest.mark.parametrize("cached", [False, True], ids=["not-loaded", "loaded"])
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_adapter(results, damage, cached):
    assert_passed(results[f"adapter fault: {damage} ({'loaded' if cached else 'not loaded'})"])
