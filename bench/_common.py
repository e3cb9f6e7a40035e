"""What every benchmark shares: machine facts, the result format, workers in fresh processes, statistics.

A result is ``bench/results/<name>.json`` (``bench/results/quick/<name>.json`` for ``--quick``
runs, so a smoke run never overwrites the default-size figures the README is generated from)::

    {"name", "schema", "date", "git_commit", "size", "args", "dtype",
     "machine": {"cpu", "cores", "gpu", "bf16", "load_avg_start", "load_avg_end", "load_avg_max",
                 "contended", ...versions},
     "figures": [{"figure", "value", "unit", "baseline", "baseline_value", "ratio",
                  "higher_is_better", "note"}],
     "details": {...whatever else the benchmark measured}}

``python -m bench.report`` turns the files into one table and one PNG.

**Quiet figures.** While a benchmark runs, ``Run`` samples every 5 s the 1-minute load average and
the CPU used by processes outside the benchmark's own process tree (``/proc``); a run in which those
others used more than ``OTHERS_CORES_LIMIT`` cores in any window is *contended* (other processes
shared the CPU, so its speeds are low and noisy). The load average is recorded but does not decide:
it counts the benchmark's own processes (two busy torch threads and a Ray raylet read above 2 on a
2-core machine with nothing else running). Without ``/proc``, a load above the usable core count
decides. A contended result never replaces a quiet one: it goes to ``<name>.contended.json`` beside
it, and the README table leaves contended results out.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "bench" / "results"
QUICK_DIR = RESULTS_DIR / "quick"
SCHEMA = 1
RESULT_PREFIX = "BENCH_RESULT "


@dataclass
class Figure:
    """One measured figure and the baseline it is compared with, measured in the same run.

    ``ratio`` is always ``value / baseline_value``; ``higher_is_better`` says which way is good.
    """

    figure: str
    value: float
    unit: str
    baseline: str
    baseline_value: float | None
    higher_is_better: bool = True
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline_value in (None, 0):
            return None
        return self.value / self.baseline_value

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


# -- machine facts -------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # not Linux: platform's answer below
        return platform.processor() or platform.machine()
    return platform.processor() or platform.machine()


def _mem_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:  # not Linux
        return None
    return None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def load_avg() -> list[float] | None:
    """1, 5 and 15 minute load averages: on a shared machine they say how far to trust a speed."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # platforms without getloadavg
        return None


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def is_contended(machine: dict[str, Any]) -> bool:
    """Whether a result's run shared the CPU: its 1-minute load exceeded the usable cores at any sample.

    Results written before ``load_avg_max`` existed are judged by their start and end loads.
    """
    if "contended" in machine:
        return bool(machine["contended"])
    cores = machine.get("usable_cores") or machine.get("cores") or 1
    loads = [x[0] for x in (machine.get("load_avg_start"), machine.get("load_avg_end")) if x]
    return any(load > cores for load in loads)


# A run is contended when processes outside the benchmark's own process tree used more than this many
# cores, averaged over any sampling window (5 s): a whole core stolen for 5 s, not a shell command.
OTHERS_CORES_LIMIT = 0.5


def busy_ticks() -> int | None:
    """CPU time (clock ticks, all cores) the machine spent busy since boot (``/proc/stat``)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return user + nice + system + irq + softirq + steal


def tree_ticks(root: int) -> tuple[int, frozenset[int]] | None:
    """CPU time (clock ticks) of process ``root`` and every live descendant, with the time of the children
    each of them has reaped (``cutime``/``cstime``) — what the benchmark itself used —, and their pids."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    try:
        pids = [int(d) for d in os.listdir("/proc") if d.isdigit()]
    except OSError:
        return None
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # exited meanwhile
        rest = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) "; comm may hold spaces
        parents[pid] = int(rest[1])
        ticks[pid] = sum(int(x) for x in rest[11:15])  # utime stime cutime cstime
    if root not in ticks:
        return None
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    total, todo, tree = 0, [root], set()
    while todo:
        pid = todo.pop()
        tree.add(pid)
        total += ticks.get(pid, 0)
        todo.extend(children.get(pid, ()))
    return total, frozenset(tree)


class LoadWatch:
    """While a benchmark runs: the highest 1-minute load average, and the most CPU that processes
    *outside* its own process tree used in any ``every_s`` window (in cores).

    The load average counts the benchmark's own processes too — a training run whose two torch threads
    keep both cores of a 2-core machine busy, beside its Ray raylet and driver, reads above 2 with
    nothing else running — so contention is judged by the others' CPU where ``/proc`` exists.
    """

    def __init__(self, every_s: float = 5.0) -> None:
        first = load_avg()
        self.max = first[0] if first else None
        self._hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._last = self._cpu()
        self.others_max: float | None = 0.0 if self._last is not None else None
        self._stop = threading.Event()
        self._every = every_s
        self._thread = threading.Thread(target=self._loop, name="load-watch", daemon=True)
        self._thread.start()

    @staticmethod
    def _cpu() -> tuple[float, int, int, frozenset[int]] | None:
        busy, own = busy_ticks(), tree_ticks(os.getpid())
        return None if busy is None or own is None else (time.monotonic(), busy, own[0], own[1])

    def _loop(self) -> None:
        while not self._stop.wait(self._every):
            self.sample()

    def sample(self) -> float | None:
        now = load_avg()
        if now is not None:
            self.max = now[0] if self.max is None else max(self.max, now[0])
        cpu = self._cpu()
        # A window in which a process left the tree is not judged: an exited process's last ticks
        # and its reaping (or an orphan re-parented away, such as a Ray raylet outliving its driver)
        # make the tree's sum jump either way.
        left = cpu is not None and self._last is not None and bool(self._last[3] - cpu[3])
        if cpu is not None and self._last is not None and cpu[0] > self._last[0] and not left:
            others = (cpu[1] - self._last[1]) - (cpu[2] - self._last[2])
            cores = max(0.0, others / self._hz / (cpu[0] - self._last[0]))
            self.others_max = cores if self.others_max is None else max(self.others_max, cores)
        self._last = cpu if cpu is not None else self._last
        return self.max

    def stop(self) -> float | None:
        self._stop.set()
        return self.sample()


def cpu_bf16() -> bool:
    """Whether this CPU has native bf16 (AVX512-BF16 or AMX): the same test ``dtype: auto`` uses."""
    from adept.models import cpu_has_native_bf16

    return cpu_has_native_bf16()


def gpu_name() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def machine_info() -> dict[str, Any]:
    """CPU model, cores, memory, GPU, bf16, load average and the versions that matter for the numbers."""
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "mem_gib": _mem_gib(),
        "gpu": gpu_name(),
        "bf16": cpu_bf16(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    for dist in ("adept", "torch", "transformers", "peft", "trl", "ray", "pymilvus", "milvus-lite", "milvus"):
        info[dist] = _version(dist)
    return info


def git_commit() -> str | None:
    """``HEAD``'s short hash, ``+dirty`` when tracked files differ from it; None outside a checkout."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "-C",
                str(REPO),
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ".",
                ":!bench/results",
            ],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def dtype_name(dtype: Any) -> str:
    """``torch.bfloat16`` -> ``bfloat16``."""
    return str(dtype).removeprefix("torch.")


# -- memory, measured in the process that did the work ---------------------------------------------
def peak_rss_mib() -> float:
    """Peak resident memory of *this* process in MiB.

    Linux's ``VmHWM`` belongs to the process's own address space. ``ru_maxrss`` does not: a child
    started by ``subprocess`` inherits its parent's peak at exec (a worker spawned by a 2 GiB
    parent reports >= 2 GiB), so it is only the fallback where ``/proc`` is missing.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    scale = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux KiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale / 1024


def run_worker(
    script: Path | str,
    kind: str,
    spec: dict[str, Any],
    *,
    prefix: Sequence[str] = (),
    env: dict[str, str] | None = None,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """Run ``script --worker KIND --spec JSON`` in a fresh process (after ``prefix``, e.g. ``unshare -n``).

    The worker prints ``BENCH_RESULT <json>`` as its last result line (``worker_main`` does that).
    Raises ``RuntimeError`` with the worker's output tail when it fails.
    """
    cmd = [*prefix, sys.executable, str(script), "--worker", kind, "--spec", json.dumps(spec)]
    out = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout_s,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})},
    )
    for line in reversed(out.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    sys.stderr.write(out.stdout[-4000:] + out.stderr[-4000:])
    raise RuntimeError(f"{kind} worker failed (exit {out.returncode})")


def worker_main(workers: dict[str, Any], kind: str, spec_json: str) -> None:
    """The worker side of ``run_worker``: run ``workers[kind](spec)`` and print its JSON result."""
    result = workers[kind](json.loads(spec_json))
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# -- statistics and output -----------------------------------------------------------------------
def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linear interpolation between closest ranks."""
    data = sorted(values)
    if not data:
        raise ValueError("percentile of no values")
    pos = (len(data) - 1) * q / 100
    lo, hi = int(pos), min(int(pos) + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Print a rich table; floats get 4 significant digits."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(str(col))
    for row in rows:
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    Console().print(table)


class Run:
    """One benchmark run: notes the date, commit and load when it starts, writes the result at the end.

    Args:
        name: Result name (``bench/results/<name>.json``).
        args: The command-line arguments (``argparse.Namespace`` or dict); ``quick`` picks the folder.
    """

    def __init__(self, name: str, args: Any) -> None:
        self.name = name
        self.args = {k: v for k, v in (vars(args) if not isinstance(args, dict) else args).items()}
        self.quick = bool(self.args.get("quick"))
        self.date = datetime.now(UTC).isoformat(timespec="seconds")
        self.load_start = load_avg()
        self.load = LoadWatch()

    def write(self, figures: Sequence[Figure], *, dtype: str | None, details: dict[str, Any]) -> Path:
        """Write the result file; ``dtype`` is what the measured code computed in (None: no tensors)."""
        if not figures:
            raise ValueError(f"benchmark {self.name!r} produced no figures")
        load_max = self.load.stop()
        machine = {**machine_info(), "load_avg_start": self.load_start, "load_avg_end": load_avg()}
        machine["load_avg_max"] = load_max
        others = self.load.others_max
        machine["others_cores_max"] = None if others is None else round(others, 2)
        if others is not None:  # the CPU other processes took: what makes a figure not quiet
            machine["contended"] = others > OTHERS_CORES_LIMIT
        else:  # no /proc: the load average, which also counts the benchmark's own processes
            machine["contended"] = load_max is not None and load_max > machine["usable_cores"]
        out = {
            "name": self.name,
            "schema": SCHEMA,
            "date": self.date,
            "git_commit": git_commit(),
            "size": "quick" if self.quick else "default",
            "args": self.args,
            "dtype": dtype,
            "machine": machine,
            "figures": [f.to_json() for f in figures],
            "details": details,
        }
        folder = QUICK_DIR if self.quick else RESULTS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.name}.json"
        if machine["contended"]:
            why = (
                f"other processes used up to {others:.1f} cores"
                if others is not None
                else f"the 1-minute load reached {load_max:.1f} on {machine['usable_cores']} cores"
            )
            print(
                f"CONTENDED: {why} during this run; its figures are not quiet and stay out of the README table",
                file=sys.stderr,
            )
            if path.exists() and not is_contended(json.loads(path.read_text()).get("machine", {})):
                path = folder / f"{self.name}.contended.json"  # never replace a quiet result
        path.write_text(json.dumps(out, indent=2, default=str) + "\n")
        print(f"wrote {path}")
        return path


def write_result(
    name: str, data: dict[str, Any], *, figures: Sequence[Figure] = (), dtype: str | None = None
) -> Path:
    """One-call form of ``Run(...).write``: ``data`` goes to ``details``; its ``quick`` key picks the folder."""
    return Run(name, {"quick": bool(data.get("quick"))}).write(figures, dtype=dtype, details=data)
