"""The one JSONL reader: line numbers as an editor shows them, every bad line named with its reason."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import pytest

from adept.errors import NotFound, PayloadTooLarge
from adept.jsonl import JsonlError, LineProblem, iter_objects, read_bytes


def test_objects_come_with_editor_line_numbers() -> None:
    data = b'{"a": 1}\r\n\n   \n{"b": "x\xe2\x80\xa8y"}\n{"c": 3}'  # CRLF, blanks, raw U+2028, no final \n
    assert list(iter_objects(data)) == [(1, {"a": 1}), (4, {"b": "x\u2028y"}), (5, {"c": 3})]


def test_a_byte_order_mark_is_allowed() -> None:
    assert list(iter_objects(b'\xef\xbb\xbf{"a": 1}\n')) == [(1, {"a": 1})]


def test_every_bad_line_is_collected_and_the_good_ones_still_read() -> None:
    data = b"\n".join(
        [
            b'{"ok": 1}',
            b'{"q": "caf\xe9"}',  # Latin-1, not UTF-8: spoils only this line
            b"{not json",
            b"[1, 2]",
            b"",
            b'"text"',
            b"[" * 100_000 + b"]" * 100_000,
            b'{"ok": 2}',
        ]
    )
    problems: list[LineProblem] = []
    assert [n for n, _ in iter_objects(data, problems=problems)] == [1, 8]
    assert [str(p) for p in problems] == [
        "line 2: not UTF-8 text (byte 0xe9 at column 11)",
        "line 3: not valid JSON (Expecting property name enclosed in double quotes at column 2)",
        "line 4: expected a JSON object, got list",
        "line 6: expected a JSON object, got str",
        "line 7: not valid JSON (nested too deeply)",
    ]
    assert problems[2].at("train.jsonl") == "train.jsonl:4: expected a JSON object, got list"


def test_blank_lines_can_be_errors() -> None:
    problems: list[LineProblem] = []
    assert len(list(iter_objects(b'{"a": 1}\n \n{"b": 2}\n', problems=problems, blank_lines="error"))) == 2
    assert problems == [LineProblem(2, "blank line")]


def test_without_a_collector_the_first_bad_line_raises() -> None:
    reader = iter_objects(b'{"a": 1}\n{oops\n[]\n', source="upload.jsonl")
    assert next(reader) == (1, {"a": 1})
    with pytest.raises(JsonlError) as e:
        next(reader)
    assert e.value.status == 400 and e.value.code == "invalid_jsonl"
    assert e.value.problems == [LineProblem(2, e.value.problems[0].reason)]
    assert e.value.message.startswith("upload.jsonl: line 2: not valid JSON")


def test_an_error_lists_five_problems_and_counts_the_rest() -> None:
    err = JsonlError("big.jsonl", [LineProblem(n, "bad") for n in range(1, 9)])
    assert err.message == "big.jsonl: " + "; ".join(f"line {n}: bad" for n in range(1, 6)) + " (and 3 more)"


def test_read_bytes_from_a_path_a_file_uri_and_an_fsspec_uri(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"a": 1}\n')
    assert read_bytes(path) == read_bytes(f"file://{path}") == b'{"a": 1}\n'
    with fsspec.open("memory://adept-test/d.jsonl", "wb") as f:
        f.write(json.dumps({"b": 2}).encode())
    assert read_bytes("memory://adept-test/d.jsonl") == b'{"b": 2}'


def test_read_bytes_refuses_missing_and_oversized_files(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no such file"):
        read_bytes(tmp_path / "absent.jsonl")
    with pytest.raises(NotFound):
        read_bytes("memory://adept-test/absent.jsonl")
    path = tmp_path / "big.jsonl"
    path.write_bytes(b"x" * 100)
    assert read_bytes(path, max_bytes=100) == b"x" * 100
    with pytest.raises(PayloadTooLarge, match="more than 99 bytes"):
        read_bytes(path, max_bytes=99)
    with fsspec.open("memory://adept-test/big.jsonl", "wb") as f:
        f.write(b"y" * 100)
    with pytest.raises(PayloadTooLarge):
        read_bytes("memory://adept-test/big.jsonl", max_bytes=10)
