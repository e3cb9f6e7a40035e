"""Browser tier: a REAL embedded platform (local Ray, Milvus Lite, tiny Phi-3, demo corpus) driven by
headless Chromium through Playwright. Skips, saying why, where Chromium or Playwright is missing.

Screenshots go to ``tests/browser/artifacts/`` (git-ignored; CI keeps them as artifacts).
"""

from __future__ import annotations

import importlib.util
import os
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


@pytest.fixture(scope="package")
def platform(demo_platform):
    """The embedded demo platform (Lumen Grid corpus, shared with tests/integration/eval) and a second
    tenant with its own document."""
    p = demo_platform()
    if not hasattr(p, "other_key"):
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
    return p


@pytest.fixture(scope="package")
def demo_adapter(platform, tiny_phi3: Path, tmp_path_factory) -> str:
    """``lumen-style``, published for the demo tenant with training metrics and a real loss-curve PNG."""
    from tests.shared_platforms import lumen_style

    return lumen_style(platform, tiny_phi3, tmp_path_factory.mktemp("adapter"))


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
