"""The kernel's ``Platform``: each operation's rules, whoever calls it (CLI, admin API, operator, training)."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest

from adept.adapters import AdapterRegistry
from adept.config.platform import PlatformConfig
from adept.config.tenant import TenantQuotas, TenantSpec
from adept.errors import Conflict, InvalidRequest, NotFound, PermissionDenied
from adept.platform import JOB_STATE_FILE, Platform
from adept.tenancy import SQLiteTenantStore
from tests.unit.kernel.test_registry import BASE, make_adapter_dir


class Documents:
    """Stands in for the knowledge base: records which tenants' documents were deleted."""

    def __init__(self) -> None:
        self.docs: dict[str, set[str]] = {}

    async def delete_tenant(self, tenant: str) -> None:
        self.docs.pop(tenant, None)


class Replicas:
    def __init__(self) -> None:
        self.unloaded: list[str] = []

    async def unload(self, adapter_id: str) -> None:
        self.unloaded.append(adapter_id)


class Jobs:
    def __init__(self) -> None:
        self.purged: list[str] = []

    async def purge_tenant(self, tenant: str) -> None:
        self.purged.append(tenant)


@pytest.fixture
def parts(tmp_path: Path):
    cfg = PlatformConfig(data_dir=tmp_path / "data", model=BASE)
    docs, replicas, jobs = Documents(), Replicas(), Jobs()
    platform = Platform(cfg, documents=docs, replicas=replicas, state=[jobs])
    yield platform, docs, replicas, jobs
    platform.close()


def run(coro):
    return asyncio.run(coro)


def test_stores_come_from_config(tmp_path):
    platform = Platform(PlatformConfig(data_dir=tmp_path, model=BASE))
    assert isinstance(platform.tenants, SQLiteTenantStore)
    assert platform.tenants.path == tmp_path / "tenants.sqlite"
    assert platform.registry.store_uri == str(tmp_path / "adapters")
    assert platform.base_model_id == BASE


def test_publish_enforces_max_adapters(parts, tmp_path):
    platform, *_ = parts
    run(platform.create_tenant(TenantSpec(name="tiny", quotas=TenantQuotas(max_adapters=1))))
    src = make_adapter_dir(tmp_path / "a")
    run(platform.publish_adapter("tiny", "one", src))
    run(platform.publish_adapter("tiny", "one", src))  # a new version of an owned name is fine
    with pytest.raises(PermissionDenied, match="max_adapters") as err:
        run(platform.publish_adapter("tiny", "two", src))
    assert err.value.code == "quota_exceeded"
    with pytest.raises(PermissionDenied):
        run(platform.check_publishable("tiny", "two", BASE))  # training's early check says the same
    assert [v.id for v in run(platform.list_adapters("tiny"))] == ["tiny/one@v1", "tiny/one@v2"]


def test_publish_refuses_another_base_model(parts, tmp_path):
    platform, *_ = parts
    run(platform.create_tenant(TenantSpec(name="acme")))
    other = make_adapter_dir(tmp_path / "o", base="bundled:some-other-model")
    with pytest.raises(Conflict) as err:
        run(platform.publish_adapter("acme", "legal", other))
    assert err.value.code == "base_model_mismatch"
    # What the manifest says is what counts, not what the caller serves.
    with pytest.raises(Conflict):
        run(
            platform.publish_adapter("acme", "legal", make_adapter_dir(tmp_path / "b"), {"base_model": "x/y"})
        )
    with pytest.raises(Conflict):
        run(platform.check_publishable("acme", "legal", "bundled:some-other-model"))
    assert run(platform.list_adapters("acme")) == []


def test_publish_for_unknown_tenant_or_bad_name_stores_nothing(parts, tmp_path):
    platform, *_ = parts
    src = make_adapter_dir(tmp_path / "a")
    with pytest.raises(NotFound):
        run(platform.publish_adapter("nobody", "a", src))
    run(platform.create_tenant(TenantSpec(name="acme")))
    with pytest.raises(InvalidRequest):
        run(platform.publish_adapter("acme", "../escape", src))
    with pytest.raises(InvalidRequest, match="not found"):
        run(platform.publish_adapter("acme", "a", tmp_path / "missing"))
    assert not (tmp_path / "data" / "adapters" / "nobody").exists()


def test_adapter_checks_run_before_anything_is_stored(parts, tmp_path):
    platform, *_ = parts
    run(platform.create_tenant(TenantSpec(name="acme")))

    def max_rank_2(peft_config):
        if peft_config["r"] > 2:
            raise InvalidRequest(f"rank {peft_config['r']} exceeds the serving engine's max_lora_rank 2")

    platform.adapter_checks.append(max_rank_2)
    with pytest.raises(InvalidRequest, match="max_lora_rank"):
        run(platform.publish_adapter("acme", "big", make_adapter_dir(tmp_path / "a")))
    assert run(platform.list_adapters("acme")) == []


def test_delete_tenant_removes_everything_and_a_namesake_inherits_nothing(parts, tmp_path):
    platform, docs, replicas, jobs = parts
    run(platform.create_tenant(TenantSpec(name="acme")))
    run(platform.create_tenant(TenantSpec(name="other")))
    docs.docs = {"acme": {"manual"}, "other": {"faq"}}
    src = make_adapter_dir(tmp_path / "a")
    run(platform.publish_adapter("acme", "legal", src))
    run(platform.publish_adapter("acme", "legal", src))
    run(platform.publish_adapter("other", "faq", src))
    runs = tmp_path / "data" / "training"
    for run_name, tenant in (("acme-legal", "acme"), ("other-faq", "other")):
        (runs / run_name).mkdir(parents=True)
        (runs / run_name / JOB_STATE_FILE).write_text(json.dumps({"tenant": tenant}))

    deletion = run(platform.delete_tenant("acme"))

    assert (deletion.name, deletion.adapters_deleted) == ("acme", 1)
    assert jobs.purged == ["acme"]
    assert docs.docs == {"other": {"faq"}}
    assert sorted(replicas.unloaded) == ["acme/legal@v1", "acme/legal@v2"]
    assert not (runs / "acme-legal").exists() and (runs / "other-faq").exists()
    with pytest.raises(NotFound):
        run(platform.get_tenant("acme"))
    run(platform.create_tenant(TenantSpec(name="acme")))
    assert run(platform.list_adapters("acme")) == []
    assert "acme" not in docs.docs
    assert [v.id for v in run(platform.list_adapters("other"))] == ["other/faq@v1"]


def test_delete_without_a_knowledge_base_refuses_and_changes_nothing(tmp_path):
    platform = Platform(PlatformConfig(data_dir=tmp_path, model=BASE))
    run(platform.create_tenant(TenantSpec(name="acme")))
    with pytest.raises(InvalidRequest, match="knowledge base"):
        run(platform.delete_tenant("acme"))
    assert run(platform.get_tenant("acme")).name == "acme"


def test_activate_unloads_the_version_that_served_before(parts, tmp_path):
    platform, _, replicas, _ = parts
    run(platform.create_tenant(TenantSpec(name="acme")))
    src = make_adapter_dir(tmp_path / "a")
    run(platform.publish_adapter("acme", "legal", src))
    run(platform.publish_adapter("acme", "legal", src))
    assert run(platform.activate_adapter("acme", "legal", "v1")).version == "v1"
    assert replicas.unloaded == ["acme/legal@v2"]
    assert run(platform.served_versions("acme")) == {"legal": "v1"}
    run(platform.activate_adapter("acme", "legal", None))
    assert replicas.unloaded == ["acme/legal@v2", "acme/legal@v1"]


def test_delete_adapter_unloads_exactly_what_it_deleted(parts, tmp_path):
    platform, _, replicas, _ = parts
    run(platform.create_tenant(TenantSpec(name="acme")))
    src = make_adapter_dir(tmp_path / "a")
    for _ in range(2):
        run(platform.publish_adapter("acme", "legal", src))
    assert run(platform.delete_adapter("acme", "legal", "v1")) == ["acme/legal@v1"]
    assert run(platform.delete_adapter("acme", "legal")) == ["acme/legal@v2"]
    assert replicas.unloaded == ["acme/legal@v1", "acme/legal@v2"]
    with pytest.raises(NotFound):
        run(platform.delete_adapter("acme", "legal"))


def test_listing_and_naming_never_download_weights(tmp_path):
    """With an object store, /v1/models and model resolution read manifests only; loading fetches."""
    registry = AdapterRegistry(f"memory://adept-{uuid.uuid4().hex}", cache_dir=tmp_path / "cache")
    platform = Platform(PlatformConfig(data_dir=tmp_path / "d", model=BASE), registry=registry)
    run(platform.create_tenant(TenantSpec(name="acme")))
    run(platform.publish_adapter("acme", "legal", make_adapter_dir(tmp_path / "a")))
    assert [v.id for v in run(platform.list_adapters("acme"))] == ["acme/legal@v1"]
    assert run(platform.resolve_adapter("acme", "legal")).version == "v1"
    assert run(platform.served_versions("acme")) == {"legal": "v1"}
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.safetensors"))
    fetched = registry.resolve("acme", "legal")  # what an LLM replica does on a cold load
    assert (fetched.path / "adapter_model.safetensors").is_file()


def test_resolution_is_cached_and_own_writes_are_seen_at_once(tmp_path):
    store = str(tmp_path / "store")
    mine = AdapterRegistry(store, resolve_ttl_s=3600)
    theirs = AdapterRegistry(store)
    with pytest.raises(NotFound):
        mine.resolve("acme", "legal")
    theirs.publish("acme", "legal", make_adapter_dir(tmp_path / "a"), {"base_model": BASE})
    with pytest.raises(NotFound):
        mine.resolve("acme", "legal")  # the negative answer is cached too (floods of absent names are cheap)
    mine.publish("acme", "legal", make_adapter_dir(tmp_path / "b"), {"base_model": BASE})
    assert mine.resolve("acme", "legal").version == "v2"  # this process's write drops its cache
    theirs.delete("acme", "legal", "v2")
    assert mine.resolve("acme", "legal").version == "v2"  # another process's write: seen after the TTL
    assert AdapterRegistry(store, resolve_ttl_s=0).resolve("acme", "legal").version == "v1"


def test_every_publish_refuses_what_the_serving_engines_cannot_load(tmp_path):
    """Plain LoRA of rank <= max_lora_rank only: vLLM refuses DoRA, bias, modules_to_save, big ranks."""
    platform = Platform(PlatformConfig(data_dir=tmp_path / "d", model=BASE, max_lora_rank=8))
    run(platform.create_tenant(TenantSpec(name="acme")))
    for change, reason in (
        ({"r": 16}, "max_lora_rank 8"),
        ({"use_dora": True}, "DoRA"),
        ({"bias": "all"}, "bias"),
        ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
        ({"peft_type": "IA3"}, "only LoRA"),
    ):
        src = make_adapter_dir(tmp_path / f"a{len(reason)}")
        cfg = json.loads((src / "adapter_config.json").read_text())
        (src / "adapter_config.json").write_text(json.dumps({**cfg, **change}))
        with pytest.raises(InvalidRequest, match=reason) as err:
            run(platform.publish_adapter("acme", "x", src))
        assert err.value.code == "adapter_incompatible"
    assert run(platform.list_adapters("acme")) == []
