"""Browser tier: a REAL embedded platform (local Ray, Milvus Lite, tiny Phi-3, demo corpus) driven by
headless Chromium through Playwright. Skips, saying why, where Chromium or Playwright is missing.

Screenshots go to ``tests/browser/artifacts/`` (git-ignored; CI keeps them as artifacts).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("ADEPT_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# A second tenant whose data must never show up for the demo tenant.
OTHER_TENANT = "globex"
OTHER_MARKER = "Zanzibar-quartz-7731"


def why_skip() -> str | None:
    """Why the browser tier cannot run here, or None."""
    if importlib.util.find_spec("playwright") is None:
        return "the Python package playwright is not installed"
    if not CHROMIUM.is_file():
        return f"no Chromium at {CHROMIUM} (install Debian's chromium or set ADEPT_CHROMIUM)"
    return None


def _http(platform, method: str, path: str, key: str, **kw):
    import httpx

    r = httpx.request(
        method, platform.url + path, headers={"Authorization": f"Bearer {key}"}, timeout=120, **kw
    )
    assert r.status_code < 300, r.text
    return r.json()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="package")
def platform(tiny_phi3: Path):
    """The embedded platform with the demo tenant (Lumen Grid corpus) and a second tenant with its own document."""
    from adept.config.base import load_config
    from adept.config.serving import ServingConfig
    from services.embedded import start_platform

    data_dir = Path(tempfile.mkdtemp(prefix="aui", dir="/tmp"))  # short: Ray socket paths
    config = load_config(
        ServingConfig,
        None,
        [
            f"platform.data_dir={data_dir}",
            f"platform.model={tiny_phi3}",
            "platform.device=cpu",
            f"gateway.port={_free_port()}",  # never a port another platform on this machine holds
        ],
        env=False,
    )
    p = start_platform(config, demo=True, num_cpus=2)
    try:
        other = _http(p, "POST", "/admin/tenants", p.admin_key, json={"name": OTHER_TENANT})
        p.other_key = other["api_key"]
        _http(
            p,
            "POST",
            "/v1/kb/documents",
            p.other_key,
            json={
                "records": [
                    {
                        "id": "globex-plans",
                        "title": "Globex secret plans",
                        "text": f"{OTHER_MARKER} is the launch code of the Globex hammock factory.",
                    }
                ]
            },
        )
        yield p
    finally:
        p.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="package")
def demo_adapter(platform, tiny_phi3: Path, tmp_path_factory) -> str:
    """A random LoRA on the tiny model, published for the demo tenant, with a real loss-curve PNG beside it."""
    import torch
    from peft import LoraConfig, get_peft_model

    from adept.adapters import AdapterRegistry
    from adept.models import load_causal_lm
    from training.publish import write_loss_curve

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("adapter")
    model = load_causal_lm(tiny_phi3, device="cpu", dtype="float32")
    get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=["qkv_proj", "o_proj"])
    ).save_pretrained(out)
    (out / "manifest.json").write_text(
        json.dumps({"metrics": {"train_loss": 1.21, "eval_loss": 1.35, "eval_perplexity": 3.86}, "steps": 40})
    )
    v = _http(
        platform,
        "POST",
        "/admin/adapters",
        platform.admin_key,
        json={"tenant": "demo", "name": "lumen-style", "path": str(out), "description": "Lumen Grid tone"},
    )
    registry = AdapterRegistry(platform.config.platform.resolved_adapter_store)
    version = registry.resolve("demo", "lumen-style", v["version"])
    history = []
    for s in range(1, 41):  # a made-up but typical descending curve; what matters is the real PNG writer
        row = {"step": s, "train_loss": 3.0 / (1 + 0.1 * s)}
        if s % 10 == 0:
            row["eval_loss"] = 3.2 / (1 + 0.08 * s)
        history.append(row)
    write_loss_curve(history, Path(version.path) / "loss_curve.png", "demo/lumen-style")
    return f"{v['name']}"


@pytest.fixture(scope="package")
def browser(platform):
    # After the platform: Playwright's sync API keeps an event loop running, and start_platform's
    # demo ingest calls asyncio.run(), which refuses to run inside one.
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, request):
    """A fresh browser context (empty sessionStorage) per test; console errors are collected."""
    context = browser.new_context(viewport={"width": 1366, "height": 800})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    pg.errors = []  # type: ignore[attr-defined]
    pg.on("console", lambda m: m.type == "error" and pg.errors.append(m.text))
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    try:
        yield pg
    finally:
        context.close()


def shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def sign_in(page, platform, key: str) -> None:
    page.goto(platform.url + "/ui")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.locator("#shell").wait_for(state="visible")
