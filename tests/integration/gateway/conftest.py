"""The embedded platform of the gateway tests: local Ray + Serve with the tiny Phi-3, and real LoRA adapters."""

from __future__ import annotations

import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ADMIN_KEY = "adept-admin-integration-test-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_lora(base: Path, dest: Path, *, seed: int) -> Path:
    """A real PEFT LoRA adapter on ``base`` with random (non-zero) weights, so it changes the output."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    cfg = LoraConfig(
        r=8, lora_alpha=64, target_modules=["qkv_proj", "o_proj", "down_proj"], init_lora_weights=False
    )
    peft_model = get_peft_model(model, cfg)
    with torch.no_grad():  # large enough to move a random model's greedy choices
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.mul_(4.0)
    peft_model.save_pretrained(dest)
    return dest


@dataclass
class Env:
    url: str
    admin: httpx.Client
    keys: dict[str, str]
    base_model: str
    platform: object
    config: object
    adapters_dir: Path

    def client(self, tenant: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[tenant]}"} if tenant else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)


def start(config):
    from services.embedded import start_platform

    return start_platform(config, num_cpus=2, timeout_s=300)


def uses_env(item: pytest.Item) -> bool:
    return item.nodeid.startswith("tests/integration/gateway/") and "env" in getattr(item, "fixturenames", ())


@pytest.fixture(scope="module")
def env(tiny_phi3: Path, short_tmp: Path, monkeypatch_module) -> Env:
    """One platform for the consecutive modules that use it (test_entry_points, test_gateway_api):
    started by the first, stopped after the last test of the last (tests/shared_platforms.py)."""
    from tests.shared_platforms import shared

    monkeypatch_module.setenv("ADEPT_ADMIN_KEY", ADMIN_KEY)
    return shared("gateway-env", lambda: _start_env(tiny_phi3, short_tmp), _stop_env, uses_env)


def _start_env(tiny_phi3: Path, short_tmp: Path) -> Env:
    from adept.config.serving import ServingConfig

    root = Path(tempfile.mkdtemp(prefix="gw-", dir=short_tmp))
    data_dir = root / "data"
    adapters = root / "peft"
    make_lora(tiny_phi3, adapters / "support", seed=1)
    make_lora(tiny_phi3, adapters / "legal", seed=2)
    config = ServingConfig.model_validate(
        {
            "platform": {"data_dir": str(data_dir), "model": str(tiny_phi3), "device": "cpu"},
            "llm": {"max_tokens_limit": 64, "default_max_tokens": 8, "max_adapters_per_replica": 2},
            "gateway": {"port": free_port(), "max_request_bytes": 64 * 1024},
        }
    )
    platform = start(config)
    admin = httpx.Client(base_url=platform.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=120)
    env = Env(platform.url, admin, {}, "", platform, config, adapters)
    try:  # a failed setup must not leave Ray running under the next module
        for name, quotas in (("acme", {}), ("globex", {}), ("limited", {"requests_per_minute": 3})):
            r = admin.post("/admin/tenants", json={"name": name, "quotas": quotas})
            assert r.status_code == 201, r.text
            env.keys[name] = r.json()["api_key"]
        for tenant, name in (("acme", "support"), ("globex", "legal")):
            r = admin.post(
                "/admin/adapters", json={"tenant": tenant, "name": name, "path": str(adapters / name)}
            )
            assert r.status_code == 201, r.text
        models = admin.get("/v1/models", headers={"Authorization": f"Bearer {env.keys['acme']}"}).json()
        env.base_model = models["data"][0]["id"]
    except BaseException:
        _stop_env(env)
        raise
    return env


def _stop_env(env: Env) -> None:
    try:
        env.admin.close()
    finally:
        env.platform.stop()


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()
