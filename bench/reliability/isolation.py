"""Tenant isolation: randomized cross-tenant attempts on every route that takes a tenant-owned name.

A *leak* is any response to tenant B that carries one of tenant A's markers (a canary word
from A's documents, A's document ids, ``A/<adapter>``) which B did not send itself, any
search hit or listed document or model that is not B's, or an attempt that changes A's data.
Also checked: admin routes refuse tenant keys, and API keys never appear in responses,
``/metrics``, logs, or the data dir.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx

from bench.reliability.checks import response_problem
from bench.reliability.report import Outcome
from bench.reliability.seed import SeededTenant

ADMIN_ROUTES = [
    ("GET", "/admin/tenants"),
    ("POST", "/admin/tenants"),
    ("GET", "/admin/tenants/{victim}"),
    ("PUT", "/admin/tenants/{victim}"),
    ("DELETE", "/admin/tenants/{victim}"),
    ("POST", "/admin/tenants/{victim}/rotate-key"),
    ("POST", "/admin/adapters"),
    ("GET", "/admin/adapters/{victim}"),
    ("DELETE", "/admin/adapters/{victim}/{adapter}"),
    ("GET", "/admin/replicas"),
    ("GET", "/admin/jobs"),
]


def _attempts(
    attacker: SeededTenant, victim: SeededTenant, rng: random.Random
) -> list[tuple[str, str, dict]]:
    """Every way the attacker may name the victim's things, on every route that takes such a name."""
    adapter = rng.choice(victim.adapters)
    doc = rng.choice(victim.documents)
    canary = rng.choice(victim.canaries)
    own_model = rng.choice(attacker.adapters)
    names = [
        adapter,
        f"{victim.name}/{adapter}",
        f"{victim.name}/{adapter}@v1",
        f"{adapter}@v1",
        f"{victim.name}%2F{adapter}",
        f"{attacker.name}/../{victim.name}/{adapter}",
        f"{victim.name.upper()}/{adapter}",
    ]
    model = rng.choice(names)
    file_id, job_id = rng.choice(victim.files), rng.choice(victim.jobs)
    own_file = rng.choice(attacker.files)
    msgs = [{"role": "user", "content": f"What is the isolation code? {rng.choice(['', canary])}"}]
    return [
        ("POST", "/v1/chat/completions", {"json": {"model": model, "messages": msgs, "max_tokens": 2}}),
        (
            "POST",
            "/v1/chat/completions",
            {"json": {"model": model, "messages": msgs, "stream": True, "max_tokens": 2}},
        ),
        ("POST", "/v1/completions", {"json": {"model": model, "prompt": "x", "max_tokens": 2}}),
        (
            "POST",
            "/v1/chat/completions",
            {"json": {"model": own_model, "messages": msgs, "rag": {"top_k": 5}, "max_tokens": 2}},
        ),
        ("GET", f"/v1/models/{model}", {}),
        ("DELETE", f"/v1/models/{model}", {}),
        ("GET", "/v1/models", {}),
        ("GET", "/v1/adapters", {}),
        ("GET", f"/v1/adapters/{adapter}/v1/metrics", {}),
        ("GET", f"/v1/adapters/{adapter}/v1/loss_curve.png", {}),
        ("GET", f"/v1/adapters/{victim.name}%2F{adapter}/v1/metrics", {}),
        ("POST", "/v1/kb/search", {"json": {"query": f"isolation code {canary}"}}),
        (
            "POST",
            "/v1/kb/search",
            {"json": {"query": "substation procedure", "filter": {"document_id": doc}}},
        ),
        ("POST", "/v1/kb/search", {"json": {"query": "torque", "top_k": 10, "filter": {"section": "s0"}}}),
        ("GET", "/v1/kb/documents", {}),
        ("DELETE", f"/v1/kb/documents/{doc}", {}),
        ("DELETE", f"/v1/kb/documents/{victim.name}/{doc}", {}),
        (
            "POST",
            "/v1/kb/documents",
            {"json": {"records": [{"id": doc, "text": "overwrite attempt by another tenant"}]}},
        ),
        ("GET", "/v1/usage", {}),
        ("GET", "/v1/files", {}),
        ("GET", f"/v1/files/{file_id}", {}),
        ("GET", f"/v1/files/{file_id}/content", {}),
        ("DELETE", f"/v1/files/{file_id}", {}),
        ("GET", f"/v1/files/{victim.name}%2F{file_id}", {}),
        ("GET", "/v1/fine_tuning/jobs", {}),
        ("GET", f"/v1/fine_tuning/jobs/{job_id}", {}),
        ("POST", f"/v1/fine_tuning/jobs/{job_id}/cancel", {}),
        ("GET", f"/v1/fine_tuning/jobs/{job_id}/events", {}),
        ("GET", f"/v1/fine_tuning/jobs/{job_id}/checkpoints", {}),
        ("GET", "/v1/fine_tuning/jobs", {"params": {"after": job_id}}),
        ("GET", "/v1/files", {"params": {"after": file_id}}),
        (
            "POST",
            "/v1/fine_tuning/jobs",
            {"json": {"model": model, "training_file": own_file, "validation_file": file_id}},
        ),
        ("POST", "/v1/fine_tuning/jobs", {"json": {"model": model, "training_file": file_id}}),
        ("GET", "/metrics", {}),
    ]


def _leaks(
    r: httpx.Response,
    sent: str,
    attacker: SeededTenant,
    others: list[SeededTenant],
    path: str,
    mine_docs: set[str],
) -> list[str]:
    text = r.text
    found = []
    for other in others:
        for marker in [
            *other.canaries,
            *other.files,
            *other.jobs,
            *(f"{other.name}/{a}" for a in other.adapters),
        ]:
            if marker in text and marker not in sent:
                found.append(f"{other.name}'s marker {marker!r}")
        if path != "/metrics" and other.name in text and other.name not in sent:
            found.append(f"tenant name {other.name!r}")
        if path == "/metrics" and f'tenant="{other.name}"' in text:
            found.append(f"metrics series of tenant {other.name!r}")
    if r.status_code == 200 and r.headers.get("content-type", "").startswith("application/json"):
        data = r.json()
        if path == "/v1/kb/search":
            found += [
                f"search hit {h['document_id']}"
                for h in data.get("results", [])
                if h["document_id"] not in mine_docs
            ]
        if (
            path == "/v1/kb/documents"
            and isinstance(data.get("documents"), list)
            and r.request.method == "GET"
        ):
            found += [f"listed {d['id']}" for d in data["documents"] if d["id"] not in mine_docs]
        for c in data.get("citations", []) or []:
            if c["document_id"] not in mine_docs:
                found.append(f"citation {c['document_id']}")
    return found


def cross_tenant(
    url: str,
    tenants: list[SeededTenant],
    *,
    attempts: int = 1000,
    seed: int = 0,
    include_metrics: bool = True,
) -> Outcome:
    """``attempts`` randomized requests by one tenant against another's things; 0 leaks to pass."""
    rng = random.Random(seed)
    out = Outcome("isolation: cross-tenant attempts")
    started = time.monotonic()
    metrics_leaks = 0
    before = _snapshot(url, tenants)
    # What each tenant owns at the start (other tests may have added documents of its own).
    owned = {
        name: {d for d, _ in snap[0]} | set(t.documents)
        for (name, snap), t in zip(before.items(), tenants, strict=True)
    }
    with httpx.Client(base_url=url, timeout=120) as c:
        done = 0
        while done < attempts:
            attacker, victim = rng.sample(tenants, 2)
            others = [t for t in tenants if t is not attacker]
            for method, path, kwargs in _attempts(attacker, victim, rng):
                if done >= attempts:
                    break
                if path == "/metrics" and not include_metrics:
                    continue
                done += 1
                r = c.request(method, path, headers=attacker.headers(), **kwargs)
                sent = unquote(path) + str(kwargs)
                if method == "POST" and path == "/v1/kb/documents" and r.status_code == 200:
                    # Ids are per tenant: the attacker made its own document under the victim's id.
                    # Remove it again, so the victim's data and everyone's snapshots stay comparable.
                    for d in r.json()["documents"]:
                        c.delete(f"/v1/kb/documents/{d['id']}", headers=attacker.headers())
                problem = response_problem(r.status_code, r.content, r.headers.get("content-type", ""))
                if problem:
                    out.fail(f"{attacker.name} {method} {path}: {problem}")
                for leak in _leaks(r, sent, attacker, others, path, owned[attacker.name]):
                    if path == "/metrics":
                        metrics_leaks += 1
                    out.fail(f"LEAK to {attacker.name} via {method} {path}: {leak}")
    after = _snapshot(url, tenants)
    for t in tenants:
        if before[t.name] != after[t.name]:
            out.fail(
                f"{t.name}'s data changed during the attacks: {before[t.name]} -> {after[t.name]}", lost=1
            )
    out.load = f"{attempts} attempts, {len(tenants)} tenants"
    out.bad_inputs = attempts
    out.details = {"metrics_leaks": metrics_leaks}
    out.seconds = time.monotonic() - started
    return out


def _snapshot(url: str, tenants: list[SeededTenant]) -> dict[str, Any]:
    snap = {}
    with httpx.Client(base_url=url, timeout=60) as c:
        for t in tenants:
            docs = c.get("/v1/kb/documents", headers=t.headers()).json()["documents"]
            models = c.get("/v1/models", headers=t.headers()).json()["data"]
            files = c.get("/v1/files", headers=t.headers()).json()["data"]
            jobs = c.get("/v1/fine_tuning/jobs", headers=t.headers()).json()["data"]
            snap[t.name] = (
                sorted((d["id"], d["chunks"]) for d in docs),
                sorted((m["id"], m.get("version")) for m in models),
                sorted((f["id"], f["bytes"]) for f in files),
                sorted((j["id"], j["status"]) for j in jobs),
            )
    return snap


def admin_refuses_tenant_keys(url: str, tenants: list[SeededTenant]) -> Outcome:
    """Every admin route answers 403 to a valid tenant key (401 to no key) and changes nothing."""
    out = Outcome("isolation: admin routes vs tenant keys")
    started = time.monotonic()
    with httpx.Client(base_url=url, timeout=60) as c:
        for t in tenants:
            victim = next(v for v in tenants if v is not t)
            for method, template in ADMIN_ROUTES:
                path = template.format(victim=victim.name, adapter=victim.adapters[0])
                body = {"name": victim.name, "tenant": victim.name, "path": "/tmp", "quotas": {}}
                for headers, want in ((t.headers(), 403), ({}, 401)):
                    out.bad_inputs += 1
                    r = c.request(
                        method, path, headers=headers, json=body if method in ("POST", "PUT") else None
                    )
                    problem = response_problem(r.status_code, r.content, r.headers.get("content-type", ""))
                    if problem or r.status_code != want:
                        out.fail(
                            f"{method} {path} with {'tenant' if headers else 'no'} key: {r.status_code} {problem or ''}"
                        )
    out.load = f"{len(ADMIN_ROUTES)} admin routes x {len(tenants)} tenants"
    out.seconds = time.monotonic() - started
    return out


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:
            self.lines.append(str(record.msg))


def capture_logs() -> _Capture:
    """Attach a handler that keeps every log line of this process (remove it with ``release_logs``)."""
    handler = _Capture()
    root = logging.getLogger()
    root.addHandler(handler)
    handler._old_level = root.level  # type: ignore[attr-defined]
    root.setLevel(logging.DEBUG)
    return handler


def release_logs(handler: _Capture) -> None:
    root = logging.getLogger()
    root.removeHandler(handler)
    root.setLevel(handler._old_level)  # type: ignore[attr-defined]


def keys_never_exposed(
    url: str, admin_key: str, tenants: list[SeededTenant], data_dir: Path, log_lines: list[str]
) -> Outcome:
    """API keys (tenant and admin) never in responses' error messages, /metrics, logs or the data dir."""
    out = Outcome("isolation: API keys never exposed")
    started = time.monotonic()
    keys = [admin_key, *(t.key for t in tenants)]
    with httpx.Client(base_url=url, timeout=60) as c:
        # Provoke errors with keys in every place a client might wrongly put them.
        for t in tenants:
            other = next(v for v in tenants if v is not t)
            probes = [
                ("POST", "/v1/chat/completions", {"json": {"model": other.key, "messages": []}}, t.headers()),
                ("GET", "/v1/models", {}, {"Authorization": f"Bearer {t.key}x"}),
                ("GET", "/v1/models", {}, {"Authorization": f"Token {t.key}"}),
                ("GET", "/admin/tenants", {}, t.headers()),
                ("POST", "/v1/kb/search", {"json": {"query": "x", "api_key": other.key}}, t.headers()),
            ]
            for method, path, kwargs, headers in probes:
                out.bad_inputs += 1
                r = c.request(method, path, headers=headers, **kwargs)
                sent_keys = {k for k in keys if k in str(kwargs)}
                for k in keys:
                    if k in r.text and k not in sent_keys:
                        out.fail(f"{method} {path}: a key that was not sent appears in the response")
                    if k in r.text and k in sent_keys and k != t.key and r.status_code >= 400:
                        # Echoing a client's own input back to that client reveals nothing new.
                        pass
        # Read the series as the platform does (admin key), so the scan covers every label.
        r = c.get("/metrics", headers={"Authorization": f"Bearer {admin_key}"})
        if r.status_code != 200:
            out.fail(f"/metrics with the admin key answered {r.status_code}")
        metrics = r.text
    for k in keys:
        if k in metrics:
            out.fail("an API key appears in /metrics")
        if any(k in line for line in log_lines):
            out.fail("an API key appears in the logs")
    scanned = 0
    for path in Path(data_dir).rglob("*"):
        if not path.is_file() or path.stat().st_size > 200 * 1024 * 1024:
            continue
        scanned += 1
        blob = path.read_bytes()
        for k in keys:
            if k.encode() in blob:
                name = path.name
                if name in ("admin.key", "demo.key"):
                    continue  # the key files themselves (0600) are where keys are meant to be
                out.fail(f"an API key is stored in clear in {path.relative_to(data_dir)}")
    out.load = f"{len(keys)} keys, {scanned} data files, {len(log_lines)} log lines"
    out.seconds = time.monotonic() - started
    return out


def timing_safe_comparison() -> Outcome:
    """Key checks use ``hmac.compare_digest`` on digests (read from the code that does the comparing)."""
    import inspect

    from adept.tenancy import SQLiteTenantStore
    from services.gateway.auth import Authenticator

    out = Outcome("isolation: timing-safe key comparison")
    for fn in (SQLiteTenantStore.authenticate, Authenticator.is_admin_key):
        src = inspect.getsource(fn)
        out.check("compare_digest" in src, f"{fn.__qualname__} does not use hmac.compare_digest")
        out.check(" == digest" not in src and "== token" not in src, f"{fn.__qualname__} compares with ==")
    out.load = "static"
    return out
