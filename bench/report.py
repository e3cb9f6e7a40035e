"""One Markdown table and one PNG from every ``bench/results/<name>.json``.

    python -m bench.report            # bench/results -> bench/results/report.md, report.png
    python -m bench.report --quick    # bench/results/quick (what `make bench BENCH_ARGS=--quick` wrote)
    python -m bench.report --readme   # also replace the README's generated benchmark table

The README's benchmark section is this table, regenerated between its markers, never typed, and
only from quiet runs: a result during whose run other processes took CPU (``contended``,
bench/_common.py) is left out of it and named below it; ``report.md`` shows every result.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._common import QUICK_DIR, RESULTS_DIR, is_contended  # noqa: E402

BEGIN = "<!-- BEGIN:bench-report -->"
END = "<!-- END:bench-report -->"
ORDER = ["training", "serving", "retrieval", "load", "kernel"]  # the rest alphabetically after these
REQUIRED = ("name", "date", "machine", "dtype", "figures", "size")
FIGURE_KEYS = ("figure", "value", "unit", "baseline", "baseline_value", "ratio", "higher_is_better")


class ReportError(ValueError):
    """A result file that cannot be reported (names the file and what is wrong)."""


def load_results(folder: Path) -> list[dict[str, Any]]:
    """Every ``*.json`` result in ``folder``, in report order; a malformed file raises ``ReportError``."""
    results = []
    for path in sorted(folder.glob("*.json")):
        if path.name.endswith(".contended.json"):  # a loaded rerun kept beside a quiet result
            continue
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ReportError(f"{path}: not JSON ({e})") from None
        missing = [k for k in REQUIRED if k not in data]
        if missing:
            raise ReportError(f"{path}: missing {', '.join(missing)} (written by an old bench? rerun it)")
        if not data["figures"]:
            raise ReportError(f"{path}: no figures")
        for i, fig in enumerate(data["figures"]):
            if absent := [k for k in FIGURE_KEYS if k not in fig]:
                raise ReportError(f"{path}: figure {i} lacks {', '.join(absent)}")
        results.append(data)
    if not results:
        raise ReportError(f"no results in {folder}: run `make bench` (or a bench/*.py) first")
    rank = {name: i for i, name in enumerate(ORDER)}
    return sorted(results, key=lambda r: (rank.get(r["name"], len(ORDER)), r["name"]))


def _num(x: float | None) -> str:
    if x is None:
        return "—"
    if x == 0:
        return "0"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"


def _machine(m: dict[str, Any]) -> str:
    cores = f"{m.get('usable_cores') or m.get('cores')} cores"
    bf16 = ", bf16" if m.get("bf16") else ", no bf16"
    gpu = m.get("gpu") or "no GPU"
    start, end = m.get("load_avg_start"), m.get("load_avg_end")
    load = f", load {start[0]:.1f}→{end[0]:.1f}" if start and end else ""
    if m.get("load_avg_max") is not None:
        load += f" (max {m['load_avg_max']:.1f})"
    if m.get("others_cores_max") is not None:
        load += f", others ≤ {m['others_cores_max']:.1f} cores"
    if is_contended(m):
        load += ", CONTENDED"
    return f"{m.get('cpu', '?')}, {cores}{bf16}, {gpu}{load}"


def _ratio(fig: dict[str, Any]) -> str:
    if fig["ratio"] is None:
        return "—"
    r = fig["ratio"]
    return (
        f"{r:.2f}× {'↑' if fig['higher_is_better'] else '↓'}"
        if r >= 0.1
        else f"{r:.2g}× {'↑' if fig['higher_is_better'] else '↓'}"
    )


def quiet_only(results: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """``(quiet results, one line per contended result left out)``."""
    quiet, left_out = [], []
    for r in results:
        if is_contended(r["machine"]):
            m = r["machine"]
            peak = m.get("load_avg_max") or max(
                x[0] for x in (m.get("load_avg_start"), m.get("load_avg_end")) if x
            )
            cores = m.get("usable_cores") or m.get("cores")
            why = (
                f"other processes used {m['others_cores_max']:.1f} cores"
                if m.get("others_cores_max") is not None
                else f"load {peak:.1f} on {cores} cores"
            )
            left_out.append(f"{r['name']} ({r['date'][:10]}: {why})")
        else:
            quiet.append(r)
    return quiet, left_out


def render_markdown(results: list[dict[str, Any]], left_out: Sequence[str] = ()) -> str:
    """The table: one row per figure, with its baseline, ratio, machine, dtype and date."""
    lines = [
        "| benchmark | figure | value | baseline | ratio | machine | dtype | date, commit |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        machine, dtype = _machine(r["machine"]), r["dtype"] or "—"
        when = f"{r['date'][:10]}, {r.get('git_commit') or '?'}"
        bench = r["name"] + (" (quick)" if r["size"] == "quick" else "")
        for fig in r["figures"]:
            figure = fig["figure"] + (f" — {fig['note']}" if fig.get("note") else "")
            base = fig["baseline"] + (
                f": {_num(fig['baseline_value'])} {fig['unit']}".rstrip()
                if fig["baseline_value"] is not None
                else ""
            )
            value = f"{_num(fig['value'])} {fig['unit']}".rstrip()
            cells = [bench, figure, value, base, _ratio(fig), machine, dtype, when]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines.append("")
    lines.append(
        "ratio = value / baseline, both measured in the same run; ↑: higher is better, ↓: lower is better. "
        "load: the 1-minute load average at the start → end of the run (it counts the benchmark's own "
        "processes); others: the most CPU processes outside the benchmark took in any 5 s window — above "
        "half a core the run is contended (speeds low and noisy) and left out of this table."
    )
    if left_out:
        lines.append("")
        lines.append(
            "Left out, measured on a loaded machine (rerun quietly: `python -m bench --only NAME`): "
            + "; ".join(left_out)
            + "."
        )
    return "\n".join(lines) + "\n"


def render_png(results: list[dict[str, Any]], path: Path) -> Path:
    """A bar per figure: its ratio to the baseline (log scale), green where it beats the baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(f"{r['name']}: {f['figure']}", f) for r in results for f in r["figures"] if f["ratio"]]
    fig, ax = plt.subplots(figsize=(13, 0.42 * len(rows) + 1.4))
    labels = [name if len(name) <= 80 else name[:77] + "..." for name, _ in rows][::-1]
    ratios = [f["ratio"] for _, f in rows][::-1]
    good = [(f["ratio"] >= 1) == f["higher_is_better"] for _, f in rows][::-1]
    ax.barh(labels, ratios, color=["#2e8b57" if g else "#d2691e" for g in good])
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("ratio to the baseline (log scale; green: better than the baseline)")
    dates = sorted(r["date"][:10] for r in results)
    ax.set_title(
        f"Adept benchmarks, {dates[0]} – {dates[-1]}"
        if dates[0] != dates[-1]
        else f"Adept benchmarks, {dates[0]}"
    )
    ax.tick_params(axis="y", labelsize=7)
    fig.subplots_adjust(left=0.42, right=0.98)  # room for the figure names
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def update_readme(readme: Path, table: str, png: str | None) -> bool:
    """Replace what stands between the README's markers; returns whether the file changed."""
    text = readme.read_text()
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ReportError(f"{readme}: needs exactly one {BEGIN} ... {END} pair")
    body = readme_block(table, png)
    new = text[: text.index(BEGIN)] + body + text[text.index(END) + len(END) :]
    if new != text:
        readme.write_text(new)
    return new != text


def readme_block(table: str, png: str | None) -> str:
    """The generated README block, markers included."""
    note = "<!-- generated by `python -m bench.report --readme` from bench/results/*.json: do not edit -->"
    image = f"\n![ratio of each figure to its baseline]({png})\n" if png else ""
    return f"{BEGIN}\n{note}\n\n{table}{image}{END}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help=f"report {QUICK_DIR.relative_to(REPO)} instead")
    p.add_argument("--results", type=Path, help="folder of result JSON files (overrides --quick)")
    p.add_argument("--readme", nargs="?", const=REPO / "README.md", type=Path, help="also update this README")
    args = p.parse_args(argv)
    folder = args.results or (QUICK_DIR if args.quick else RESULTS_DIR)
    try:
        return _report(folder, args.readme)
    except ReportError as e:
        print(f"bench.report: {e}", file=sys.stderr)
        return 1


def _report(folder: Path, readme: Path | None) -> int:
    results = load_results(folder)
    table = render_markdown(results)
    (folder / "report.md").write_text(table)
    png = render_png(results, folder / "report.png")
    print(table)
    print(f"wrote {folder / 'report.md'} and {png}")
    if readme:
        quiet, left_out = quiet_only(results)
        home = readme.resolve().parent
        rel = None
        if quiet:
            png = render_png(quiet, folder / "readme.png")
            rel = str(png.relative_to(home)) if png.is_relative_to(home) else None
        changed = update_readme(readme, render_markdown(quiet, left_out), rel)
        print(f"{readme}: {'updated' if changed else 'already current'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
