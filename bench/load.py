"""Load on the embedded platform: N tenants (own adapters + KBs), mixed traffic at rising concurrency.

    python bench/load.py [--quick] [--tenants 3] [--steps 1,2,4,8] [--requests 24] [--inprocess]

Each step sends a bounded number of requests (a mix of chat, streaming chat, RAG chat and
KB search, spread over tenants and their adapters) with at most ``c`` in flight, and a
time cap. Reported per step: throughput, p50/p99 latency, error rate, and incomplete
answers (a stream without ``[DONE]``, usage that does not add up, a malformed body). The
baseline is concurrency 1; "degrades at" is the first concurrency whose p50 is over 2x it.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from bench._common import Figure, Run, percentile, print_table
from bench.reliability.checks import completion_problem, error_problem, sse_problem

KINDS = ("chat", "stream", "rag", "search")


def make_request(kind: str, tenant: Any, rng: random.Random, max_tokens: int) -> tuple[str, dict[str, Any]]:
    msgs = [{"role": "user", "content": rng.choice(["What is the torque?", "How do I ground the feeder?"])}]
    model = rng.choice(tenant.adapters)
    if kind == "search":
        return "/v1/kb/search", {"query": "isolation code for the breaker panel", "top_k": 3}
    body: dict[str, Any] = {"model": model, "messages": msgs, "max_tokens": max_tokens, "temperature": 0}
    if kind == "stream":
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    if kind == "rag":
        body["rag"] = {"top_k": 2}
    return "/v1/chat/completions", body


async def one(
    client: httpx.AsyncClient, tenant: Any, path: str, body: dict, timeout_s: float
) -> dict[str, Any]:
    started = time.monotonic()
    try:
        r = await asyncio.wait_for(client.post(path, json=body, headers=tenant.headers()), timeout_s)
    except TimeoutError:
        return {"ok": False, "hung": True, "seconds": time.monotonic() - started, "problem": "timeout"}
    except httpx.HTTPError as e:
        return {"ok": False, "seconds": time.monotonic() - started, "problem": f"{type(e).__name__}"}
    seconds = time.monotonic() - started
    ctype = r.headers.get("content-type", "")
    clean_error = False
    if r.status_code >= 400:
        # A failure is fine under faults as long as it is a well-formed OpenAI error.
        problem = error_problem(r.status_code, r.content, ctype)
        clean_error = problem is None
    elif ctype.startswith("text/event-stream"):
        problem = sse_problem(r.content)
        # An error event followed by [DONE] is how a stream fails cleanly once headers are sent.
        clean_error = bool(problem and problem.startswith("stream carried an error"))
    elif path == "/v1/chat/completions":
        problem = completion_problem(r.json())
    else:
        problem = None if isinstance(r.json().get("results"), list) else "search without results list"
    return {
        "ok": r.status_code == 200 and problem is None,
        "status": r.status_code,
        "seconds": seconds,
        "problem": problem,
        "clean_error": clean_error,
    }


async def run_step(
    url: str,
    tenants: list,
    concurrency: int,
    n: int,
    *,
    seed: int,
    max_tokens: int,
    timeout_s: float,
    time_cap_s: float,
) -> dict[str, Any]:
    rng = random.Random(seed)
    sem = asyncio.Semaphore(concurrency)
    deadline = time.monotonic() + time_cap_s
    limits = httpx.Limits(max_connections=concurrency + 4)

    async with httpx.AsyncClient(base_url=url, timeout=timeout_s + 5, limits=limits) as client:

        async def bounded(i: int) -> dict[str, Any] | None:
            async with sem:
                if time.monotonic() > deadline:
                    return None
                tenant = tenants[i % len(tenants)]
                kind = KINDS[i % len(KINDS)]
                path, body = make_request(kind, tenant, rng, max_tokens)
                res = await one(client, tenant, path, body, timeout_s)
                return {**res, "kind": kind}

        started = time.monotonic()
        results = [r for r in await asyncio.gather(*(bounded(i) for i in range(n))) if r is not None]
        wall = time.monotonic() - started
    lat = [r["seconds"] for r in results]
    bad = [r for r in results if not r["ok"]]
    return {
        "concurrency": concurrency,
        "requests": len(results),
        "throughput_rps": len(results) / wall if wall else 0.0,
        "p50_s": percentile(lat, 50) if lat else 0.0,
        "p99_s": percentile(lat, 99) if lat else 0.0,
        "error_rate": len(bad) / max(1, len(results)),
        "incomplete": sum(1 for r in bad if r.get("problem") and not r.get("clean_error")),
        "hung": sum(1 for r in bad if r.get("hung")),
        "problems": sorted({str(r.get("problem")) for r in bad})[:5],
    }


def run_load(
    url: str,
    tenants: list,
    steps: list[int],
    n: int,
    *,
    max_tokens: int = 8,
    timeout_s: float = 120,
    time_cap_s: float = 120,
    seed: int = 0,
) -> dict[str, Any]:
    """All steps; ``degrades_at``: first concurrency whose p50 exceeds 2x the concurrency-1 baseline."""
    rows = [
        asyncio.run(
            run_step(
                url,
                tenants,
                c,
                n,
                seed=seed + c,
                max_tokens=max_tokens,
                timeout_s=timeout_s,
                time_cap_s=time_cap_s,
            )
        )
        for c in steps
    ]
    base = rows[0]["p50_s"] or 1e-9
    degrades = next((r["concurrency"] for r in rows[1:] if r["p50_s"] > 2 * base), None)
    for r in rows:
        r["p50_vs_baseline"] = r["p50_s"] / base
    return {"steps": rows, "degrades_at": degrades, "baseline": "concurrency 1"}


def start(args: argparse.Namespace, workdir: Path) -> tuple[Any, list]:
    """The platform (embedded Ray Serve, or in-process) with seeded tenants, computing in ``args.dtype``."""
    from bench.reliability.seed import make_lora, seed_tenants
    from tests.assets.tiny_models import cached_tiny_phi3

    model = Path(args.model) if args.model else cached_tiny_phi3(Path(".cache/test-assets").absolute())
    lora = make_lora(model, workdir / "lora", seed=1)
    admin_key = "adept-admin-load-" + str(random.getrandbits(64))
    if args.inprocess:
        from bench.reliability.inproc import serving_config, start_inprocess

        platform = start_inprocess(
            serving_config(workdir / "data", model, platform={"dtype": args.dtype}), admin_key
        )
    else:
        import os
        import socket

        from bench.reliability.inproc import serving_config
        from services.embedded import start_platform

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ["ADEPT_ADMIN_KEY"] = admin_key
        cfg = serving_config(workdir / "data", model, gateway={"port": port}, platform={"dtype": args.dtype})
        platform = start_platform(cfg, num_cpus=2, timeout_s=600)
    # No fine-tuning jobs: the embedded platform's runner would train them during the measurement.
    tenants = seed_tenants(platform.url, admin_key, lora, n=args.tenants, finetuning=False)
    return platform, tenants


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes (< 2 min)")
    p.add_argument("--tenants", type=int, default=3)
    p.add_argument("--steps", default="1,2,4,8,16")
    p.add_argument("--requests", type=int, default=48, help="requests per step")
    p.add_argument("--model", default="", help="model directory (default: the tiny Phi-3 test model)")
    p.add_argument("--inprocess", action="store_true", help="in-process gateway instead of Ray Serve")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.requests, args.tenants = "1,4", 16, 2
    args.dtype = _auto_dtype()
    run = Run("load", args)
    workdir = Path(tempfile.mkdtemp(prefix="adept-load-", dir="/tmp"))
    platform, tenants = start(args, workdir)
    try:
        result = run_load(platform.url, tenants, [int(s) for s in args.steps.split(",")], args.requests)
    finally:
        platform.stop()
    rows = [
        (
            r["concurrency"],
            r["requests"],
            r["throughput_rps"],
            r["p50_s"],
            r["p99_s"],
            r["p50_vs_baseline"],
            r["error_rate"],
            r["incomplete"],
            r["hung"],
        )
        for r in result["steps"]
    ]
    print_table(
        f"Load: {len(tenants)} tenants, mixed chat/stream/RAG/search ({'in-process' if args.inprocess else 'Ray Serve'})",
        [
            "concurrency",
            "requests",
            "req/s",
            "p50 s",
            "p99 s",
            "p50 / c=1",
            "error rate",
            "incomplete",
            "hung",
        ],
        rows,
    )
    print(f"latency degrades (p50 > 2x concurrency 1) at: {result['degrades_at']}")
    steps = result["steps"]
    first, last = steps[0], steps[-1]
    mode = "in-process" if args.inprocess else "Ray Serve"
    where = f"{len(tenants)} tenants, mixed chat/stream/RAG/search, {mode}"
    health = (
        f"errors {last['error_rate']:.0%}, incomplete {last['incomplete']}, hung {last['hung']}; "
        f"p50 over 2x concurrency 1 from: {result['degrades_at'] or 'never'}"
    )
    figures = [
        Figure(f"throughput at concurrency {last['concurrency']} ({where})", last["throughput_rps"], "req/s",
               f"concurrency {first['concurrency']}", first["throughput_rps"], note=health),
        Figure(f"p50 latency at concurrency {last['concurrency']} ({where})", last["p50_s"], "s",
               f"concurrency {first['concurrency']}", first["p50_s"], higher_is_better=False,
               note=f"p99 {last['p99_s']:.2f} s vs {first['p99_s']:.2f} s"),
    ]  # fmt: skip
    run.write(figures, dtype=args.dtype, details={"args": vars(args), **result})
    return result


def _auto_dtype() -> str:
    """What the platform's ``dtype: auto`` resolves to on this CPU: bfloat16 where native, else float32."""
    from adept.models import resolve_dtype
    from bench._common import dtype_name

    return dtype_name(resolve_dtype("cpu", "auto"))


if __name__ == "__main__":
    main()
