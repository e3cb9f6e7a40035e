"""What the console shows that the API does not list yet: adapters with manifests, usage, replicas, jobs
(every tenant's, from the job store: the kernel's ``FineTuning`` owns them).

Logic only (no FastAPI): every function takes the objects it reads — the adapter registry, the
quota counters, a directory — so it is tested without HTTP. A tenant is always passed in by the
caller's authenticated identity, never taken from a request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from adept.errors import NotFound

EXTRA_FILES = ("loss_curve.png", "metrics.json")


# -- adapters -------------------------------------------------------------------------------------
def adapter_listing(registry: Any, tenant: str) -> list[dict[str, Any]]:
    """The tenant's adapters, each with its versions (manifest, metrics, whether a loss curve exists)."""
    by_name: dict[str, list[Any]] = {}
    for v in registry.list(tenant):
        by_name.setdefault(v.name, []).append(v)
    out = []
    for name, versions in sorted(by_name.items()):
        active = registry.active_version(tenant, name)
        out.append(
            {
                "name": name,
                "active_version": active,
                "serving_version": active or versions[-1].version,
                "versions": [
                    {
                        "version": v.version,
                        "id": v.id,
                        "manifest": v.manifest.model_dump(mode="json"),
                        "has_loss_curve": read_extra(v, "loss_curve.png", probe=True) is not None,
                    }
                    for v in versions
                ],
            }
        )
    return out


def find_version(registry: Any, tenant: str, name: str, version: str) -> Any:
    """One listed version of the tenant's adapter; NotFound (same words for absent and foreign ones)."""
    for v in registry.list(tenant):
        if v.name == name and v.version == version:
            return v
    raise NotFound(f"adapter {name}@{version} not found", code="model_not_found")


def read_extra(version: Any, filename: str, *, probe: bool = False) -> bytes | None:
    """A file published beside the PEFT weights (``loss_curve.png``, ``metrics.json``), or None.

    Local stores are read in place; object stores through fsspec (training puts the extras there).
    With ``probe`` only existence is checked and ``b""`` stands for "present".
    """
    if filename not in EXTRA_FILES:
        return None
    local = Path(version.path) / filename
    if local.is_file():
        return b"" if probe else local.read_bytes()
    uri = getattr(version, "uri", "") or ""
    if "://" not in uri or uri.startswith("file://"):
        return None
    import fsspec

    target = f"{uri.rstrip('/')}/{filename}"
    try:
        fs, path = fsspec.core.url_to_fs(target)
        if probe:
            return b"" if fs.exists(path) else None
        with fs.open(path, "rb") as fh:
            return fh.read()
    except (FileNotFoundError, OSError):
        return None


# -- usage ----------------------------------------------------------------------------------------
def usage_report(
    tenant: Any, quotas: Any, *, window: tuple[int, int], documents: int | None, adapters: int
) -> dict[str, Any]:
    """Use against each quota; ``limit`` 0 means unlimited. ``window``: requests and tokens in the quota window."""
    q = tenant.quotas
    requests, tokens = window
    return {
        "tenant": tenant.name,
        "display_name": tenant.display_name,
        "window_s": int(getattr(quotas, "window_s", 60) or 60),
        "enforced": quotas is not None,
        "quotas": {
            "requests_per_minute": {"used": requests, "limit": q.requests_per_minute},
            "tokens_per_minute": {"used": tokens, "limit": q.tokens_per_minute},
            "documents": {"used": documents, "limit": q.max_documents},
            "adapters": {"used": adapters, "limit": q.max_adapters},
        },
    }


# -- replicas -------------------------------------------------------------------------------------
async def sample_replicas(
    info: Callable[[], Awaitable[dict[str, Any]]], expected: int, *, rounds: int = 3
) -> list[dict[str, Any]]:
    """``info()`` of every LLM replica that answers, found by asking concurrently and de-duplicating.

    Serve routes each call to some replica; asking ``rounds`` times per expected replica, all at
    once, reaches each of a handful of replicas with high probability. A replica missed here
    still serves; the page says how many Serve reports as running.
    """
    calls = max(1, expected) * rounds
    results = await asyncio.gather(*(info() for _ in range(calls)), return_exceptions=True)
    seen: dict[str, dict[str, Any]] = {}
    for r in results:
        if isinstance(r, dict) and r.get("replica_id"):
            seen.setdefault(str(r["replica_id"]), r)
    return [
        {
            "replica_id": rid,
            "base_model": r.get("base_model"),
            "max_model_len": r.get("max_model_len"),
            "loaded_adapters": sorted(r.get("loaded_adapters") or []),
        }
        for rid, r in sorted(seen.items())
    ]


def deployment_overview(status: Any, app_name: str | None) -> list[dict[str, Any]]:
    """``[{name, status, replicas: {state: n}}]`` from ``serve.status()`` for this application."""
    if status is None:
        return []
    apps = getattr(status, "applications", {}) or {}
    app = apps.get(app_name) if app_name else next(iter(apps.values()), None)
    if app is None:
        return []
    out = []
    for name, d in sorted(app.deployments.items()):
        state = d.status.value if hasattr(d.status, "value") else str(d.status)
        replicas = {
            (k.value if hasattr(k, "value") else str(k)): int(n)
            for k, n in (getattr(d, "replica_states", None) or {}).items()
        }
        out.append({"name": name, "status": state, "message": d.message or "", "replicas": replicas})
    return out


# -- fine-tuning jobs -----------------------------------------------------------------------------
def job_row(record: Any) -> dict[str, Any]:
    """One row of the platform's jobs table: a job record (``adept.finetuning.jobs.JobRecord``) as it stands."""
    last = record.history[-1] if record.history else None
    last_eval = next((h for h in reversed(record.history) if h.valid_loss is not None), None)
    total = last.total_steps if last is not None else None
    if record.status == "succeeded":
        progress: float | None = 1.0
    elif last is not None and total:
        progress = min(1.0, last.step / total)
    else:
        progress = None
    updated = max(
        t for t in (record.created_at, record.started_at, record.finished_at, last and last.at) if t
    )
    return {
        "run": record.id,
        "tenant": record.tenant,
        "adapter": record.adapter,
        "state": record.status,
        "step": last.step if last is not None else 0,
        "total_steps": total,
        "progress": progress,
        "train_loss": last.train_loss if last is not None else None,
        "eval_loss": last_eval.valid_loss if last_eval is not None else None,
        "published": f"{record.tenant}/{record.adapter}@{record.adapter_version}"
        if record.adapter_version
        else None,
        "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(updated)),
    }
