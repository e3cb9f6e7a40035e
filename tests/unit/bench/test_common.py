"""The shared result format, fresh-process workers and their memory figures, and the `make bench` runner."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from bench import __main__ as runner
from bench import _common
from bench._common import Figure, Run, peak_rss_mib, run_worker

REPO = Path(__file__).resolve().parents[3]


def test_ratio_is_value_over_baseline_and_absent_without_one() -> None:
    assert Figure("f", 3.0, "x", "b", 2.0).ratio == 1.5
    assert Figure("f", 3.0, "x", "b", None).ratio is None
    assert Figure("f", 3.0, "x", "b", 0.0).ratio is None
    assert Figure("f", 3.0, "x", "b", 2.0).to_json()["ratio"] == 1.5


def test_a_run_writes_the_common_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_common, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(_common, "QUICK_DIR", tmp_path / "quick")
    run = Run("demo", {"quick": True, "scale": 10})
    path = run.write([Figure("speed", 4.0, "ops/s", "slow way", 2.0)], dtype="float32", details={"k": 1})
    assert path == tmp_path / "quick" / "demo.json"  # a smoke run never overwrites default-size results
    data = json.loads(path.read_text())
    assert (
        data["size"] == "quick"
        and data["args"] == {"quick": True, "scale": 10}
        and data["dtype"] == "float32"
    )
    assert data["figures"] == [
        {"figure": "speed", "value": 4.0, "unit": "ops/s", "baseline": "slow way", "baseline_value": 2.0,
         "higher_is_better": True, "note": "", "ratio": 2.0}
    ]  # fmt: skip
    machine = data["machine"]
    assert machine["cores"] >= 1 and machine["cpu"] and isinstance(machine["bf16"], bool)
    assert len(machine["load_avg_start"]) == 3 and len(machine["load_avg_end"]) == 3
    assert data["details"] == {"k": 1} and data["date"][:2] == "20"
    assert Run("demo", {"quick": False}).write([Figure("s", 1.0, "", "b", 1.0)], dtype=None, details={}) == (
        tmp_path / "demo.json"
    )


class FakeCPU:
    """``/proc`` as the watch reads it: busy ticks of the machine, ticks of the benchmark's own tree."""

    def __init__(self) -> None:
        self.busy = self.own = 0
        self.tree = frozenset({1, 2})

    def spend(self, own: int, others: int) -> None:
        self.busy += own + others
        self.own += own


def test_only_other_processes_make_a_run_contended(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_common, "RESULTS_DIR", tmp_path)
    cpu = FakeCPU()
    monkeypatch.setattr(_common, "busy_ticks", lambda: cpu.busy)
    monkeypatch.setattr(_common, "tree_ticks", lambda pid: (cpu.own, cpu.tree))
    cores = _common.usable_cores()
    monkeypatch.setattr(_common, "load_avg", lambda: [cores + 1.0, 1.0, 1.0])  # its own load
    run = Run("demo", {})
    cpu.spend(own=10_000, others=0)  # the benchmark keeps every core busy itself
    quiet = run.write([Figure("s", 1.0, "", "b", 1.0)], dtype=None, details={})
    machine = json.loads(quiet.read_text())["machine"]
    assert quiet == tmp_path / "demo.json" and machine["contended"] is False
    assert machine["others_cores_max"] == 0.0 and machine["load_avg_max"] == cores + 1.0
    run = Run("demo", {})
    cpu.spend(own=100, others=10_000)  # another process took cores meanwhile
    loaded = run.write([Figure("s", 2.0, "", "b", 1.0)], dtype=None, details={})
    machine = json.loads(loaded.read_text())["machine"]
    assert loaded == tmp_path / "demo.contended.json" and machine["contended"] is True
    assert machine["others_cores_max"] > _common.OTHERS_CORES_LIMIT
    # A child that exits (or a Ray raylet re-parented away) takes its ticks out of the tree's sum:
    # that window is not judged, rather than read as the others' CPU.
    (tmp_path / "demo.contended.json").unlink()
    run = Run("demo", {})
    cpu.own -= 50_000
    cpu.tree = frozenset({1})
    again = run.write([Figure("s", 3.0, "", "b", 1.0)], dtype=None, details={})
    assert json.loads(again.read_text())["machine"]["contended"] is False


def test_the_watch_counts_its_own_child_processes_as_its_own() -> None:
    import os
    import subprocess

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        own = _common.tree_ticks(os.getpid())
        assert own is not None and own[0] >= 0 and {os.getpid(), child.pid} <= own[1]
        assert _common.tree_ticks(2**22 + 7) is None  # no such process
    finally:
        child.kill()
        child.wait()


def test_a_contended_run_is_marked_and_never_replaces_a_quiet_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without /proc the load average decides.
    monkeypatch.setattr(_common, "busy_ticks", lambda: None)
    monkeypatch.setattr(_common, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(_common, "load_avg", lambda: [0.5, 0.5, 0.5])
    quiet = Run("demo", {}).write([Figure("s", 1.0, "", "b", 1.0)], dtype=None, details={})
    assert json.loads(quiet.read_text())["machine"]["contended"] is False
    cores = _common.usable_cores()
    monkeypatch.setattr(_common, "load_avg", lambda: [cores + 2.5, 1.0, 1.0])
    loaded = Run("demo", {}).write([Figure("s", 2.0, "", "b", 1.0)], dtype=None, details={})
    assert loaded == tmp_path / "demo.contended.json"
    machine = json.loads(loaded.read_text())["machine"]
    assert machine["contended"] is True and machine["load_avg_max"] == cores + 2.5
    assert json.loads(quiet.read_text())["figures"][0]["value"] == 1.0
    assert _common.is_contended({"usable_cores": 2, "load_avg_start": [0.1], "load_avg_end": [2.4]})
    assert not _common.is_contended({"usable_cores": 2, "load_avg_start": [0.1], "load_avg_end": [1.9]})


def test_a_run_without_figures_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_common, "RESULTS_DIR", tmp_path)
    with pytest.raises(ValueError, match="no figures"):
        Run("demo", {}).write([], dtype=None, details={})


WORKER = """
import sys
sys.path.insert(0, {repo!r})
from bench._common import peak_rss_mib, worker_main

def peak(spec):
    if spec.get("fail"):
        raise SystemExit(3)
    return {{"peak_mib": peak_rss_mib()}}

worker_main({{"peak": peak}}, sys.argv[2], sys.argv[4])
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="VmHWM is Linux's; elsewhere ru_maxrss is used"
)
def test_a_worker_reports_its_own_peak_memory_not_its_parents(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER.format(repo=str(REPO))))
    ballast = bytearray(400 * 2**20)
    ballast[::4096] = b"\1" * len(ballast[::4096])  # touch every page: the parent's peak is >= 400 MiB
    assert peak_rss_mib() >= 400
    peak = run_worker(script, "peak", {})["peak_mib"]
    # ru_maxrss would say >= 400 here: a child inherits its parent's peak at exec.
    assert 0 < peak < 200
    del ballast


def test_a_failing_worker_raises_with_its_kind(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER.format(repo=str(REPO))))
    with pytest.raises(RuntimeError, match="peak worker failed"):
        run_worker(script, "peak", {"fail": True})


def test_the_runner_runs_every_benchmark_and_fails_at_the_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a_ok.py").write_text("import sys; assert sys.argv[1:] == ['--quick']\n")
    (tmp_path / "b_bad.py").write_text("raise SystemExit(3)\n")
    (tmp_path / "c_later.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').write('yes')\n")
    (tmp_path / "_private.py").write_text("raise SystemExit(9)\n")
    (tmp_path / "report.py").write_text("raise SystemExit(9)\n")
    scripts = runner.benchmarks(tmp_path)
    assert [s.name for s in scripts] == ["a_ok.py", "b_bad.py", "c_later.py"]
    outcomes = runner.run_all(scripts, ["--quick"])
    assert [(name, rc) for name, rc, _ in outcomes] == [("a_ok.py", 0), ("b_bad.py", 3), ("c_later.py", 0)]
    assert (tmp_path / "ran").read_text() == "yes"  # the failure did not stop the ones after it
    assert runner.summary(outcomes) == 1
    assert "FAILED: b_bad.py" in capsys.readouterr().err
    assert runner.summary([("a_ok.py", 0, 1.0)]) == 0


def test_every_benchmark_is_found() -> None:
    names = {p.stem for p in runner.benchmarks(runner.BENCH_DIR)}
    assert names == {"autoscaling", "finetune_api", "kernel", "load", "retrieval", "serving", "training"}
