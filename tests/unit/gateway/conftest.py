"""Shared objects for gateway logic tests: a real tenant store and adapter registry in a temp dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from adept.adapters import AdapterRegistry
from adept.config.tenant import TenantQuotas, TenantSpec
from adept.tenancy import SQLiteTenantStore
from services.gateway.chat import CompletionService, Limits, ModelCatalog
from services.gateway.metrics import GatewayMetrics
from services.gateway.quotas import QuotaEnforcer
from tests.unit.gateway.fakes import EchoLLM, FakeKB, write_peft_dir

BASE = "bundled:test-base"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def store(tmp_path: Path) -> SQLiteTenantStore:
    return SQLiteTenantStore(tmp_path / "tenants.sqlite")


@pytest.fixture
def tenants(store: SQLiteTenantStore):
    acme, acme_key = store.create(TenantSpec(name="acme"))
    globex, globex_key = store.create(TenantSpec(name="globex", quotas=TenantQuotas(requests_per_minute=2)))
    return {"acme": (acme, acme_key), "globex": (globex, globex_key)}


@pytest.fixture
def registry(tmp_path: Path) -> AdapterRegistry:
    reg = AdapterRegistry(str(tmp_path / "adapters"))
    src = write_peft_dir(tmp_path / "peft", BASE)
    reg.publish("acme", "legal", src, {"base_model": BASE})
    reg.publish("acme", "legal", src, {"base_model": BASE})
    reg.publish("globex", "secret", src, {"base_model": BASE})
    return reg


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(registry: AdapterRegistry, clock: Clock):
    llm, kb = EchoLLM(), FakeKB()
    svc = CompletionService(
        llm=llm,
        catalog=ModelCatalog(registry, BASE, aliases=("base",)),
        kb=kb,
        limits=Limits(max_tokens_limit=64, default_max_tokens=16, default_top_k=3, max_top_k=10),
        metrics=GatewayMetrics(),
        quotas=QuotaEnforcer(clock=clock),
        clock=clock,
    )
    return svc, llm, kb
