"""Report writing: JSON, Markdown and PNG charts land in --out; the terminal table prints."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from rich.console import Console

from tests.unit.eval._builders import route_result, skipped
from tools.eval.recommend import recommend
from tools.eval.report import print_report, write_report
from tools.eval.routes import Decoding
from tools.eval.runner import _route_dict


def _report() -> dict:
    routes = [
        route_result("base", [0.0, 0.5] * 10, latency=0.3),
        route_result("rag", [1.0, 0.5] * 10, latency=0.6, extra={"hit_at_k": 1.0, "groundedness": 0.8}),
        skipped("lora", "the tenant has no adapter"),
    ]
    return {
        "source": "q.jsonl",
        "questions": 20,
        "url": "http://127.0.0.1:8000",
        "decoding": asdict(Decoding()),
        "headline": "f1",
        "routes": [_route_dict(r) for r in routes],
        "recommendation": recommend(routes, "f1"),
    }


def test_write_report_creates_every_output(tmp_path: Path) -> None:
    report = _report()
    paths = write_report(report, tmp_path / "out")
    assert set(paths) == {"json", "markdown", "metrics", "latency"}
    for name in ("metrics.png", "latency.png"):
        data = (tmp_path / "out" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    loaded = json.loads((tmp_path / "out" / "report.json").read_text())
    assert loaded["recommendation"]["route"] == "rag"
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Recommendation: base+RAG" in md
    assert "adapter: skipped — the tenant has no adapter" in md and "| F1 * |" in md
    assert "![metrics](metrics.png)" in md and "| even |" in md


def test_terminal_table_shows_routes_and_recommendation() -> None:
    console = Console(record=True, width=200)
    print_report(_report(), console)
    text = console.export_text()
    assert "base+RAG" in text and "Recommended route: base+RAG" in text and "skipped" in text
