"""The adapter registry on S3, end to end: publish, resolve, serve, delete against a real S3-compatible server.

The server is moto in server mode on loopback (its own HTTP endpoint, driven by s3fs/aiobotocore exactly
as a MinIO or AWS endpoint is); the registry finds it through the environment the chart gives the pods
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from adept.adapters import AdapterRegistry
from adept.errors import NotFound
from tests.unit.llm.conftest import chat, collect, make_lora

pytestmark = pytest.mark.integration

BUCKET = "adept-adapters"
BASE = "tiny-random-phi3"


@pytest.fixture(scope="module")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(s3_endpoint, monkeypatch):
    """An empty bucket; credentials and endpoint only through the environment, as on the cluster."""
    import s3fs

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    if fs.exists(BUCKET):
        fs.rm(BUCKET, recursive=True)
    fs.mkdir(BUCKET, region_name="eu-west-1")
    fs.invalidate_cache()
    return fs


@pytest.fixture(scope="module")
def loras(tiny_phi3: Path, tmp_path_factory) -> dict[str, Path]:
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("s3-loras")
    model = AutoModelForCausalLM.from_pretrained(tiny_phi3)
    return {name: make_lora(model, root / name, seed) for name, seed in (("v1", 11), ("v2", 12))}


def registry(tmp_path: Path, pod: str) -> AdapterRegistry:
    """One pod's view: the shared bucket, its own local download cache.

    Resolution caching is off here so each pod sees the other's writes at once; the cache's bound
    (other processes' writes seen within ``resolve_ttl_s``) is tested in tests/unit/kernel.
    """
    return AdapterRegistry(f"s3://{BUCKET}/adapters", cache_dir=tmp_path / pod / "cache", resolve_ttl_s=0)


def test_publish_resolve_serve_delete(s3, loras, tmp_path, tiny_phi3):
    trainer, replica = registry(tmp_path, "trainer"), registry(tmp_path, "replica")
    v1 = trainer.publish("acme", "legal", loras["v1"], {"base_model": BASE})
    v2 = trainer.publish("acme", "legal", loras["v2"], {"base_model": BASE})
    assert (v1.version, v2.version) == ("v1", "v2")
    assert v2.uri == f"s3://{BUCKET}/adapters/acme/legal/v2"
    assert sorted(p.rsplit("/", 1)[-1] for p in s3.ls(f"{BUCKET}/adapters/acme/legal/v2")) == [
        "_COMPLETE",
        "adapter_config.json",
        "adapter_model.safetensors",
        "manifest.json",
    ]

    # Another pod resolves the latest version: downloaded into its cache, byte for byte, in PEFT format.
    got = replica.resolve("acme", "legal")
    assert got.version == "v2" and got.manifest.base_model == BASE
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (got.path / name).read_bytes() == (loras["v2"] / name).read_bytes()
    assert [v.id for v in replica.list("acme")] == ["acme/legal@v1", "acme/legal@v2"]
    # Tenants never see each other's adapters; the error names only what was asked for.
    with pytest.raises(NotFound, match=r"^adapter globex/legal not found$"):
        replica.resolve("globex", "legal")

    # Served: the LLM replica's loader takes the adapter from S3 and it changes the answer.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from services.llm.adapters import AdapterLoader
    from services.llm.engine import Engine

    engine = Engine(
        AutoModelForCausalLM.from_pretrained(tiny_phi3),
        AutoTokenizer.from_pretrained(tiny_phi3),
        batch_wait_ms=0,
        max_tokens_limit=32,
    )
    try:
        loader = AdapterLoader(engine, replica)

        async def answers():
            await loader.load("acme/legal@v2")
            return [
                await collect(engine, chat("restore power to feeder 12"), a) for a in ("", "acme/legal@v2")
            ]

        (base, _, _), (tuned, last, _) = asyncio.run(answers())
        assert last.finish_reason is not None and tuned != base
    finally:
        engine._exec.shutdown(wait=True)

    # Pinning and deleting go through the store; every pod sees the result.
    trainer.set_active("acme", "legal", "v1")
    assert replica.resolve("acme", "legal").version == "v1"
    trainer.delete("acme", "legal", "v1")
    assert replica.versions("acme", "legal") == ["v2"] and replica.active_version("acme", "legal") is None
    assert replica.resolve("acme", "legal").version == "v2"
    # A deleted version's number is never reused for other weights.
    assert trainer.publish("acme", "legal", loras["v1"], {"base_model": BASE}).version == "v3"
    trainer.delete("acme", "legal")
    with pytest.raises(NotFound):
        replica.resolve("acme", "legal")
    assert not s3.find(f"{BUCKET}/adapters/acme/legal")


def test_a_version_without_its_completion_marker_is_invisible(s3, loras, tmp_path):
    reg = registry(tmp_path, "pod")
    reg.publish("acme", "ops", loras["v1"], {"base_model": BASE})
    # An upload that died before its last object (the marker): files are there, the version is not.
    s3.put(str(loras["v2"] / "adapter_config.json"), f"{BUCKET}/adapters/acme/ops/v2/adapter_config.json")
    assert reg.versions("acme", "ops") == ["v1"]
    assert reg.resolve("acme", "ops").version == "v1"
    with pytest.raises(NotFound):
        reg.resolve("acme", "ops", "v2")
    reg.delete_tenant("acme")
    assert reg.list("acme") == [] and not s3.find(f"{BUCKET}/adapters/acme")
