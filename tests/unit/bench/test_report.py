"""``python -m bench.report``: sample result files -> one Markdown table, one PNG, the README block."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import report
from bench._common import RESULTS_DIR, Figure

MACHINE = {
    "cpu": "AMD EPYC",
    "cores": 2,
    "usable_cores": 2,
    "gpu": None,
    "bf16": False,
    "load_avg_start": [1.0, 0.5, 0.2],
    "load_avg_end": [1.5, 1.0, 0.4],
}


def result(name: str, figures: list[Figure], *, dtype: str | None = "float32", size: str = "default") -> dict:
    return {
        "name": name,
        "schema": 1,
        "date": "2026-11-29T10:00:00+00:00",
        "git_commit": "abc123def456",
        "size": size,
        "args": {"quick": size == "quick"},
        "dtype": dtype,
        "machine": MACHINE,
        "figures": [f.to_json() for f in figures],
        "details": {},
    }


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "results"
    folder.mkdir()
    samples = [
        result("kernel", [Figure("authenticate, median", 12.0, "µs", "dict lookup", 0.6, higher_is_better=False)],
               dtype=None),
        result("training", [
            Figure("fine-tuning tokens/s", 1500.0, "tokens/s", "TRL SFTTrainer", 1000.0,
                   note="eval loss 1.2 vs 1.21"),
            Figure("QLoRA peak memory", 450.0, "MiB", "LoRA", 500.0, higher_is_better=False),
        ], dtype="bfloat16"),
        result("zeta", [Figure("something | odd", 3.0, "x", "nothing", None)], size="quick"),
    ]  # fmt: skip
    for r in samples:
        (folder / f"{r['name']}.json").write_text(json.dumps(r))
    return folder


def test_table_has_one_row_per_figure_in_report_order(results_dir: Path) -> None:
    table = report.render_markdown(report.load_results(results_dir))
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0].startswith("| benchmark | figure | value | baseline | ratio | machine | dtype | date")
    # training first (report order), then kernel, then the rest alphabetically
    assert [r.split(" | ")[0] for r in rows[1:]] == ["| training", "| training", "| kernel", "| zeta (quick)"]
    tokens = rows[1]
    assert "fine-tuning tokens/s — eval loss 1.2 vs 1.21" in tokens
    assert "1,500 tokens/s" in tokens and "TRL SFTTrainer: 1,000 tokens/s" in tokens
    assert "1.50× ↑" in tokens and "bfloat16" in tokens and "2026-11-29, abc123def456" in tokens
    assert "AMD EPYC, 2 cores, no bf16, no GPU, load 1.0→1.5" in tokens
    assert "0.90× ↓" in rows[2]  # QLoRA / LoRA memory: lower is better
    assert "| — |" in rows[3]  # no tensors in the kernel benchmark: no dtype
    assert "something \\| odd" in rows[4] and "| nothing | — |" in rows[4]  # no baseline value: no ratio


def test_png_is_written(results_dir: Path, tmp_path: Path) -> None:
    path = report.render_png(report.load_results(results_dir), tmp_path / "out" / "report.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ({"name": "x"}, "missing date"),
        (result("x", []), "no figures"),
        (
            {**result("x", [Figure("f", 1.0, "", "b", 1.0)]), "figures": [{"figure": "f"}]},
            "figure 0 lacks value",
        ),
    ],
)
def test_a_malformed_result_is_named(tmp_path: Path, broken: dict, message: str) -> None:
    (tmp_path / "x.json").write_text(json.dumps(broken))
    with pytest.raises(report.ReportError, match=message) as e:
        report.load_results(tmp_path)
    assert "x.json" in str(e.value)


def test_no_results_is_an_error_not_an_empty_table(tmp_path: Path) -> None:
    with pytest.raises(report.ReportError, match="no results"):
        report.load_results(tmp_path)
    assert report.main(["--results", str(tmp_path)]) == 1


def test_readme_block_is_replaced_between_markers_only(results_dir: Path, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(
        f"# Title\n\n## Benchmarks\n\nintro\n\n{report.BEGIN}\nold typed table\n{report.END}\n\nafter\n"
    )
    assert report.main(["--results", str(results_dir), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# Title\n\n## Benchmarks\n\nintro\n\n") and text.endswith("\n\nafter\n")
    assert "old typed table" not in text and "| training | fine-tuning tokens/s" in text
    assert "![ratio of each figure to its baseline](results/readme.png)" in text
    assert (results_dir / "report.md").read_text() in text
    assert not report.update_readme(readme, (results_dir / "report.md").read_text(), "results/readme.png")


def test_the_readme_leaves_out_contended_runs(results_dir: Path, tmp_path: Path) -> None:
    loaded = result("serving", [Figure("tokens/s", 9.0, "tokens/s", "HF generate", 3.0)])
    loaded["machine"] = {**MACHINE, "load_avg_max": 4.5, "contended": True}
    old = result("load", [Figure("requests/s", 5.0, "requests/s", "one replica", 4.0)])
    old["machine"] = {**MACHINE, "load_avg_end": [3.1, 2.0, 1.0]}  # before load_avg_max: judged by start/end
    (results_dir / "serving.json").write_text(json.dumps(loaded))
    (results_dir / "load.json").write_text(json.dumps(old))
    (results_dir / "kernel.contended.json").write_text(json.dumps(loaded))  # kept aside, never reported
    readme = tmp_path / "README.md"
    readme.write_text(f"{report.BEGIN}\n{report.END}\n")
    assert report.main(["--results", str(results_dir), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "| training |" in text and "| serving |" not in text and "| load |" not in text
    assert "Left out, measured on a loaded machine" in text
    assert (
        "serving (2026-11-29: load 4.5 on 2 cores)" in text
        and "load (2026-11-29: load 3.1 on 2 cores)" in text
    )
    full = (results_dir / "report.md").read_text()
    assert "| serving |" in full and "CONTENDED" in full and full.count("| kernel |") == 1


def test_readme_without_markers_is_refused(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("no markers here\n")
    with pytest.raises(report.ReportError, match="BEGIN:bench-report"):
        report.update_readme(readme, "| table |\n", None)


def test_the_readme_table_is_the_generated_one() -> None:
    """The README's benchmark section is regenerated from the committed results, never typed."""
    readme = Path(report.REPO / "README.md").read_text()
    block = readme[readme.index(report.BEGIN) : readme.index(report.END) + len(report.END)]
    quiet, left_out = report.quiet_only(report.load_results(RESULTS_DIR))
    table = report.render_markdown(quiet, left_out)
    assert block == report.readme_block(table, "bench/results/readme.png" if quiet else None), (
        "README benchmark table is stale: run `python -m bench.report --readme`"
    )
