"""An LLM Serve replica killed with ``ray.kill`` in the middle of load, on the embedded platform.

Pass: every in-flight request either succeeds or fails cleanly (an OpenAI-style 5xx/4xx, or a
stream that carries an error event and still ends with ``[DONE]``), none runs past its timeout,
Serve starts a replacement replica, and requests after the recovery succeed again.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx

from bench.reliability.report import Outcome


def _llm_replicas() -> list[str]:
    import ray

    return sorted(
        a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if "#llm#" in a.get("name", "")
    )


def kill_llm_replica_under_load(
    url: str,
    tenants: list,
    *,
    requests: int = 48,
    concurrency: int = 4,
    timeout_s: float = 120,
    recover_s: float = 300,
) -> Outcome:
    """Run load in a thread, ``ray.kill`` the LLM replica once a few requests are in, then check recovery."""
    import ray

    from bench.load import run_step

    out = Outcome("Serve LLM replica killed (ray.kill) mid-load", faults=1)
    started = time.monotonic()
    before = _llm_replicas()
    if not before:
        out.fail("no LLM replica actor found")
        return out
    result: dict[str, Any] = {}

    def load() -> None:
        result.update(
            asyncio.run(
                run_step(
                    url,
                    tenants,
                    concurrency,
                    requests,
                    seed=5,
                    max_tokens=16,
                    timeout_s=timeout_s,
                    time_cap_s=timeout_s * 2,
                )
            )
        )

    t = threading.Thread(target=load)
    t.start()
    time.sleep(1.0)
    out.check(t.is_alive(), "the load finished before the kill: nothing was in flight (raise requests)")
    ray.kill(ray.get_actor(before[0], namespace="serve"), no_restart=True)
    t.join(timeout=timeout_s * 3)
    out.check(not t.is_alive(), "the load did not finish: requests hung")
    out.load = f"{result.get('requests', 0)} requests at concurrency {concurrency}"
    out.check(
        result.get("hung", 0) == 0, f"{result.get('hung')} requests ran past their {timeout_s:g} s timeout"
    )
    out.check(result.get("incomplete", 0) == 0, f"malformed answers: {result.get('problems')}")
    # Recovery: a new replica serves again.
    deadline = time.monotonic() + recover_s
    ok, after = False, []
    body = {"model": tenants[0].adapters[0], "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    while time.monotonic() < deadline and not ok:
        after = _llm_replicas()
        try:
            r = httpx.post(f"{url}/v1/chat/completions", json=body, headers=tenants[0].headers(), timeout=60)
            ok = r.status_code == 200 and bool(after) and after != before
        except httpx.HTTPError:
            pass
        time.sleep(1)
    out.check(ok, f"Serve did not bring a working replacement within {recover_s:g} s ({before} -> {after})")
    out.details = {
        "failed_requests_during_kill": round(result.get("error_rate", 0) * result.get("requests", 0)),
        "step": result,
        "replicas_before": before,
        "replicas_after": after,
        "recovery_s": round(time.monotonic() - started, 1),
    }
    out.seconds = time.monotonic() - started
    return out
