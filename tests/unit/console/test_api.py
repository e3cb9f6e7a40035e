"""The console's JSON routes on the gateway's real app: same auth, tenant isolation, admin-only views."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

from services.console import inventory
from tests.unit.console.conftest import ADMIN_KEY, bearer


async def test_adapters_lists_only_the_callers_own(client, platform) -> None:
    r = await client.get("/v1/adapters", headers=bearer(platform["acme"]))
    assert r.status_code == 200
    data = r.json()["data"]
    assert [a["name"] for a in data] == ["legal"]
    versions = data[0]["versions"]
    assert [v["version"] for v in versions] == ["v1", "v2"]
    assert data[0]["serving_version"] == "v2"
    assert versions[0]["manifest"]["metrics"] == {"eval_loss": 1.5}
    assert [v["has_loss_curve"] for v in versions] == [False, True]
    assert "secret" not in r.text and "globex" not in r.text

    other = await client.get("/v1/adapters", headers=bearer(platform["globex"]))
    assert [a["name"] for a in other.json()["data"]] == ["secret"]


async def test_loss_curve_is_served_to_its_owner_only(client, platform) -> None:
    r = await client.get("/v1/adapters/legal/v2/loss_curve.png", headers=bearer(platform["acme"]))
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content.startswith(b"\x89PNG")
    missing = await client.get("/v1/adapters/legal/v1/loss_curve.png", headers=bearer(platform["acme"]))
    assert missing.status_code == 404
    # Another tenant's adapter reads exactly like one that does not exist.
    foreign = await client.get("/v1/adapters/secret/v1/loss_curve.png", headers=bearer(platform["acme"]))
    absent = await client.get("/v1/adapters/nothing/v1/loss_curve.png", headers=bearer(platform["acme"]))
    assert foreign.status_code == absent.status_code == 404
    assert foreign.json()["error"]["message"].replace("secret", "X") == absent.json()["error"][
        "message"
    ].replace("nothing", "X")


@pytest.mark.parametrize(
    "path",
    [
        "/v1/adapters/..%2f..%2fglobex%2fsecret/v1/loss_curve.png",
        "/v1/adapters/legal/..%2fv1/loss_curve.png",
        "/v1/adapters/legal/v2/manifest.json",
        "/v1/adapters/legal/latest/loss_curve.png",
        "/v1/adapters/LEGAL/v2/loss_curve.png",
    ],
)
async def test_adapter_files_cannot_be_reached_sideways(client, platform, path: str) -> None:
    r = await client.get(path, headers=bearer(platform["acme"]))
    assert r.status_code == 404


async def test_metrics_route(client, platform) -> None:
    r = await client.get("/v1/adapters/legal/v1/metrics", headers=bearer(platform["acme"]))
    assert r.status_code == 200 and r.json()["metrics"] == {"eval_loss": 1.5}
    assert r.json()["id"] == "acme/legal@v1"


async def test_usage_counts_against_the_callers_quotas(client, platform) -> None:
    headers = bearer(platform["acme"])
    await client.get("/v1/models", headers=headers)
    r = await client.get("/v1/usage", headers=headers)
    assert r.status_code == 200
    u = r.json()
    assert u["tenant"] == "acme" and u["enforced"] is True
    q = u["quotas"]
    assert q["requests_per_minute"] == {"used": 2, "limit": 100}
    assert q["documents"] == {"used": 1, "limit": 10_000}
    assert q["adapters"] == {"used": 1, "limit": 10}
    other = (await client.get("/v1/usage", headers=bearer(platform["globex"]))).json()
    assert other["tenant"] == "globex" and other["quotas"]["requests_per_minute"]["used"] == 1


@pytest.mark.parametrize("path", ["/v1/adapters", "/v1/usage", "/v1/adapters/legal/v2/loss_curve.png"])
async def test_tenant_routes_need_a_tenant_key(client, path: str) -> None:
    assert (await client.get(path)).status_code == 401
    assert (await client.get(path, headers=bearer("adept-wrong"))).status_code == 401
    # The admin key is not a tenant key.
    assert (await client.get(path, headers=bearer(ADMIN_KEY))).status_code == 401


@pytest.mark.parametrize("path", ["/admin/replicas", "/admin/jobs"])
async def test_admin_routes_need_the_admin_key(client, platform, path: str) -> None:
    assert (await client.get(path)).status_code == 401
    assert (await client.get(path, headers=bearer(platform["acme"]))).status_code == 403
    assert (await client.get(path, headers=bearer(ADMIN_KEY))).status_code == 200


async def test_replicas_reports_loaded_adapters(client) -> None:
    r = await client.get("/admin/replicas", headers=bearer(ADMIN_KEY))
    body = r.json()
    assert body["llm_replicas"] == [
        {
            "replica_id": "r1",
            "base_model": "bundled:test-base",
            "max_model_len": 2048,
            "loaded_adapters": ["acme/legal@v2"],
        }
    ]
    assert body["deployments"] == []  # no Serve controller in this test


async def test_jobs_lists_every_tenants_jobs_from_the_job_store(client, platform) -> None:
    from adept.config.finetuning import FineTuningConfig
    from adept.finetuning.files import FileStore
    from adept.finetuning.jobs import AdeptOptions, Hyperparameters, JobRecord, StepRecord, advance
    from adept.finetuning.service import FineTuning
    from adept.finetuning.store import SQLiteJobStore
    from services.gateway.finetuning import FineTuningService

    ctx, tmp = platform["ctx"], platform["tmp"]
    store = SQLiteJobStore(tmp / "finetuning.sqlite")
    ctx.finetuning = FineTuningService(
        FineTuning(ctx.platform, FileStore(str(tmp / "files")), store, FineTuningConfig())
    )

    def job(tenant: str, at: int) -> JobRecord:
        return JobRecord(
            id=f"ftjob-{at:024x}",
            tenant=tenant,
            created_at=at,
            model="base",
            training_file="file-x",
            seed=1,
            hyperparameters=Hyperparameters(n_epochs=1, batch_size=1, learning_rate_multiplier=1),
            options=AdeptOptions(lora_rank=4, lora_alpha=8, max_seq_length=64),
            adapter="legal",
        )

    store.create(job("globex", 100))
    done = store.create(job("acme", 200))

    def train(r):
        advance(advance(r, "queued", at=201), "running", at=202)
        r.record_step(StepRecord(step=4, at=203, total_steps=4, train_loss=2.0, valid_loss=2.5))
        r.adapter_version = "v2"
        advance(r, "succeeded", at=204)

    store.modify(done.id, train)
    r = await client.get("/admin/jobs", headers=bearer(ADMIN_KEY))
    first, second = r.json()["data"]
    assert (first["run"], first["state"], first["progress"], first["published"]) == (
        done.id,
        "succeeded",
        1.0,
        "acme/legal@v2",
    )
    assert (first["tenant"], first["adapter"], first["step"]) == ("acme", "legal", 4)
    assert (first["train_loss"], first["eval_loss"]) == (2.0, 2.5)
    assert (second["tenant"], second["state"], second["progress"]) == ("globex", "validating_files", None)


async def test_sample_replicas_deduplicates() -> None:
    calls = iter(["a", "b", "a", "a", "b", "c"])

    async def info() -> dict:
        rid = next(calls)
        if rid == "c":
            raise RuntimeError("replica gone")
        return {"replica_id": rid, "loaded_adapters": ["t/z@v1", "t/a@v1"]}

    found = await inventory.sample_replicas(info, 2)
    assert [r["replica_id"] for r in found] == ["a", "b"]
    assert found[0]["loaded_adapters"] == ["t/a@v1", "t/z@v1"]


async def test_console_adds_no_unprotected_api_route(platform) -> None:
    """Every non-/ui route the console mounts sits behind the tenant or the admin dependency."""
    from fastapi.routing import APIRoute

    from services.console.api import build_console_api_router

    router = build_console_api_router(platform["ctx"])
    for route in router.routes:
        assert isinstance(route, APIRoute)
        deps = [d.call.__name__ for d in route.dependant.dependencies]
        assert deps and deps[0] in ("current_tenant", "require_admin"), (route.path, deps)


async def test_usage_shows_unknown_documents_when_retrieval_is_down(client, platform, caplog) -> None:
    from adept.errors import Unavailable

    async def down(tenant: str) -> int:
        raise Unavailable("the retrieval deployment failed; retry shortly")

    platform["ctx"].kb.count_documents = down
    with caplog.at_level("WARNING", logger="services.console.api"):
        r = await client.get("/v1/usage", headers=bearer(platform["acme"]))
    assert r.status_code == 200 and r.json()["quotas"]["documents"]["used"] is None
    assert any("retrieval deployment failed" in rec.getMessage() for rec in caplog.records)


async def test_usage_does_not_hide_a_bug_as_unknown(platform) -> None:
    async def broken(tenant: str) -> int:
        raise TypeError("a programming error, not an outage")

    platform["ctx"].kb.count_documents = broken
    transport = httpx.ASGITransport(app=platform["app"], raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://adept.test") as c:
        r = await c.get("/v1/usage", headers=bearer(platform["acme"]))
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"


async def test_unreadable_metrics_file_is_reported_and_the_manifest_still_shown(
    client, platform, caplog
) -> None:
    registry = platform["ctx"].platform.registry
    v1 = registry.resolve("acme", "legal", "v1")
    (Path(v1.path) / "metrics.json").write_text("{not json")
    with caplog.at_level("WARNING", logger="services.console.api"):
        r = await client.get("/v1/adapters/legal/v1/metrics", headers=bearer(platform["acme"]))
    assert r.status_code == 200 and r.json()["metrics"] == {"eval_loss": 1.5}
    assert any("metrics.json" in rec.getMessage() for rec in caplog.records)


async def test_serve_status_outside_a_replica_is_nothing_not_an_error() -> None:
    import ray.serve  # Serve imported, yet this process is no replica: the refusal is typed

    from services.console.api import _serve_status

    assert "ray.serve" in sys.modules and ray.serve is not None
    assert await _serve_status() == (None, None)
