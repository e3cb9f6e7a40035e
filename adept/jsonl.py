"""One reader for JSON Lines files: eval sets, training data, knowledge-base records, uploaded files.

``read_bytes`` fetches a file (local path, ``file://`` or any fsspec URI such as ``s3://``)
under an optional size limit. ``iter_objects`` yields ``(line_number, object)`` for every line
that is a JSON object, numbering lines from 1 as an editor does. Lines are split on ``\\n``
only (a raw U+2028 inside a JSON string is not a line break) and decoded one by one, so a bad
byte spoils its own line, not the file. Each bad line is a ``LineProblem`` (``line N: reason``):
not UTF-8, not JSON, not an object, or blank where blanks are not allowed. A caller either
stops at the first one (``JsonlError``) or passes a list and collects them all, as a file
upload's validation does to report every bad line at once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from adept.errors import InvalidRequest, NotFound, PayloadTooLarge, Unavailable

MAX_SHOWN_PROBLEMS = 5
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class LineProblem:
    """Why one line is unusable."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"

    def at(self, source: str) -> str:
        """``file:line: reason``, the form compilers and editors jump to."""
        return f"{source}:{self.line}: {self.reason}"


class JsonlError(InvalidRequest):
    """A JSONL source has unusable lines; ``problems`` lists each of them."""

    code = "invalid_jsonl"

    def __init__(self, source: str, problems: list[LineProblem]) -> None:
        self.source = source
        self.problems = list(problems)
        shown = "; ".join(str(p) for p in self.problems[:MAX_SHOWN_PROBLEMS])
        more = len(self.problems) - MAX_SHOWN_PROBLEMS
        super().__init__(f"{source}: {shown}" + (f" (and {more} more)" if more > 0 else ""))


def read_bytes(location: str | Path, *, max_bytes: int | None = None) -> bytes:
    """The bytes of a local file or an fsspec URI, refusing more than ``max_bytes``.

    Raises:
        NotFound: there is no such file.
        PayloadTooLarge: the file is larger than ``max_bytes``.
        Unavailable: the storage behind the URI could not be read (network, permissions).
    """
    text = str(location)
    if "://" in text and not text.startswith("file://"):
        return _read_uri(text, max_bytes)
    path = Path(text.removeprefix("file://")).expanduser()
    if not path.is_file():
        raise NotFound(f"{path}: no such file")
    _check_size(text, path.stat().st_size, max_bytes)
    return path.read_bytes()


def _read_uri(uri: str, max_bytes: int | None) -> bytes:
    import fsspec

    try:
        with fsspec.open(uri, "rb") as fh:
            size = getattr(fh, "size", None)
            if isinstance(size, int):
                _check_size(uri, size, max_bytes)
            data = fh.read() if max_bytes is None else fh.read(max_bytes + 1)
    except FileNotFoundError:
        raise NotFound(f"{uri}: no such file") from None
    except OSError as e:  # fsspec backends report network and permission failures as OSError
        raise Unavailable(f"{uri}: cannot be read ({e})") from None
    _check_size(uri, len(data), max_bytes)
    return data


def _check_size(source: str, size: int, max_bytes: int | None) -> None:
    if max_bytes is not None and size > max_bytes:
        raise PayloadTooLarge(f"{source}: more than {max_bytes} bytes (the limit)")


def iter_objects(
    data: bytes,
    *,
    source: str = "<jsonl>",
    problems: list[LineProblem] | None = None,
    blank_lines: Literal["skip", "error"] = "skip",
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line_number, object)`` for each line of ``data`` that holds a JSON object.

    Args:
        data: The file's bytes (UTF-8; a leading byte-order mark is allowed).
        source: Names the file in ``JsonlError`` messages.
        problems: Collect every bad line here and go on; without it, the first bad line raises.
        blank_lines: ``skip`` whitespace-only lines, or report each as a problem.

    Raises:
        JsonlError: a bad line, when ``problems`` is not given.
    """
    lines = data.removeprefix(_BOM).split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # the newline that ends the last line starts no new one
    for number, raw in enumerate(lines, start=1):
        obj, reason = _parse(raw.removesuffix(b"\r"), blank_lines)
        if reason is not None:
            problem = LineProblem(number, reason)
            if problems is None:
                raise JsonlError(source, [problem])
            problems.append(problem)
        elif obj is not None:
            yield number, obj


def _parse(raw: bytes, blank_lines: str) -> tuple[dict[str, Any] | None, str | None]:
    """(object, None) for a good line, (None, None) for a skipped blank one, (None, reason) otherwise."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, f"not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1})"
    if not text.strip():
        return None, "blank line" if blank_lines == "error" else None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        return None, f"not valid JSON ({e.msg} at column {e.colno})"
    except RecursionError:
        return None, "not valid JSON (nested too deeply)"
    if not isinstance(obj, dict):
        return None, f"expected a JSON object, got {type(obj).__name__}"
    return obj, None
