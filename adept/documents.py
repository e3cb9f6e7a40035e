"""Documents as the whole platform names them: ids, the JSON record shape, files found under a path.

The knowledge base (``services.retrieval``), the CLI and the operator agree on these; they live
in the kernel so that each of them can use them without importing another.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Ids go into Milvus filter expressions inside double quotes: no quotes or backslashes, ever.
DOCUMENT_ID_RE = re.compile(r"^[\w.:/@+=,() -]{1,200}$")
_ID_BAD_CHARS_RE = re.compile(r"[^\w.:/@+=,() -]")


def check_document_id(doc_id: str) -> str:
    """Return ``doc_id`` if it is usable as a document id, else raise ``ValueError`` saying why."""
    if not isinstance(doc_id, str) or not DOCUMENT_ID_RE.fullmatch(doc_id) or doc_id.strip() != doc_id:
        raise ValueError(
            f"invalid document id {doc_id!r}: use 1-200 letters, digits, spaces or . _ : / @ + = , ( ) -, "
            "no leading or trailing space"
        )
    return doc_id


class IngestRecord(BaseModel):
    """One JSON record to ingest (also the shape of a `.jsonl` line)."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, description="Document id; default: a hash of the text.")
    title: str | None = Field(None, max_length=1000, description="Document title; default: the id.")
    text: str = Field(description="Document text (plain or Markdown).")
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="Source metadata returned with each hit."
    )

    @field_validator("id")
    @classmethod
    def _id(cls, v: str | None) -> str | None:
        return None if v is None else check_document_id(v)


def document_id_from_name(name: str) -> str:
    """A stable document id from a file name or relative path, without the extension.

    ``guides/setup.md`` -> ``guides/setup``; ``safety-manual.md`` -> ``safety-manual``.
    """
    p = Path(name.replace("\\", "/"))
    stem = p.with_suffix("").as_posix() if p.suffix else p.as_posix()
    doc_id = _ID_BAD_CHARS_RE.sub("_", stem).strip(" /")[-200:].strip() or "document"
    return doc_id if DOCUMENT_ID_RE.fullmatch(doc_id) else hashlib.sha256(name.encode()).hexdigest()[:32]


def walk_files(paths: Iterable[str | Path]) -> Iterator[tuple[str, Path]]:
    """``(name, path)`` for each file under ``paths`` (directories recursively, hidden files skipped).

    ``name`` is the path relative to a directory argument (``guide/a.md`` for ``docs/guide/a.md``
    when ``docs/`` is given), so the same folder gives the same document ids wherever it lives.
    """
    for raw in paths:
        root = Path(raw)
        if root.is_dir():
            for p in sorted(root.rglob("*")):
                rel = p.relative_to(root)
                if p.is_file() and not any(part.startswith(".") for part in rel.parts):
                    yield rel.as_posix(), p
        else:
            yield root.name, root


def upload_batches(
    files: list[tuple[str, Path]], *, max_bytes: int = 8 * 1024 * 1024, max_files: int = 32
) -> list[list[tuple[str, Path]]]:
    """Split files into upload requests of at most ``max_bytes`` (or ``max_files``) each.

    Progress then moves per request, and a 413 names one big file rather than a whole folder.
    """
    batches: list[list[tuple[str, Path]]] = []
    size = 0
    for name, path in files:
        n = path.stat().st_size
        if not batches or size + n > max_bytes or len(batches[-1]) >= max_files:
            batches.append([])
            size = 0
        batches[-1].append((name, path))
        size += n
    return batches
