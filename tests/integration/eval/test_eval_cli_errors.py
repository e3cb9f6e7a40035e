"""``adept eval`` refuses bad input with one clear line and a non-zero exit, before starting anything."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tools.cli import app

pytestmark = pytest.mark.integration


def _eval(*args: str):
    return CliRunner().invoke(app, ["eval", *args])


def test_malformed_eval_file_lists_every_bad_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "ok?"}\n{oops\n{"answer": "x"}\n', encoding="utf-8")
    result = _eval("--questions", str(bad), "--url", "http://127.0.0.1:9", "--api-key", "k")
    assert result.exit_code == 2
    assert "invalid eval set (2 problems)" in result.output
    assert "line 2: not valid JSON" in result.output and "line 3: question: Field required" in result.output
    assert "Traceback" not in result.output


def test_missing_and_empty_files(tmp_path: Path) -> None:
    result = _eval("--questions", str(tmp_path / "nope.jsonl"))
    assert result.exit_code == 2 and "eval set not found" in result.output
    (tmp_path / "empty.jsonl").write_text("")
    result = _eval("--questions", str(tmp_path / "empty.jsonl"))
    assert result.exit_code == 2 and "no questions" in result.output


def test_bad_options(tmp_path: Path) -> None:
    q = tmp_path / "q.jsonl"
    q.write_text('{"question": "ok?"}\n')
    result = _eval("--questions", str(q), "--url", "http://127.0.0.1:9")
    assert result.exit_code == 2 and "--url needs --api-key" in result.output
    result = _eval("--questions", str(q), "--routes", "base,magic", "--url", "http://x", "--api-key", "k")
    assert result.exit_code == 2 and "unknown route(s) ['magic']" in result.output
    result = _eval("--questions", str(q), "--url", "http://x", "--api-key", "k", "--data-dir", str(tmp_path))
    assert result.exit_code == 2 and "not both" in result.output
    result = _eval(
        "--questions", str(q), "--url", "http://x", "--api-key", "k", "--corpus", str(tmp_path / "none")
    )
    assert result.exit_code == 4 and "corpus path not found" in result.output


def test_unreachable_server_is_one_line(tmp_path: Path) -> None:
    q = tmp_path / "q.jsonl"
    q.write_text('{"question": "ok?"}\n')
    result = _eval("--questions", str(q), "--url", "http://127.0.0.1:9", "--api-key", "k", "--no-progress")
    assert result.exit_code == 7 and "cannot reach http://127.0.0.1:9" in result.output
    assert "Traceback" not in result.output
