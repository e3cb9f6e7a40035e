"""``python -m bench.reliability`` (``make reliability``): every scenario, one table, one JSON file.

    python -m bench.reliability [--quick] [--skip-ray] [--only NAME ...]

In-process scenarios run first (the gateway's real app over the real engine, KB and stores),
then the ones that need Ray: load and a killed LLM replica on the embedded Serve platform, and
a killed Ray Train worker. Exit status 1 when any scenario fails.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench._common import write_result
from bench.reliability.report import COLUMNS, Outcome


def _guard(name: str, fn: Callable[[], Outcome | list[Outcome]]) -> list[Outcome]:
    print(f"== {name}", flush=True)
    try:
        res = fn()
    except Exception as e:  # a scenario that crashes is a failed scenario, not a crashed suite
        traceback.print_exc()
        o = Outcome(name)
        o.fail(f"scenario crashed: {type(e).__name__}: {e}")
        return [o]
    return res if isinstance(res, list) else [res]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes; skips schemathesis and training")
    p.add_argument("--skip-ray", action="store_true", help="only the in-process scenarios")
    p.add_argument("--attempts", type=int, default=1000, help="cross-tenant attempts")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from bench.reliability import adapter_faults, crash, fuzz, isolation, schema_walk, storage_faults
    from bench.reliability.inproc import serving_config, start_inprocess
    from bench.reliability.seed import make_lora, seed_tenants
    from tests.assets.tiny_models import cached_tiny_phi3

    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="adept-rel-", dir="/tmp"))
    model = cached_tiny_phi3(Path(__file__).resolve().parents[2] / ".cache" / "test-assets")
    lora = make_lora(model, work / "lora", seed=1)
    outcomes: list[Outcome] = []

    logs = isolation.capture_logs()
    platform = start_inprocess(
        serving_config(work / "inproc", model), "adept-admin-" + secrets.token_urlsafe(24)
    )
    try:
        tenants = seed_tenants(platform.url, platform.admin_key, lora, n=4)
        keys = {"tenant": tenants[0].key, "admin": platform.admin_key}
        t0 = tenants[0]
        outcomes += _guard(
            "targeted fuzz", lambda: fuzz.targeted_fuzz(platform.url, t0, platform.admin_key, t0.adapters[0])
        )
        outcomes += _guard(
            "features beside a stream", lambda: fuzz.features_beside_a_stream(platform.url, t0, tenants[1])
        )
        outcomes += _guard("schema walk", lambda: schema_walk.walk(platform.url, keys, cases_per_variant=8))
        if not args.quick:
            outcomes += _guard(
                "schemathesis", lambda: fuzz.schema_fuzz(platform.url, keys, examples_per_operation=5)
            )
        outcomes += _guard(
            "isolation",
            lambda: isolation.cross_tenant(
                platform.url, tenants, attempts=args.attempts, include_metrics=False
            ),
        )

        def metrics_only() -> Outcome:
            o = isolation.cross_tenant(platform.url, tenants, attempts=60, seed=3, include_metrics=True)
            o.scenario = "isolation: /metrics"
            return o

        outcomes += _guard("metrics", metrics_only)
        outcomes += _guard("admin routes", lambda: isolation.admin_refuses_tenant_keys(platform.url, tenants))
        outcomes += _guard("timing-safe", isolation.timing_safe_comparison)
        base = platform.ctx.catalog.base_model_id
        store = platform.data_dir / "adapters"
        outcomes += _guard(
            "adapter faults",
            lambda: adapter_faults.summary(
                adapter_faults.adapter_faults(platform.url, platform.admin_key, store, tenants, lora, base)
            ),
        )
        outcomes += _guard(
            "keys",
            lambda: isolation.keys_never_exposed(
                platform.url, platform.admin_key, tenants, platform.data_dir, logs.lines
            ),
        )
    finally:
        platform.stop()
        isolation.release_logs(logs)
    outcomes += _guard("storage faults", lambda: storage_faults.storage_faults(lora, work / "storage"))
    outcomes += _guard(
        "crash", lambda: crash.kill_during_writes(model, lora, work / "crash", docs=30 if args.quick else 80)
    )
    load_result: dict = {}
    if not args.skip_ray:
        outcomes += _guard("serve", lambda: _serve_scenarios(args, work, model, lora, load_result))
        if not args.quick:
            from bench.reliability.train_kill import kill_train_worker

            outcomes += _guard(
                "train", lambda: kill_train_worker(model, work / "train", ray_temp=work / "rt")
            )

    _print_wide("Adept reliability", COLUMNS, [o.row() for o in outcomes])
    for o in outcomes:
        for problem in o.problems[:10]:
            print(f"  {o.scenario}: {problem}")
    failed = [o.scenario for o in outcomes if not o.passed and not o.skipped]
    write_result(
        "reliability",
        {
            "quick": args.quick,
            "seconds": round(time.monotonic() - started, 1),
            "passed": not failed,
            "failed": failed,
            "scenarios": [o.to_dict() for o in outcomes],
            "load": load_result,
        },
    )
    return 1 if failed else 0


def _print_wide(title: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """The summary table at a fixed width, so scenario names stay on one line in logs and CI."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(col, no_wrap=col == "scenario")
    for row in rows:
        table.add_row(*(str(v) for v in row))
    Console(width=180).print(table)


def _serve_scenarios(
    args: argparse.Namespace, work: Path, model: Path, lora: Path, load_result: dict
) -> list[Outcome]:
    """Load steps, then a killed LLM replica, on one embedded (Ray Serve) platform."""
    import os
    import socket

    from bench.load import run_load
    from bench.reliability.inproc import serving_config
    from bench.reliability.seed import seed_tenants
    from bench.reliability.serve_kill import kill_llm_replica_under_load
    from services.embedded import start_platform

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    admin_key = "adept-admin-" + secrets.token_urlsafe(24)
    os.environ["ADEPT_ADMIN_KEY"] = admin_key
    cfg = serving_config(work / "serve", model, gateway={"port": port})
    platform = start_platform(cfg, num_cpus=2, timeout_s=600)
    try:
        tenants = seed_tenants(platform.url, admin_key, lora, n=3, finetuning=False)  # a runner would train
        steps = [1, 4] if args.quick else [1, 2, 4, 8, 16]
        n = 16 if args.quick else 48
        load_result.update(run_load(platform.url, tenants, steps, n))
        load = Outcome(
            "load: mixed chat/stream/RAG/search, rising concurrency", load=f"{steps} x {n} requests"
        )
        for step in load_result["steps"]:
            load.check(
                step["incomplete"] == 0, f"c={step['concurrency']}: incomplete answers {step['problems']}"
            )
            load.check(step["hung"] == 0, f"c={step['concurrency']}: {step['hung']} hung requests")
            load.check(
                step["error_rate"] == 0, f"c={step['concurrency']}: error rate {step['error_rate']:.2%}"
            )
        load.details = {"degrades_at": load_result["degrades_at"]}
        kill = kill_llm_replica_under_load(platform.url, tenants, requests=64 if args.quick else 160)
        return [load, kill]
    finally:
        platform.stop()


if __name__ == "__main__":
    sys.exit(main())
