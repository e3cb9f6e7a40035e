"""Adapter registry: versions, atomic publish, base-model check, isolation, remote (fsspec) stores."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from adept.adapters import AdapterRegistry, parse_adapter_id
from adept.errors import Conflict, InvalidRequest, NotFound

BASE = "bundled:smollm2-135m-instruct"


def make_adapter_dir(path: Path, *, base: str = BASE, seed: int = 0) -> Path:
    """A structurally valid PEFT LoRA directory (the registry never loads the weights)."""
    path.mkdir(parents=True, exist_ok=True)
    cfg = {
        "peft_type": "LORA",
        "r": 4,
        "lora_alpha": 8,
        "target_modules": ["q_proj"],
        "base_model_name_or_path": base,
    }
    (path / "adapter_config.json").write_text(json.dumps(cfg))
    rng = np.random.default_rng(seed)
    save_file(
        {"lora_A": rng.standard_normal((4, 8)).astype(np.float32)}, str(path / "adapter_model.safetensors")
    )
    return path


@pytest.fixture
def src(tmp_path):
    return make_adapter_dir(tmp_path / "src")


@pytest.fixture(params=["local", "memory"])
def registry(request, tmp_path):
    if request.param == "local":
        return AdapterRegistry(str(tmp_path / "store"))
    # fsspec's in-memory filesystem: the real fsspec code path object stores take.
    return AdapterRegistry(f"memory://adept-{uuid.uuid4().hex}", cache_dir=tmp_path / "cache")


def test_parse_adapter_id():
    assert parse_adapter_id("acme/legal") == ("acme", "legal", None)
    assert parse_adapter_id("acme/legal@v12") == ("acme", "legal", "v12")
    for bad in [
        "acme",
        "acme/",
        "/legal",
        "acme/legal@",
        "acme/legal@3",
        "../x/legal",
        "acme/../etc",
        "a/b/c",
    ]:
        with pytest.raises(InvalidRequest):
            parse_adapter_id(bad)


def test_publish_resolve_versions_and_pinning(registry, src):
    v1 = registry.publish(
        "acme", "legal", src, {"base_model": BASE, "metrics": {"loss": 1.5}}, expected_base_model=BASE
    )
    v2 = registry.publish("acme", "legal", src, {"base_model": BASE})
    assert (v1.id, v2.id) == ("acme/legal@v1", "acme/legal@v2")
    got = registry.resolve("acme", "legal")
    assert got.version == "v2" and got.manifest.version == "v2"
    assert (got.path / "adapter_model.safetensors").read_bytes() == (
        src / "adapter_model.safetensors"
    ).read_bytes()
    assert registry.resolve("acme", "legal", "v1").manifest.metrics == {"loss": 1.5}
    # The manifest picks LoRA facts up from adapter_config.json.
    assert (got.manifest.rank, got.manifest.alpha, got.manifest.target_modules) == (4, 8.0, ["q_proj"])
    registry.set_active("acme", "legal", "v1")
    assert registry.resolve("acme", "legal").version == "v1"
    assert registry.active_version("acme", "legal") == "v1"
    registry.set_active("acme", "legal", None)
    assert registry.resolve("acme", "legal").version == "v2"
    with pytest.raises(NotFound):
        registry.set_active("acme", "legal", "v9")
    assert [v.id for v in registry.list("acme")] == ["acme/legal@v1", "acme/legal@v2"]
    assert registry.count_adapters("acme") == 1


def test_delete_version_unpins_and_numbers_are_never_reused(registry, src):
    for _ in range(3):
        registry.publish("acme", "legal", src, {"base_model": BASE})
    registry.set_active("acme", "legal", "v3")
    registry.delete("acme", "legal", "v3")
    assert registry.resolve("acme", "legal").version == "v2"  # pin went with the version
    assert registry.publish("acme", "legal", src, {"base_model": BASE}).version == "v4"
    with pytest.raises(NotFound):
        registry.delete("acme", "legal", "v3")
    registry.delete("acme", "legal")
    assert registry.list("acme") == []
    with pytest.raises(NotFound):
        registry.resolve("acme", "legal")
    with pytest.raises(NotFound):
        registry.delete("acme", "legal")


def test_wrong_base_model_is_refused_naming_both(registry, tmp_path):
    other = make_adapter_dir(tmp_path / "other", base="microsoft/Phi-3-mini-4k-instruct")
    with pytest.raises(Conflict) as exc:
        registry.publish("acme", "legal", other, {}, expected_base_model=BASE)
    msg = exc.value.message
    assert "microsoft/Phi-3-mini-4k-instruct" in msg and BASE in msg
    assert exc.value.code == "base_model_mismatch"
    assert registry.list("acme") == []


def test_missing_peft_files_and_bad_config(registry, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidRequest, match=r"adapter_config\.json, adapter_model\.safetensors"):
        registry.publish("acme", "legal", empty, {"base_model": BASE})
    (empty / "adapter_config.json").write_text("{nope")
    (empty / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(InvalidRequest, match="not valid JSON"):
        registry.publish("acme", "legal", empty, {"base_model": BASE})


@pytest.mark.parametrize(
    ("tenant", "name", "version"),
    [("..", "x", None), ("acme", "..", None), ("acme", "../globex", None), ("acme", "a/b", None),
     ("acme/../globex", "x", None), ("acme", "legal", "v1/../../x"), ("acme", ".hidden", None), ("ACME", "x", None)],
)  # fmt: skip
def test_path_traversal_is_refused(registry, src, tenant, name, version):
    with pytest.raises(InvalidRequest):
        registry.resolve(tenant, name, version)
    with pytest.raises(InvalidRequest):
        registry.delete(tenant, name, version)
    if version is None:
        with pytest.raises(InvalidRequest):
            registry.publish(tenant, name, src, {"base_model": BASE})


def test_tenants_are_isolated_and_not_found_reveals_nothing(registry, src):
    registry.publish("acme", "legal", src, {"base_model": BASE})
    with pytest.raises(NotFound) as exc:
        registry.resolve("globex", "legal")
    assert "acme" not in exc.value.message
    assert registry.list("globex") == []
    registry.delete_tenant("acme")
    registry.delete_tenant("acme")  # idempotent
    assert registry.list("acme") == []


def test_unknown_manifest_keys_on_disk_warn_but_load(tmp_path, src):
    registry = AdapterRegistry(str(tmp_path / "store"))
    v = registry.publish("acme", "legal", src, {"base_model": BASE})
    manifest = v.path / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "future_field": 1}))
    with pytest.warns(UserWarning, match="future_field"):
        assert registry.resolve("acme", "legal").manifest.base_model == BASE


CRASH = """
import os, shutil, sys
from adept.adapters import AdapterRegistry
real = shutil.copyfile
def dying_copy(a, b, **kw):
    real(a, b, **kw)
    os._exit(9)  # the process dies after the first file, as on SIGKILL or power loss
shutil.copyfile = dying_copy
AdapterRegistry(sys.argv[1]).publish("acme", "legal", sys.argv[2], {"base_model": "m"})
"""


def test_crash_mid_publish_leaves_no_visible_version(tmp_path, src):
    store = tmp_path / "store"
    proc = subprocess.run(
        [sys.executable, "-c", CRASH, str(store), str(src)], capture_output=True, timeout=120
    )
    assert proc.returncode == 9, proc.stderr.decode()
    assert any((store / "acme" / "legal").iterdir())  # the half-written temp dir is there...
    registry = AdapterRegistry(str(store))
    assert registry.list("acme") == []  # ...but nobody sees it
    with pytest.raises(NotFound):
        registry.resolve("acme", "legal")
    assert registry.publish("acme", "legal", src, {"base_model": "m"}).version == "v1"


def test_incomplete_remote_version_is_invisible(tmp_path, src):
    uri = f"memory://adept-{uuid.uuid4().hex}"
    registry = AdapterRegistry(uri, cache_dir=tmp_path / "cache")
    registry.publish("acme", "legal", src, {"base_model": BASE})
    import fsspec

    fs, root = fsspec.core.url_to_fs(uri)
    # What a publisher that died before its final marker leaves behind.
    fs.pipe_file(f"{root}/acme/legal/v2/adapter_config.json", b"{}")
    assert registry.resolve("acme", "legal").version == "v1"
    assert [v.version for v in registry.list("acme")] == ["v1"]
    assert registry.publish("acme", "legal", src, {"base_model": BASE}).version == "v3"


def test_failed_publish_cleans_up(tmp_path, src, monkeypatch):
    import shutil

    registry = AdapterRegistry(str(tmp_path / "store"))

    def full_disk(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copyfile", full_disk)
    from adept.errors import StorageError

    with pytest.raises(StorageError, match="No space left"):
        registry.publish("acme", "legal", src, {"base_model": BASE})
    assert list((tmp_path / "store" / "acme" / "legal").iterdir()) == []


def test_concurrent_publishers_get_distinct_versions(tmp_path, src):
    store = str(tmp_path / "store")
    got: list[str] = []
    threads = [
        threading.Thread(target=lambda: got.append(AdapterRegistry(store).publish("acme", "legal", src, {"base_model": BASE}).version))
        for _ in range(6)
    ]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got, key=lambda v: int(v[1:])) == [f"v{i}" for i in range(1, 7)]
    assert len(AdapterRegistry(store).list("acme")) == 6


def test_extra_files_are_published_with_the_version(registry, src, tmp_path):
    curve = tmp_path / "curve.png"
    curve.write_bytes(b"\x89PNG fake")
    metrics = tmp_path / "m.json"
    metrics.write_text('{"loss": 1}')
    v = registry.publish(
        "acme",
        "legal",
        src,
        {"base_model": BASE},
        extra_files={"loss_curve.png": curve, "metrics.json": metrics},
    )
    got = registry.resolve("acme", "legal", v.version)
    assert (got.path / "loss_curve.png").read_bytes() == b"\x89PNG fake"
    assert json.loads((got.path / "metrics.json").read_text()) == {"loss": 1}
    for bad in ("../x.png", "manifest.json", "adapter_config.json", "_COMPLETE", ".hidden", "a/b"):
        with pytest.raises(InvalidRequest):
            registry.publish("acme", "legal", src, {"base_model": BASE}, extra_files={bad: curve})
    with pytest.raises(InvalidRequest, match="not found"):
        registry.publish("acme", "legal", src, {"base_model": BASE}, extra_files={"x.png": tmp_path / "nope"})
    assert registry.versions("acme", "legal") == [v.version]  # refused publishes left nothing behind
