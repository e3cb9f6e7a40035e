"""Autoscaling on the embedded platform: tenants' load ramps up, LLM replicas follow it up and back down.

    python bench/autoscaling.py [--quick] [--tenants 4] [--peak 16] [--max-replicas 2] [--model DIR]

Phases (every request a streamed chat completion on one tenant's LoRA adapter):
  warm   1 stream in flight for ``--warm-s``: the one-replica baseline (TTFT, adapters loaded);
  ramp   in-flight streams rise from 1 to ``--peak`` over ``--ramp-s``, then stay at the peak until the
         LLM deployment runs ``--max-replicas`` replicas and ``--hold-s`` more (capped);
  quiet  1 stream in flight until the deployment is back at one replica (capped), so a replica is
         scaled down while streams run.
Reported: replicas over time against the offered load (in-flight streams; a PNG), time to scale up
and back down, requests failed (must be 0) and streams cut (must be 0), p50/p99 time to first
token during the ramp against the warm phase, and the share of adapter requests during the ramp
that made a replica cold-load the adapter (Serve's multiplexed routing, counted from the replicas'
logs) against random routing replayed on the same requests, replica counts and LRU size.

The autoscaler runs with short delays (look-back just above Serve's 10 s metric push interval, up
1 s, down 6 s) so the run takes minutes; the shipped defaults (``AutoscalingOptions``) are slower
on purpose. The target is the default one: 0.75 x ``llm.max_batch_size``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from bench._common import QUICK_DIR, RESULTS_DIR, Figure, Run, percentile, print_table
from bench.reliability.checks import error_problem, sse_problem

COLD_LOAD = re.compile(r"adapter cold load: (\S+) in ([\d.]+) s at ([\d.]+)")
DOWNSCALE_DELAY_S = 6.0  # the bench's own, short: the shipped default is 600 s
PROMPTS = ["How do I reset the feeder relay?", "What is the torque for M8 bolts?", "Summarise the outage."]


# -- the platform ---------------------------------------------------------------------------------
def autoscaling_config(
    data_dir: Path,
    model: Path | str,
    port: int,
    *,
    max_replicas: int = 2,
    max_batch_size: int = 4,
    adapters_per_replica: int = 2,
    look_back_s: float = 12.0,  # just above Serve's 10 s metric push interval (SERVE_METRICS_INTERVAL_S)
    upscale_delay_s: float = 1.0,
    downscale_delay_s: float = DOWNSCALE_DELAY_S,
    dtype: str = "float32",
) -> Any:
    """A ``ServingConfig`` whose LLM deployment autoscales 1..``max_replicas`` on fractional CPUs (fits 2 cores)."""
    from adept.config.serving import ServingConfig

    autoscaling = {
        "min_replicas": 1,
        "max_replicas": max_replicas,
        "look_back_period_s": look_back_s,
        "upscale_delay_s": upscale_delay_s,
        "downscale_delay_s": downscale_delay_s,
    }
    return ServingConfig.model_validate(
        {
            "platform": {"data_dir": str(data_dir), "model": str(model), "device": "cpu", "dtype": dtype},
            "llm": {
                "max_batch_size": max_batch_size,
                "max_adapters_per_replica": adapters_per_replica,
                "max_tokens_limit": 256,
                "default_max_tokens": 16,
            },
            "gateway": {"port": port, "request_timeout_s": 300},
            # gateway 0.1 + retrieval 0.25 + max_replicas x 0.5 CPUs: two LLM replicas fit ray.init(num_cpus=2).
            "deployments": {
                "llm": {"autoscaling_config": autoscaling, "ray_actor_options": {"num_cpus": 0.5}}
            },
            "finetuning": {"enabled": False},
        }
    )


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def replica_states(app: str, deployment: str = "llm") -> dict[str, int]:
    """``{"RUNNING": n, "STARTING": n, "STOPPING": n, ...}`` of one deployment, from Serve's controller."""
    from ray import serve

    status = serve.status().applications[app].deployments[deployment]
    return {str(getattr(k, "value", k)): int(v) for k, v in status.replica_states.items()}


# -- the load -------------------------------------------------------------------------------------
@dataclass
class Record:
    """One request: when it started, its first token and its end (monotonic seconds from the run's start)."""

    worker: int
    tenant: str
    model: str
    phase: str
    start: float
    wall_start: float
    first: float | None = None
    end: float | None = None
    status: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.problem is None

    @property
    def ttft(self) -> float | None:
        return None if self.first is None else self.first - self.start


@dataclass
class Sample:
    """One look at the deployment: replica states and the offered load (streams in flight)."""

    t: float
    running: int
    starting: int
    stopping: int
    inflight: int
    desired: int


@dataclass
class Load:
    """Workers that keep ``desired`` streamed chat requests in flight, spread over tenants' adapters."""

    url: str
    tenants: list[Any]
    max_tokens: int = 48
    timeout_s: float = 300.0
    desired: int = 0
    phase: str = "warm"
    inflight: int = 0
    stopped: bool = False
    t0: float = field(default_factory=time.monotonic)
    records: list[Record] = field(default_factory=list)

    def now(self) -> float:
        return time.monotonic() - self.t0

    async def _one(self, client: httpx.AsyncClient, worker: int, n: int) -> None:
        tenant = self.tenants[worker % len(self.tenants)]
        model = tenant.adapters[0]
        rec = Record(worker, tenant.name, model, self.phase, self.now(), time.time())
        body = {
            "model": model,
            "messages": [{"role": "user", "content": PROMPTS[(worker + n) % len(PROMPTS)]}],
            "max_tokens": self.max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        self.inflight += 1
        self.records.append(rec)
        try:
            async with client.stream(
                "POST", "/v1/chat/completions", json=body, headers=tenant.headers()
            ) as r:
                rec.status = r.status_code
                raw = bytearray()
                async for piece in r.aiter_bytes():
                    if rec.first is None and b'"content"' in piece:
                        rec.first = self.now()
                    raw += piece
            if r.status_code != 200:
                rec.problem = error_problem(r.status_code, bytes(raw), r.headers.get("content-type", "")) or (
                    f"HTTP {r.status_code}: {bytes(raw)[:160].decode('utf-8', 'replace')}"
                )
            else:
                rec.problem = sse_problem(bytes(raw))
        except httpx.HTTPError as e:
            rec.problem = f"{type(e).__name__}: {e}"[:200]
        finally:
            rec.end = self.now()
            self.inflight -= 1

    async def _worker(self, client: httpx.AsyncClient, worker: int) -> None:
        n = 0
        while not self.stopped:
            if worker >= self.desired:
                await asyncio.sleep(0.05)
                continue
            await self._one(client, worker, n)
            n += 1

    async def run(self, control: Any, workers: int) -> None:
        """Run the workers while ``control(self)`` (a coroutine) steers ``desired``; all finish their stream."""
        limits = httpx.Limits(max_connections=workers + 4, max_keepalive_connections=workers + 4)
        timeout = httpx.Timeout(self.timeout_s, connect=30)
        async with httpx.AsyncClient(base_url=self.url, timeout=timeout, limits=limits) as client:
            tasks = [asyncio.create_task(self._worker(client, i)) for i in range(workers)]
            try:
                await control(self)
            finally:
                self.stopped = True  # workers finish the request they are in, then stop
                await asyncio.gather(*tasks)


class Watcher(threading.Thread):
    """Samples the LLM deployment's replica states and the offered load every ``every_s`` (a thread)."""

    def __init__(self, app: str, load: Load, every_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.app, self.load, self.every_s = app, load, every_s
        self.samples: list[Sample] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                states = replica_states(self.app)
            except Exception:  # the controller is busy or restarting: try again at the next tick
                states = None
            if states is not None:
                self.samples.append(
                    Sample(
                        self.load.now(),
                        states.get("RUNNING", 0),
                        states.get("STARTING", 0) + states.get("UPDATING", 0),
                        states.get("STOPPING", 0),
                        self.load.inflight,
                        self.load.desired,
                    )
                )
            self._halt.wait(self.every_s)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)

    @property
    def running(self) -> int:
        return self.samples[-1].running if self.samples else 0

    @property
    def settled_at(self) -> tuple[int, int]:
        """``(running, stopping + starting)`` at the last sample."""
        s = self.samples[-1] if self.samples else None
        return (s.running, s.stopping + s.starting) if s else (0, 0)


@dataclass
class Plan:
    """How the offered load moves; every wait on the autoscaler is capped, never a fixed sleep."""

    peak: int = 12
    warm_s: float = 5.0
    ramp_s: float = 15.0
    hold_s: float = 8.0
    quiet_concurrency: int = 1
    max_replicas: int = 2
    min_replicas: int = 1
    scale_up_cap_s: float = 300.0
    scale_down_cap_s: float = 300.0


@dataclass
class Timeline:
    """Phase boundaries (seconds from the start) and when the autoscaler acted."""

    warm: float = 0.0
    ramp: float = 0.0
    hold: float = 0.0
    quiet: float = 0.0
    end: float = 0.0
    scaled_up_at: float | None = None
    scaled_down_at: float | None = None
    wall_ramp: float = 0.0
    wall_quiet: float = 0.0


async def _wait_for(pred: Any, cap_s: float) -> bool:
    deadline = time.monotonic() + cap_s
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(0.25)
    return pred()


def make_control(plan: Plan, watcher: Watcher, tl: Timeline) -> Any:
    async def control(load: Load) -> None:
        load.phase, load.desired, tl.warm = "warm", 1, load.now()
        await asyncio.sleep(plan.warm_s)
        load.phase, tl.ramp, tl.wall_ramp = "ramp", load.now(), time.time()
        steps = max(1, int(plan.ramp_s / 0.5))
        for i in range(1, steps + 1):
            load.desired = 1 + round((plan.peak - 1) * i / steps)
            await asyncio.sleep(plan.ramp_s / steps)
        tl.hold = load.now()
        if await _wait_for(lambda: watcher.running >= plan.max_replicas, plan.scale_up_cap_s):
            tl.scaled_up_at = next(s.t for s in watcher.samples if s.running >= plan.max_replicas)
            await asyncio.sleep(plan.hold_s)  # both replicas serve streams for a while
        load.phase, load.desired, tl.quiet, tl.wall_quiet = (
            "quiet",
            plan.quiet_concurrency,
            load.now(),
            time.time(),
        )
        if await _wait_for(lambda: watcher.settled_at == (plan.min_replicas, 0), plan.scale_down_cap_s):
            tl.scaled_down_at = next(
                s.t
                for s in watcher.samples
                if s.t >= tl.quiet and (s.running, s.stopping + s.starting) == (plan.min_replicas, 0)
            )
        tl.end = load.now()

    return control


# -- adapters: measured cold loads, and random routing replayed ----------------------------------------
def cold_loads(ray_temp: Path, app: str) -> list[tuple[str, float]]:
    """``(adapter id, epoch time)`` of every adapter load in the LLM replicas' Serve logs (live or gone)."""
    out = []
    for log in sorted((ray_temp / "session_latest" / "logs" / "serve").glob(f"replica_{app}_llm_*.log")):
        for m in COLD_LOAD.finditer(log.read_text(errors="replace")):
            out.append((m.group(1), float(m.group(3))))
    return out


def replay_random(
    records: list[Record],
    samples: list[Sample],
    capacity: int,
    *,
    window: tuple[float, float] = (float("-inf"), float("inf")),
    seeds: int = 50,
) -> float:
    """Cold loads per request in ``window`` if each request went to a random running replica.

    Every request of the run is replayed in order (so the caches are warm when the window opens)
    on as many replicas as were running at its start, each with an LRU of ``capacity`` adapters
    (a replica added starts empty; the newest goes first on scale-down); only requests starting
    in ``window`` are counted. Averaged over ``seeds``.
    """
    counted = [r for r in records if window[0] <= r.start < window[1]]
    if not counted:
        return 0.0
    times = [s.t for s in samples]
    total = 0
    for seed in range(seeds):
        rng = random.Random(seed)
        caches: list[OrderedDict[str, None]] = []
        for rec in sorted(records, key=lambda r: r.start):
            i = max(0, _bisect(times, rec.start) - 1)
            n = max(1, samples[i].running if samples else 1)
            while len(caches) < n:
                caches.append(OrderedDict())
            del caches[n:]
            cache = caches[rng.randrange(n)]
            if rec.model in cache:
                cache.move_to_end(rec.model)
                continue
            total += window[0] <= rec.start < window[1]
            cache[rec.model] = None
            while len(cache) > capacity:
                cache.popitem(last=False)
    return total / seeds / len(counted)


def _bisect(values: list[float], x: float) -> int:
    import bisect

    return bisect.bisect_right(values, x)


# -- the run --------------------------------------------------------------------------------------
def run_autoscaling(platform: Any, tenants: list[Any], plan: Plan, *, max_tokens: int) -> dict[str, Any]:
    """Drive the plan against a started platform; return the raw records, samples and timeline."""
    load = Load(platform.url, tenants, max_tokens=max_tokens)
    watcher = Watcher(platform.config.app_name, load)
    tl = Timeline()
    watcher.start()
    try:
        asyncio.run(load.run(make_control(plan, watcher, tl), workers=plan.peak))
        time.sleep(1.0)
    finally:
        watcher.stop()
    return {"load": load, "samples": watcher.samples, "timeline": tl}


def summarise(raw: dict[str, Any], plan: Plan, *, ray_temp: Path, app: str, capacity: int) -> dict[str, Any]:
    records: list[Record] = raw["load"].records
    samples: list[Sample] = raw["samples"]
    tl: Timeline = raw["timeline"]
    failed = [r for r in records if not r.ok]
    ramp = [r for r in records if r.phase == "ramp"]
    warm = [r for r in records if r.phase == "warm"]
    ramp_ttft = [r.ttft for r in ramp if r.ttft is not None]
    warm_ttft = [r.ttft for r in warm if r.ttft is not None]
    loads = cold_loads(ray_temp, app)
    # Run time -> wall time: the replicas' log lines carry epoch seconds.
    wall0 = records[0].wall_start - records[0].start if records else 0.0

    def share(lo: float, hi: float) -> dict[str, Any]:
        """Cold loads per adapter request for requests starting in [lo, hi): measured, and random replayed."""
        asked = [r for r in records if lo <= r.start < hi]
        happened = [a for a, t in loads if lo + wall0 <= t < hi + wall0]
        return {
            "requests": len(asked),
            "cold_loads": len(happened),
            "multiplexed": len(happened) / len(asked) if asked else None,
            "random_replay": replay_random(records, samples, capacity, window=(lo, hi)) if asked else None,
        }

    at_max = share(tl.scaled_up_at, tl.quiet) if tl.scaled_up_at is not None else None
    max_running = max((s.running for s in samples), default=0)
    after_peak = [s for s in samples if tl.scaled_up_at is not None and s.t >= tl.scaled_up_at]
    return {
        "requests": len(records),
        "failed": len(failed),
        "cut_streams": sum(1 for r in failed if r.status == 200),
        "problems": sorted({str(r.problem) for r in failed})[:5],
        "max_running": max_running,
        "scaled_up": tl.scaled_up_at is not None,
        "scaled_down": tl.scaled_down_at is not None,
        "time_to_scale_up_s": None if tl.scaled_up_at is None else tl.scaled_up_at - tl.ramp,
        "time_to_scale_down_s": None if tl.scaled_down_at is None else tl.scaled_down_at - tl.quiet,
        "stopping_with_streams_in_flight": any(s.stopping and s.inflight for s in after_peak),
        "ttft_ramp_p50_s": percentile(ramp_ttft, 50) if ramp_ttft else None,
        "ttft_ramp_p99_s": percentile(ramp_ttft, 99) if ramp_ttft else None,
        "ttft_warm_p50_s": percentile(warm_ttft, 50) if warm_ttft else None,
        "ttft_warm_p99_s": percentile(warm_ttft, 99) if warm_ttft else None,
        "ramp_requests": len(ramp),
        "cold_loads_total": len(loads),
        # The whole ramp (one replica, then more) and the part of it at max replicas, where routing matters.
        "cold_load_share_ramp": share(tl.ramp, tl.quiet),
        "cold_load_share_at_max": at_max,
        "timeline": asdict(tl),
        "samples": [asdict(s) for s in samples],
        "records": [{**asdict(r), "ok": r.ok, "ttft": r.ttft} for r in records],
    }


def render_png(result: dict[str, Any], plan: Plan, path: Path) -> Path:
    """Replicas (running, and starting/stopping) over time against the offered load, phases marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result["samples"]
    t = [x["t"] for x in s]
    fig, ax = plt.subplots(figsize=(9, 4.2))
    ax.step(t, [x["running"] for x in s], where="post", color="tab:blue", lw=2, label="replicas running")
    ax.step(
        t,
        [x["running"] + x["starting"] for x in s],
        where="post",
        color="tab:blue",
        lw=1,
        ls=":",
        label="running + starting",
    )
    ax.fill_between(
        t,
        0,
        [x["stopping"] for x in s],
        step="post",
        color="tab:red",
        alpha=0.25,
        label="stopping (draining)",
    )
    ax.set_ylabel("LLM replicas")
    ax.set_ylim(0, plan.max_replicas + 0.5)
    ax.set_xlabel("seconds")
    ax2 = ax.twinx()
    ax2.plot(
        t, [x["inflight"] for x in s], color="tab:orange", lw=1.2, label="offered load (streams in flight)"
    )
    ax2.set_ylabel("streams in flight")
    ax2.set_ylim(0, plan.peak * 1.15 + 1)
    tl = result["timeline"]
    for name in ("ramp", "quiet"):
        ax.axvline(tl[name], color="grey", ls="--", lw=0.8)
        ax.text(tl[name], plan.max_replicas + 0.3, f" {name}", color="grey", fontsize=8)
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper right", fontsize=8)
    ax.set_title(
        f"LLM replicas vs offered load: {result['requests']} requests, {result['failed']} failed, "
        f"scale-up {_s(result['time_to_scale_up_s'])}, scale-down {_s(result['time_to_scale_down_s'])}",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _s(x: float | None) -> str:
    return "never" if x is None else f"{x:.1f} s"


def start(args: argparse.Namespace, workdir: Path) -> tuple[Any, list[Any]]:
    """The embedded platform (real Ray Serve, autoscaling LLM deployment) with seeded tenants."""
    from bench.reliability.seed import make_lora, seed_tenants
    from services.embedded import start_platform
    from tests.assets.tiny_models import cached_tiny_phi3

    model = Path(args.model) if args.model else cached_tiny_phi3(Path(".cache/test-assets").absolute())
    lora = make_lora(model, workdir / "lora", seed=1)
    admin_key = "adept-admin-autoscaling-" + str(random.getrandbits(64))
    os.environ["ADEPT_ADMIN_KEY"] = admin_key
    cfg = autoscaling_config(
        workdir / "data",
        model,
        free_port(),
        max_replicas=args.max_replicas,
        max_batch_size=args.batch,
        adapters_per_replica=args.adapters_per_replica,
        dtype=args.dtype,
    )
    platform = start_platform(cfg, num_cpus=2, timeout_s=600)
    try:
        tenants = seed_tenants(
            platform.url, admin_key, lora, n=args.tenants, finetuning=False, docs_per_tenant=1
        )
    except BaseException:
        platform.stop()
        raise
    return platform, tenants


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--quick", action="store_true", help="small sizes (a few minutes, most of it Ray starting)"
    )
    p.add_argument("--tenants", type=int, default=4)
    p.add_argument("--peak", type=int, default=16, help="streams in flight at the top of the ramp")
    p.add_argument("--max-replicas", type=int, default=2, help="2 fits 2 cores (0.5 CPU per replica)")
    p.add_argument("--batch", type=int, default=4, help="llm.max_batch_size (the target is 0.75 x this)")
    p.add_argument("--adapters-per-replica", type=int, default=2)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--ramp-s", type=float, default=30.0)
    p.add_argument("--model", default="", help="model directory (default: the tiny Phi-3 test model)")
    p.add_argument("--dtype", default="float32")
    args = p.parse_args(argv)
    if args.quick:
        args.peak, args.ramp_s, args.max_tokens = 12, 10.0, 48
    plan = Plan(
        peak=args.peak, ramp_s=args.ramp_s, max_replicas=args.max_replicas, hold_s=5.0 if args.quick else 20.0
    )
    run = Run("autoscaling", args)
    workdir = Path(tempfile.mkdtemp(prefix="adept-as-", dir="/tmp"))
    platform, tenants = start(args, workdir)
    try:
        raw = run_autoscaling(platform, tenants, plan, max_tokens=args.max_tokens)
        result = summarise(
            raw,
            plan,
            ray_temp=platform.ray_temp_dir,
            app=platform.config.app_name,
            capacity=args.adapters_per_replica,
        )
    finally:
        platform.stop()
    report(result, plan, args, run)
    return result


def report(result: dict[str, Any], plan: Plan, args: argparse.Namespace, run: Run) -> None:
    png = render_png(result, plan, (QUICK_DIR if args.quick else RESULTS_DIR) / "autoscaling.png")
    ramp_share, at_max = result["cold_load_share_ramp"], result["cold_load_share_at_max"]
    print(f"wrote {png}")
    rows = [
        (
            "requests (failed / cut streams)",
            f"{result['requests']} ({result['failed']} / {result['cut_streams']})",
        ),
        ("replicas reached", f"{result['max_running']} of {plan.max_replicas}"),
        ("time to scale up (ramp start -> all replicas running)", _s(result["time_to_scale_up_s"])),
        ("time to scale down (quiet start -> 1 replica)", _s(result["time_to_scale_down_s"])),
        ("a replica drained while streams ran", str(result["stopping_with_streams_in_flight"])),
        ("TTFT p50 / p99, ramp", f"{_f(result['ttft_ramp_p50_s'])} / {_f(result['ttft_ramp_p99_s'])} s"),
        (
            "TTFT p50 / p99, warm (1 stream)",
            f"{_f(result['ttft_warm_p50_s'])} / {_f(result['ttft_warm_p99_s'])} s",
        ),
        ("cold adapter loads / request, whole ramp: multiplexed vs random (replayed)", _shares(ramp_share)),
        (
            f"cold adapter loads / request at {plan.max_replicas} replicas: multiplexed vs random",
            _shares(at_max),
        ),
    ]
    print_table(
        f"Autoscaling: {args.tenants} tenants, peak {plan.peak} streams, 1..{plan.max_replicas} LLM replicas",
        ["what", "measured"],
        rows,
    )
    where = f"{args.tenants} tenants, ramp to {plan.peak} streams, 1..{plan.max_replicas} replicas"
    figures = [
        Figure(f"requests failed or cut through scale-up and scale-down ({where})", result["failed"], "requests",
               "requests sent", result["requests"], higher_is_better=False,
               note=f"{result['cut_streams']} streams cut; must be 0"),
    ]  # fmt: skip
    if result["time_to_scale_up_s"] is not None:
        figures.append(
            Figure(
                f"time to scale up to {plan.max_replicas} replicas ({where})",
                result["time_to_scale_up_s"],
                "s",
                "ramp length",
                plan.ramp_s,
                higher_is_better=False,
                note="upscale_delay_s 1, look-back 3 s, metrics pushed every 0.5 s",
            )
        )
    if result["time_to_scale_down_s"] is not None:
        figures.append(
            Figure(
                f"time to scale back to 1 replica once quiet ({where})",
                result["time_to_scale_down_s"],
                "s",
                "downscale_delay_s",
                DOWNSCALE_DELAY_S,
                higher_is_better=False,
                note="includes the drain: the removed replica's streams finish first",
            )
        )
    if result["ttft_ramp_p99_s"] is not None and result["ttft_warm_p99_s"]:
        figures.append(
            Figure(
                f"p99 TTFT during the ramp ({where})",
                result["ttft_ramp_p99_s"],
                "s",
                "p99 TTFT, 1 stream on 1 replica",
                result["ttft_warm_p99_s"],
                higher_is_better=False,
                note=f"p50 {_f(result['ttft_ramp_p50_s'])} s vs {_f(result['ttft_warm_p50_s'])} s",
            )
        )
    if at_max and at_max["multiplexed"] is not None:
        figures.append(
            Figure(
                f"adapter cold loads per request at {plan.max_replicas} replicas, multiplexed routing ({where})",
                at_max["multiplexed"],
                "loads/request",
                "random routing replayed on the same requests",
                at_max["random_replay"],
                higher_is_better=False,
                note=f"{args.adapters_per_replica} adapters per replica, {args.tenants} tenants; whole ramp "
                f"(1 replica first): {_shares(ramp_share)}",
            )
        )
    details = {k: v for k, v in result.items() if k != "records"}
    details["records"] = result["records"]
    details["png"] = str(png)
    run.write(figures, dtype=args.dtype, details=json.loads(json.dumps(details, default=str)))


def _shares(share: dict[str, Any] | None) -> str:
    if not share or share["multiplexed"] is None:
        return "—"
    return f"{share['multiplexed']:.3g} vs {share['random_replay']:.3g} ({share['requests']} requests)"


def _f(x: float | None) -> str:
    return "—" if x is None else f"{x:.3g}"


if __name__ == "__main__":
    out = main()
    raise SystemExit(0 if out["failed"] == 0 and out["scaled_up"] and out["scaled_down"] else 1)
