"""The gateway's real HTTP app (auth, errors, middleware, console mounted by its hook) over a temp data dir.

The tenant store and adapter registry are the real ones; the LLM and retrieval deployments are
the gateway tests' logic-layer stand-ins (the browser tier runs the real platform).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from adept.adapters import AdapterRegistry
from adept.config.platform import PlatformConfig
from adept.config.tenant import TenantQuotas, TenantSpec
from adept.platform import Platform
from adept.tenancy import SQLiteTenantStore, hash_api_key
from services.gateway.auth import Authenticator
from services.gateway.chat import CompletionService, Limits, ModelCatalog
from services.gateway.context import GatewayContext
from services.gateway.embeddings import EmbeddingService
from services.gateway.http_app import build_http_app
from services.gateway.quotas import QuotaEnforcer
from services.retrieval.protocol import DocumentInfo
from tests.unit.gateway.fakes import EchoLLM, FakeKB, write_peft_dir

BASE = "bundled:test-base"
ADMIN_KEY = "adept-admin-test-key"


class ListingKB(FakeKB):
    """FakeKB plus the listing calls the usage page makes."""

    async def list_documents(self, tenant: str) -> list[DocumentInfo]:
        return [DocumentInfo(id=f"{tenant}-doc", title="Doc", chunks=3)]

    async def count_documents(self, tenant: str) -> int:
        return 1


class InfoLLM(EchoLLM):
    """EchoLLM that also answers ``info()`` as one replica would."""

    async def info(self) -> dict:
        return {
            "base_model": BASE,
            "max_model_len": 2048,
            "loaded_adapters": ["acme/legal@v2"],
            "replica_id": "r1",
        }


@pytest.fixture
def platform(tmp_path: Path):
    store = SQLiteTenantStore(tmp_path / "tenants.sqlite")
    _, acme_key = store.create(TenantSpec(name="acme", quotas=TenantQuotas(requests_per_minute=100)))
    _, globex_key = store.create(TenantSpec(name="globex"))
    registry = AdapterRegistry(str(tmp_path / "adapters"))
    src = write_peft_dir(tmp_path / "peft", BASE)
    registry.publish("acme", "legal", src, {"base_model": BASE, "metrics": {"eval_loss": 1.5}})
    v2 = registry.publish("acme", "legal", src, {"base_model": BASE})
    (Path(v2.path) / "loss_curve.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    registry.publish("globex", "secret", src, {"base_model": BASE})
    kb = ListingKB()
    quotas = QuotaEnforcer()
    catalog = ModelCatalog(registry, BASE)
    llm = InfoLLM()
    ctx = GatewayContext(
        auth=Authenticator(store, hash_api_key(ADMIN_KEY)),
        catalog=catalog,
        completions=CompletionService(
            llm=llm,
            catalog=catalog,
            kb=kb,
            limits=Limits(max_tokens_limit=64, default_max_tokens=16, default_top_k=3, max_top_k=10),
            quotas=quotas,
        ),
        embeddings=EmbeddingService(kb, "bundled:all-minilm-l6-v2"),
        platform=Platform(
            PlatformConfig(data_dir=tmp_path, model=BASE),
            tenants=store,
            registry=registry,
            documents=kb,
            state=[quotas],
        ),
        kb=kb,
        quotas=quotas,
    )
    app = build_http_app(ctx)
    return {"app": app, "ctx": ctx, "acme": acme_key, "globex": globex_key, "tmp": tmp_path}


@pytest.fixture
async def client(platform):
    transport = httpx.ASGITransport(app=platform["app"])
    async with httpx.AsyncClient(transport=transport, base_url="http://adept.test") as c:
        yield c


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
