"""Adapter files corrupted or deleted in the registry, while loaded and while not.

Pass: a request naming the damaged adapter gets a clear OpenAI-style error that names it
(not a hang, not an anonymous "internal server error"); its owner's other models and every
other tenant keep working; listing models does not fail because one adapter is damaged.
"""

from __future__ import annotations

import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from bench.reliability.checks import completion_problem, error_problem
from bench.reliability.report import Outcome
from bench.reliability.seed import SeededTenant


def _garbage(path: Path) -> None:
    path.write_bytes(secrets.token_bytes(max(64, path.stat().st_size // 3)))


DAMAGE: dict[str, Callable[[Path], None]] = {
    "weights corrupted": lambda v: _garbage(v / "adapter_model.safetensors"),
    "weights truncated": lambda v: (v / "adapter_model.safetensors").write_bytes(b"\x00" * 8),
    "weights deleted": lambda v: (v / "adapter_model.safetensors").unlink(),
    "config corrupted": lambda v: (v / "adapter_config.json").write_text("{not json"),
    "config deleted": lambda v: (v / "adapter_config.json").unlink(),
    "manifest corrupted": lambda v: (v / "manifest.json").write_text("\x00garbage"),
    "version dir deleted": lambda v: shutil.rmtree(v),
}


def _chat(c: httpx.Client, t: SeededTenant, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 3}
    return c.post("/v1/chat/completions", json=body, headers=t.headers(), timeout=60)


def adapter_faults(
    url: str, admin_key: str, store: Path, tenants: list[SeededTenant], lora_src: Path, base_model: str
) -> dict[str, Outcome]:
    """Every kind of damage, each before the adapter was ever loaded and after it was loaded."""
    victim, others = tenants[0], tenants[1:]
    results: dict[str, Outcome] = {}
    with httpx.Client(base_url=url, timeout=60) as c:
        for damage, hurt in DAMAGE.items():
            for cached in (False, True):
                out = Outcome(f"adapter fault: {damage} ({'loaded' if cached else 'not loaded'})", faults=1)
                started = time.monotonic()
                name = f"dmg-{secrets.token_hex(3)}"
                r = c.post(
                    "/admin/adapters",
                    json={"tenant": victim.name, "name": name, "path": str(lora_src)},
                    headers={"Authorization": f"Bearer {admin_key}"},
                )
                r.raise_for_status()
                if cached:
                    r = _chat(c, victim, name)
                    out.check(r.status_code == 200, f"warm-up request failed: {r.status_code} {r.text[:200]}")
                hurt(store / victim.name / name / "v1")
                try:
                    r = _chat(c, victim, name)
                except httpx.TimeoutException:
                    out.fail("the request naming the damaged adapter hung")
                else:
                    _judge_damaged(out, r, name, cached)
                _others_unaffected(out, c, victim, others, base_model)
                shutil.rmtree(store / victim.name / name, ignore_errors=True)  # so cases stay independent
                out.load = "sequential"
                out.seconds = time.monotonic() - started
                results[out.scenario] = out
    return results


def _judge_damaged(out: Outcome, r: httpx.Response, name: str, cached: bool) -> None:
    if r.status_code == 200:
        # A loaded adapter keeps serving from memory: fine, as long as the answer is whole.
        problem = completion_problem(r.json())
        out.check(cached and problem is None, f"damaged adapter answered 200 ({problem or 'never loaded'})")
        return
    problem = error_problem(r.status_code, r.content)
    if problem:
        out.fail(f"error is not OpenAI-style: {problem}")
        return
    message = r.json()["error"]["message"]
    out.check(name in message, f"{r.status_code} error does not name the adapter: {message!r}")
    out.check(r.status_code != 500 or "internal server error" not in message, f"anonymous 500: {message!r}")


def _others_unaffected(
    out: Outcome, c: httpx.Client, victim: SeededTenant, others: list[SeededTenant], base: str
) -> None:
    checks: list[tuple[SeededTenant, str]] = [(victim, base), *((o, o.adapters[0]) for o in others)]
    for tenant, model in checks:
        r = _chat(c, tenant, model)
        if r.status_code != 200:
            out.fail(f"{tenant.name} {model}: {r.status_code} {r.text[:160]}")
        elif problem := completion_problem(r.json()):
            out.fail(f"{tenant.name} {model}: {problem}")
    for tenant in [victim, *others]:
        r = c.get("/v1/models", headers=tenant.headers())
        if r.status_code != 200:
            out.fail(f"{tenant.name} GET /v1/models: {r.status_code} {r.text[:160]}")


def summary(results: dict[str, Outcome]) -> Outcome:
    """All adapter-fault cases as one row."""
    out = Outcome("adapter files corrupted / deleted", load="sequential")
    for o in results.values():
        out.faults += o.faults
        out.failures += o.failures
        out.seconds += o.seconds
        out.problems += [f"{o.scenario}: {p}" for p in o.problems][: 25 - len(out.problems)]
    out.details = {k: {"passed": v.passed, "problems": v.problems} for k, v in results.items()}
    return out
