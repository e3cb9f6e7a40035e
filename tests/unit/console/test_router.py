"""``/ui``: the page and its allow-listed files, with a strict CSP and no way out of the allow-list."""

from __future__ import annotations

import re

import pytest

from services.console.router import STATIC_DIR, STATIC_FILES


async def test_index_is_served_with_security_headers(client) -> None:
    r = await client.get("/ui")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    for directive in (
        "default-src 'self'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "object-src 'none'",
    ):
        assert directive in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["x-frame-options"] == "DENY"


async def test_trailing_slash_redirects(client) -> None:
    r = await client.get("/ui/")
    assert r.status_code == 308 and r.headers["location"] == "/ui"


@pytest.mark.parametrize("name", sorted(STATIC_FILES))
async def test_every_allow_listed_file_is_served_with_its_type(client, name: str) -> None:
    r = await client.get(f"/ui/static/{name}")
    assert r.status_code == 200
    assert r.headers["content-type"].split(";")[0] == STATIC_FILES[name].split(";")[0]
    assert "content-security-policy" in r.headers
    again = await client.get(f"/ui/static/{name}", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304


@pytest.mark.parametrize(
    "path",
    [
        "/ui/static/../router.py",
        "/ui/static/%2e%2e/router.py",
        "/ui/static/..%2frouter.py",
        "/ui/static/%2e%2e%2f%2e%2e%2fapi.py",
        "/ui/static/router.py",
        "/ui/static/__init__.py",
        "/ui/static/",
        "/ui/static/app.js%00.html",
        "/ui/static//etc/passwd",
        "/ui/static/%2fetc%2fpasswd",
        "/ui/static/APP.JS",
    ],
)
async def test_nothing_outside_the_allow_list(client, path: str) -> None:
    r = await client.get(path)
    assert r.status_code == 404
    assert "error" in r.json()
    assert b"import" not in r.content and b"root:" not in r.content


def test_allow_list_matches_the_static_directory() -> None:
    """Every shipped file is served and every served file ships (no stray or missing module)."""
    shipped = {p.name for p in STATIC_DIR.iterdir() if p.is_file()}
    assert shipped == set(STATIC_FILES)


def test_no_inline_script_or_style_and_no_html_sinks() -> None:
    """The CSP forbids inline code; the modules never hand data to an HTML parser."""
    html = (STATIC_DIR / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline <script>"
    assert "<style" not in html and " style=" not in html and "javascript:" not in html
    assert not re.search(r"\son[a-z]+=", html), "inline event handler"
    for path in STATIC_DIR.glob("*.js"):
        code = path.read_text()
        for sink in (
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ):
            assert sink not in code, f"{path.name} uses {sink}"
        assert "localStorage" not in code, f"{path.name}: the key belongs in sessionStorage only"
        assert "console.log" not in code, f"{path.name} logs"
    imports = {m for p in STATIC_DIR.glob("*.js") for m in re.findall(r'from "\./([\w.]+)"', p.read_text())}
    assert imports <= set(STATIC_FILES), imports - set(STATIC_FILES)


def test_key_never_goes_into_a_url() -> None:
    """The key is only ever put in an Authorization header."""
    api = (STATIC_DIR / "api.js").read_text()
    assert api.count("session.key") >= 1
    for path in STATIC_DIR.glob("*.js"):
        code = path.read_text()
        assert not re.search(r"[?&](key|api_key|token)=", code), path.name
