"""Expensive things shared by consecutive tests of several modules: a running platform.

A platform costs ~30 s to start on 2 CI cores. Modules that need the same one share it: it starts
for the first of them and stops right after the last consecutive test that uses it (the
``pytest_runtest_teardown`` hook of tests/conftest.py), not at the end of the session: later
modules start Ray in this process themselves, and one process holds one Ray.
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

_SHARED: dict[str, tuple[Any, Callable[[Any], None], Callable[[pytest.Item], bool]]] = {}


def shared(
    key: str, start: Callable[[], Any], stop: Callable[[Any], None], used_by: Callable[[pytest.Item], bool]
) -> Any:
    """``start()`` once for ``key``; ``stop(value)`` after a test when the next one is not ``used_by`` it."""
    if key not in _SHARED:
        _SHARED[key] = (start(), stop, used_by)
    return _SHARED[key][0]


def release_unused(nextitem: pytest.Item | None) -> None:
    """Stop what the next test does not use (everything after the last test)."""
    for key, (value, stop, used_by) in list(_SHARED.items()):
        if nextitem is None or not used_by(nextitem):
            del _SHARED[key]
            stop(value)


def uses_demo_platform(item: pytest.Item) -> bool:
    return "demo_platform" in getattr(item, "fixturenames", ())


def uses_bundled_platform(item: pytest.Item) -> bool:
    return "bundled_platform" in getattr(item, "fixturenames", ())


# (who uses it, the order among its users): users run one after another, where the first of them was.
GROUPS: list[tuple[Callable[[pytest.Item], bool], Callable[[pytest.Item], Any]]] = [
    # the eval CLI's tests first: the browser's fine-tuning test adds adapters to the demo tenant
    (uses_demo_platform, lambda item: item.nodeid.startswith("tests/browser/")),
    (uses_bundled_platform, lambda item: 0),
]


def group_users(items: list[pytest.Item]) -> None:
    """Move each group's users next to the first of them (a stable sort); every other test keeps its place."""
    for uses, order in GROUPS:
        users = [i for i in items if uses(i)]
        if not users:
            continue
        first = items.index(users[0])
        users.sort(key=order)
        rest = [i for i in items if not uses(i)]
        items[:] = rest[:first] + users + rest[first:]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_demo_platform(tiny_phi3: Path) -> Any:
    """``start_platform(demo=True)`` on the tiny Phi-3 in a fresh short data dir under /tmp."""
    from adept.config.base import load_config
    from adept.config.serving import ServingConfig
    from services.embedded import start_platform

    data_dir = Path(tempfile.mkdtemp(prefix="ademo", dir="/tmp"))  # short: Ray socket paths
    config = load_config(
        ServingConfig,
        None,
        [
            f"platform.data_dir={data_dir}",
            f"platform.model={tiny_phi3}",
            "platform.device=cpu",
            f"gateway.port={free_port()}",  # never a port another platform on this machine holds
        ],
        env=False,
    )
    try:
        p = start_platform(config, demo=True, num_cpus=2)
    except BaseException:
        shutil.rmtree(data_dir, ignore_errors=True)
        raise
    p.shared_state = {}  # what the sharing modules set up once (tenants, adapters)
    return p


# The admin key of the bundled-model platform (its users set ADEPT_ADMIN_KEY to it: the CLI reads it).
BUNDLED_ADMIN_KEY = "adept-admin-bundled-test-key"


def start_bundled_platform(bundled_model: Path) -> Any:
    """The bundled SmolLM2-135M-Instruct served with room for structured output (128 tokens) and the
    fine-tuning job runner polling every second (tests/integration/finetuning, .../gateway/test_openai_features)."""
    import os

    from adept.config.serving import ServingConfig
    from services.embedded import start_platform

    data_dir = Path(tempfile.mkdtemp(prefix="abnd", dir="/tmp"))  # short: Ray socket paths
    config = ServingConfig.model_validate(
        {
            "platform": {"data_dir": str(data_dir), "model": str(bundled_model), "device": "cpu"},
            "llm": {"max_tokens_limit": 128, "default_max_tokens": 64},
            "gateway": {"port": free_port()},
            "finetuning": {"runner_poll_interval_s": 1.0},
        }
    )
    before = os.environ.get("ADEPT_ADMIN_KEY")
    os.environ["ADEPT_ADMIN_KEY"] = BUNDLED_ADMIN_KEY
    try:
        p = start_platform(config, num_cpus=2, timeout_s=600)
    except BaseException:
        shutil.rmtree(data_dir, ignore_errors=True)
        raise
    finally:
        if before is None:
            os.environ.pop("ADEPT_ADMIN_KEY", None)
        else:
            os.environ["ADEPT_ADMIN_KEY"] = before
    p.shared_state = {}
    return p


def stop_platform(p: Any) -> None:
    try:
        p.stop()
    finally:
        shutil.rmtree(p.config.platform.data_dir, ignore_errors=True)


def lumen_style(platform: Any, tiny_phi3: Path, out: Path) -> str:
    """``lumen-style`` of the demo tenant, published once per platform: a random LoRA on the tiny model,
    the base model and training metrics in its manifest and a real loss-curve PNG beside it."""
    state = platform.shared_state
    if "lumen-style" not in state:
        state["lumen-style"] = _publish_lumen_style(platform, tiny_phi3, out)
    return state["lumen-style"]


def _publish_lumen_style(platform: Any, tiny_phi3: Path, out: Path) -> str:
    import httpx
    import torch
    from peft import LoraConfig, get_peft_model

    from adept.adapters import AdapterRegistry
    from adept.models import canonical_model_id, load_causal_lm
    from training.publish import write_loss_curve

    torch.manual_seed(0)
    model = load_causal_lm(tiny_phi3, device="cpu", dtype="float32")
    get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=["qkv_proj", "o_proj"])
    ).save_pretrained(out)
    manifest = {
        "base_model": canonical_model_id(str(tiny_phi3)),
        "metrics": {"train_loss": 1.21, "eval_loss": 1.35, "eval_perplexity": 3.86},
        "steps": 40,
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
    r = httpx.post(
        platform.url + "/admin/adapters",
        headers={"Authorization": f"Bearer {platform.admin_key}"},
        json={"tenant": "demo", "name": "lumen-style", "path": str(out), "description": "Lumen Grid tone"},
        timeout=120,
    )
    assert r.status_code < 300, r.text
    v = r.json()
    registry = AdapterRegistry(platform.config.platform.resolved_adapter_store)
    version = registry.resolve("demo", "lumen-style", v["version"])
    history = []
    for s in range(1, 41):  # a made-up but typical descending curve; what matters is the real PNG writer
        row = {"step": s, "train_loss": 3.0 / (1 + 0.1 * s)}
        if s % 10 == 0:
            row["eval_loss"] = 3.2 / (1 + 0.08 * s)
        history.append(row)
    write_loss_curve(history, Path(version.path) / "loss_curve.png", "demo/lumen-style")
    return v["name"]
