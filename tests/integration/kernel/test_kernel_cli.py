"""The kernel as a user meets it: the real ``adept`` CLI in separate processes, on real models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BUNDLED = "bundled:smollm2-135m-instruct"


def adept(data_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the installed CLI in a fresh process (a "restart" between calls)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADEPT_")}
    env.update(ADEPT_DATA_DIR=str(data_dir), COLUMNS="250")
    cmd = [sys.executable, "-c", "from tools.cli import main; main()", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_models_pull_then_list_shows_the_bundled_model_ready(bundled_model, data_dir):
    # The session fixture already did the one real GGUF conversion; this data dir shares its result.
    (data_dir / "models").mkdir()
    (data_dir / "models" / bundled_model.name).symlink_to(bundled_model, target_is_directory=True)
    pulled = adept(data_dir, "models", "pull")
    assert f"ready: {BUNDLED}" in pulled.stdout
    listed = adept(data_dir, "models", "list").stdout
    row = next(line for line in listed.splitlines() if BUNDLED in line)
    assert "ready" in row and "not pulled" not in row and "MiB" in row
    assert (bundled_model / "config.json").is_file()


def test_tenant_created_by_cli_survives_restart_and_key_is_never_stored_in_clear(data_dir):
    created = adept(data_dir, "tenant", "create", "acme", "--display-name", "ACME", "--max-adapters", "3")
    key = created.stdout.strip()
    assert key.startswith("adept-")
    # A second process finds the tenant, and authenticates the key, with nothing shared but the data dir.
    listed = json.loads(adept(data_dir, "tenant", "list", "--json").stdout)
    assert [(t["name"], t["quotas"]["max_adapters"]) for t in listed] == [("acme", 3)]
    code = (
        "import sys; from adept.tenancy import SQLiteTenantStore; "
        "print(SQLiteTenantStore(sys.argv[1]).authenticate(sys.argv[2]).name)"
    )
    auth = subprocess.run(
        [sys.executable, "-c", code, str(data_dir / "tenants.sqlite"), key],
        capture_output=True,
        text=True,
        check=True,
    )
    assert auth.stdout.strip() == "acme"
    secret = key.encode()
    for path in data_dir.rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            assert secret not in blob and secret[len("adept-") :] not in blob, path


@pytest.fixture(scope="module")
def phi3_lora(tiny_phi3, tmp_path_factory) -> Path:
    """A real LoRA adapter trained-shape on the tiny Phi-3, with the manifest training writes."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from adept.models import canonical_model_id

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_phi3, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["qkv_proj"], init_lora_weights=False))
    out = tmp_path_factory.mktemp("lora")
    model.save_pretrained(out)
    (out / "manifest.json").write_text(
        json.dumps({"base_model": canonical_model_id(str(tiny_phi3)), "rank": 4})
    )
    return out


def test_adapter_for_another_base_model_is_refused_by_the_cli(phi3_lora, tiny_phi3, data_dir):
    adept(data_dir, "tenant", "create", "acme")
    refused = adept(data_dir, "adapter", "publish", "acme", "legal", str(phi3_lora), check=False)
    assert refused.returncode != 0
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), refused.stderr
    assert "base model" in lines[0] and BUNDLED in lines[0]
    assert json.loads(adept(data_dir, "adapter", "list", "acme", "--json").stdout) == []
    # The same adapter is accepted by a platform that serves the model it was trained on.
    ok = adept(data_dir, "adapter", "publish", "acme", "legal", str(phi3_lora), "--set", f"model={tiny_phi3}")
    assert "acme/legal@v1" in ok.stdout
