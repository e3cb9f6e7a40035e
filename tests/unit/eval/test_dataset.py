"""Eval-set validation: every problem at once, each with its line number."""

from __future__ import annotations

from pathlib import Path

import pytest

from adept.errors import ConfigError
from adept.evalset import load_eval_set, parse_eval_lines


def test_valid_set_with_defaults() -> None:
    text = '{"question": "Q1?", "answer": "A1", "reference_documents": ["d1"], "tags": ["t"]}\n\n{"question": "Q2?"}\n'
    s = parse_eval_lines(text)
    assert [i.question for i in s.items] == ["Q1?", "Q2?"]
    assert s.items[1].id == "3"  # the line number when no id is given
    assert s.has_answers and s.has_references and s.tags == ["t"]


def test_all_errors_are_reported_with_line_numbers() -> None:
    text = "\n".join(
        [
            '{"question": "ok?"}',
            "{not json",
            '["a list"]',
            '{"answer": "no question"}',
            '{"question": "Q", "reference_documents": "d1"}',
            '{"question": "Q", "colour": "red"}',
            '{"question": "   "}',
        ]
    )
    with pytest.raises(ConfigError) as exc:
        parse_eval_lines(text, "q.jsonl")
    errors = exc.value.errors
    assert errors[0].startswith("line 2: not valid JSON")
    assert errors[1] == "line 3: expected a JSON object, got list"
    assert any(e.startswith("line 4: question:") for e in errors)
    assert any(e.startswith("line 5: reference_documents:") for e in errors)
    assert any(e.startswith("line 6: colour: unknown field") for e in errors)
    assert any(e.startswith("line 7: question:") for e in errors)
    assert "q.jsonl: invalid eval set (6 problems)" in exc.value.message


def test_empty_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(ConfigError, match="no questions"):
        load_eval_set(tmp_path / "empty.jsonl")
    with pytest.raises(ConfigError, match="not found"):
        load_eval_set(tmp_path / "absent.jsonl")
    (tmp_path / "latin1.jsonl").write_bytes('{"question": "caf\xe9"}'.encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_eval_set(tmp_path / "latin1.jsonl")
