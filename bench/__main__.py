"""Run every benchmark, each in its own process, all of them even when one fails; then the report.

    python -m bench [--quick] [--only training,retrieval]

Exit status 1 when any benchmark (or the report) failed, after all ran, naming the failures.
``--quick`` results go to ``bench/results/quick``; a default-size run also regenerates the README's
benchmark table (``python -m bench.report --readme``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
# What the Makefile exports, for runs without make: no model hub, no usage reporting, quiet tokenizers.
ENV_DEFAULTS = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def benchmarks(folder: Path) -> list[Path]:
    """The runnable benchmarks: ``bench/*.py`` except private modules and the report."""
    return [p for p in sorted(folder.glob("*.py")) if not p.name.startswith("_") and p.name != "report.py"]


def run_all(scripts: list[Path], extra: list[str]) -> list[tuple[str, int, float]]:
    """``(name, exit status, seconds)`` per script, each run to its end whatever the others did."""
    outcomes = []
    for script in scripts:
        print(f"== {script.name} {' '.join(extra)}".rstrip(), flush=True)
        started = time.monotonic()
        rc = subprocess.run([sys.executable, str(script), *extra], check=False).returncode
        outcomes.append((script.name, rc, time.monotonic() - started))
        print(f"== {script.name}: {'ok' if rc == 0 else f'FAILED (exit {rc})'}", flush=True)
    return outcomes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes (the CI smoke)")
    p.add_argument("--only", default="", help="comma-separated benchmark names (default: all)")
    args = p.parse_args(argv)
    for key, value in ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    scripts = benchmarks(BENCH_DIR)
    if args.only:
        wanted = {n.strip().removesuffix(".py") for n in args.only.split(",") if n.strip()}
        unknown = wanted - {s.stem for s in scripts}
        if unknown:
            print(f"unknown benchmark(s): {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        scripts = [s for s in scripts if s.stem in wanted]
    outcomes = run_all(scripts, ["--quick"] if args.quick else [])
    report = [sys.executable, "-m", "bench.report", "--quick" if args.quick else "--readme"]
    started = time.monotonic()
    rc = subprocess.run(report, check=False, cwd=BENCH_DIR.parent).returncode
    outcomes.append(("report", rc, time.monotonic() - started))
    return summary(outcomes)


def summary(outcomes: list[tuple[str, int, float]]) -> int:
    """Print one line per step; 1 when any failed (named on stderr), else 0."""
    print("\nbenchmark      status      seconds")
    for name, code, seconds in outcomes:
        print(f"{name:<14} {'ok' if code == 0 else f'exit {code}':<11} {seconds:7.0f}")
    failed = [name for name, code, _ in outcomes if code != 0]
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"all {len(outcomes)} steps completed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
