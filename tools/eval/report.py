"""Write an eval's results: a rich terminal table, ``report.json``, ``report.md`` and PNG charts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tools.eval.scoring import METRICS

CHART_METRICS = (
    "f1",
    "contains",
    "format",
    "terms",
    "combined",
    "hit_at_k",
    "citation_precision",
    "groundedness",
)


def _cell(entry: dict[str, Any] | None, ci: bool = True) -> str:
    if not entry:
        return "–"
    if ci and entry.get("low") is not None:
        return f"{entry['mean']:.3f} [{entry['low']:.2f}, {entry['high']:.2f}]"
    return f"{entry['mean']:.3f}"


def _secs(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}"


def table_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Metrics as rows, routes that ran as columns (fits a terminal however many metrics there are)."""
    ran = [r for r in report["routes"] if not r["skipped"]]
    header = ["metric", *[r["label"] for r in ran]]
    rows = []
    for key, label in METRICS.items():
        entries = [r["summary"]["metrics"].get(key) for r in ran]
        if any(entries):
            headline = key == report["headline"]
            rows.append([f"{label} *" if headline else label, *[_cell(e, ci=headline) for e in entries]])
    rows.append(["latency p50 s", *[_secs(r["summary"]["latency_s"]["p50"]) for r in ran]])
    rows.append(["latency p95 s", *[_secs(r["summary"]["latency_s"]["p95"]) for r in ran]])
    tokens = []
    for r in ran:
        tok = r["summary"]["tokens"]
        tokens.append(
            "–" if tok["prompt_mean"] is None else f"{tok['prompt_mean']:.0f} / {tok['completion_mean']:.0f}"
        )
    rows.append(["tokens in / out", *tokens])
    rows.append(["errors", *[str(r["summary"]["errors"]) for r in ran]])
    return header, rows


def skipped_lines(report: dict[str, Any]) -> list[str]:
    return [f"{r['label']}: skipped — {r['skipped']}" for r in report["routes"] if r["skipped"]]


def print_report(report: dict[str, Any], console: Any | None = None) -> None:
    """The summary table and the recommendation on the terminal."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    header, rows = table_rows(report)
    title = f"adept eval — {report['questions']} questions, top_k={report['decoding']['top_k']}"
    table = Table(title=title, caption="* headline metric, with its 95% bootstrap interval")
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    if len(header) > 1:
        console.print(table)
    for line in skipped_lines(report):
        console.print(f"[yellow]{line}[/]", highlight=False)
    rec = report["recommendation"]
    if rec.get("route"):
        console.print(f"[bold green]Recommended route:[/] {rec['label']}")
        if rec.get("why"):
            console.print(rec["why"], highlight=False, markup=False)
    else:
        console.print("[bold yellow]No recommendation.[/]")
    for reason in rec.get("reasons", []):
        console.print(f"  • {reason}", highlight=False)


def write_json(report: dict[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    return path


def write_markdown(report: dict[str, Any], path: Path, charts: list[Path]) -> Path:
    header, rows = table_rows(report)
    rec = report["recommendation"]
    lines = [
        "# Route evaluation",
        "",
        f"- questions: `{report['source']}` ({report['questions']})",
        f"- server: {report['url']}",
        f"- decoding: {json.dumps(report['decoding'], ensure_ascii=False)}",
        f"- headline metric (*): {METRICS.get(report['headline'] or '', 'none')}, with its 95% bootstrap interval",
        "",
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
        *["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows],
        "",
        *[f"- {line}" for line in skipped_lines(report)],
        "",
        f"## Recommendation: {rec.get('label') or 'none'}",
        "",
        *([f"**{rec['why']}**", ""] if rec.get("why") else []),
        *[f"- {r}" for r in rec.get("reasons", [])],
        "",
    ]
    if rec.get("considerations"):
        lines += ["## Considerations (Phi-3 Cookbook)", ""]
        labels = {r["name"]: r["label"] for r in report["routes"]}
        for name, text in rec["considerations"].items():
            mark = " (recommended)" if name == rec.get("route") else ""
            lines += [f"- **{labels.get(name, name)}{mark}**: {text}"]
        lines.append("")
    tags = sorted({t for r in report["routes"] for t in r["summary"].get("by_tag", {})})
    if tags and report["headline"]:
        ran = [r for r in report["routes"] if not r["skipped"]]
        lines += [f"## {METRICS[report['headline']]} by tag", ""]
        lines += ["| tag | n | " + " | ".join(r["label"] for r in ran) + " |"]
        lines += ["| --- | --- | " + " | ".join("---" for _ in ran) + " |"]
        for tag in tags:
            n = next((r["summary"]["by_tag"][tag]["n"] for r in ran if tag in r["summary"]["by_tag"]), 0)
            vals = [r["summary"]["by_tag"].get(tag, {}).get(report["headline"]) for r in ran]
            lines.append(
                f"| {tag} | {n} | " + " | ".join("–" if v is None else f"{v:.3f}" for v in vals) + " |"
            )
        lines.append("")
    lines += [f"![{c.stem}]({c.name})" for c in charts]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_charts(report: dict[str, Any], out: Path) -> list[Path]:
    """``metrics.png`` (mean per metric and route, 95 % interval bars) and ``latency.png`` (p50/p95)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ran = [r for r in report["routes"] if not r["skipped"]]
    if not ran:
        return []
    charts = []
    keys = [k for k in CHART_METRICS if any(k in r["summary"]["metrics"] for r in ran)]
    if keys:
        fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(keys) + 2), 4))
        width = 0.8 / len(ran)
        for i, r in enumerate(ran):
            entries = [r["summary"]["metrics"].get(k) for k in keys]
            means = [e["mean"] if e else 0.0 for e in entries]
            err = [
                [(e["mean"] - e["low"]) if e else 0 for e in entries],
                [(e["high"] - e["mean"]) if e else 0 for e in entries],
            ]
            xs = [j + (i - (len(ran) - 1) / 2) * width for j in range(len(keys))]
            ax.bar(xs, means, width, yerr=err, capsize=3, label=r["label"])
        ax.set_xticks(range(len(keys)), [METRICS[k] for k in keys])
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("mean (95% bootstrap CI)")
        ax.set_title("Metric by route")
        ax.legend(fontsize=8)
        fig.tight_layout()
        charts.append(out / "metrics.png")
        fig.savefig(charts[-1], dpi=100)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    labels = [r["label"] for r in ran]
    p50 = [r["summary"]["latency_s"]["p50"] or 0.0 for r in ran]
    p95 = [r["summary"]["latency_s"]["p95"] or 0.0 for r in ran]
    xs = range(len(ran))
    ax.bar([x - 0.2 for x in xs], p50, 0.4, label="p50")
    ax.bar([x + 0.2 for x in xs], p95, 0.4, label="p95")
    ax.set_xticks(list(xs), labels)
    ax.set_ylabel("seconds per answer")
    ax.set_title("Latency by route")
    ax.legend(fontsize=8)
    fig.tight_layout()
    charts.append(out / "latency.png")
    fig.savefig(charts[-1], dpi=100)
    plt.close(fig)
    return charts


def write_report(report: dict[str, Any], out: str | Path) -> dict[str, Path]:
    """Write every output into ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    charts = write_charts(report, out)
    paths = {
        "json": write_json(report, out / "report.json"),
        "markdown": write_markdown(report, out / "report.md", charts),
    }
    paths.update({c.stem: c for c in charts})
    return paths
