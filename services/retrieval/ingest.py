"""Turn uploaded files and records into clean, structured documents (title, sections, paragraphs).

Each parser returns ``ParsedDocument``s or raises ``ParseError`` with a reason a user can act on;
``parse_file`` never lets one bad file stop a batch.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from adept.documents import IngestRecord, document_id_from_name
from adept.jsonl import LineProblem, iter_objects
from services.retrieval.protocol import IngestError

_HEADING_RE = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SPACES_RE = re.compile(r"[ \t\u00a0\u2000-\u200b\u3000]+")


class ParseError(ValueError):
    """A file or record that cannot be ingested; ``str(err)`` is the reason shown to the user."""


@dataclass
class Section:
    """Paragraphs under one heading path (``()`` for text before the first heading)."""

    heading_path: tuple[str, ...]
    paragraphs: list[str] = field(default_factory=list)


@dataclass
class ParsedDocument:
    id: str
    title: str
    sections: list[Section]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "\n\n".join(p for s in self.sections for p in (*s.heading_path[-1:], *s.paragraphs))

    @property
    def content_hash(self) -> str:
        """Hash of everything that ends up stored, so a changed title or metadata is an update too."""
        payload = json.dumps(
            [self.title, [[list(s.heading_path), s.paragraphs] for s in self.sections], self.metadata],
            sort_keys=True,
            ensure_ascii=False,
            default=str,
        )
        return hashlib.sha256(payload.encode()).hexdigest()


def clean_text(text: str) -> str:
    """Normalize Unicode, line ends and spaces; drop control characters; keep paragraph breaks."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n").replace("\ufeff", "")
    text = _CONTROL_RE.sub("", text)
    lines = [_SPACES_RE.sub(" ", line).strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def sections_from_markdown(text: str) -> tuple[str | None, list[Section]]:
    """Split Markdown-like text at ``#`` headings; returns (first H1 or None, sections)."""
    title: str | None = None
    path: list[tuple[int, str]] = []
    sections = [Section(())]
    para: list[str] = []

    def flush() -> None:
        if para:
            sections[-1].paragraphs.append(" ".join(para) if not _is_block(para) else "\n".join(para))
            para.clear()

    for line in clean_text(text).split("\n"):
        m = _HEADING_RE.match(line)
        if m:
            flush()
            level, heading = len(m.group(1)), m.group(2).strip()
            if level == 1 and title is None:
                title = heading
            path = [(lv, h) for lv, h in path if lv < level] + [(level, heading)]
            sections.append(Section(tuple(h for _, h in path)))
        elif not line:
            flush()
        else:
            para.append(line)
    flush()
    return title, [s for s in sections if s.paragraphs]


def _is_block(lines: list[str]) -> bool:
    # Lists, tables and code keep their line breaks; prose lines are re-joined.
    return any(ln[:1] in "-*|>`" or ln[:2].rstrip(".").isdigit() for ln in lines)


def check_not_binary(data: bytes) -> None:
    """Refuse data whose first 8 KiB look binary (NUL or many control bytes): a mislabelled file."""
    sample = data[:8192]
    if b"\x00" in sample or sum(b < 9 or 13 < b < 32 for b in sample) > len(sample) * 0.05:
        raise ParseError("binary data, not text (is the file extension right?)")


def decode_text(data: bytes, name: str) -> str:
    """Decode UTF-8 text, rejecting binary data and invalid UTF-8 with the offset of the problem."""
    check_not_binary(data)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ParseError(
            f"not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}); re-save the file as UTF-8"
        ) from None


def _parse_text(data: bytes, name: str) -> tuple[str | None, list[Section], dict]:
    text = decode_text(data, name)
    if name.lower().endswith((".md", ".markdown")):
        title, sections = sections_from_markdown(text)
        return title, sections, {}
    paragraphs = [p.replace("\n", " ") for p in clean_text(text).split("\n\n") if p.strip()]
    return None, [Section((), paragraphs)] if paragraphs else [], {}


def _parse_html(data: bytes, name: str) -> tuple[str | None, list[Section], dict]:
    from bs4 import BeautifulSoup

    text = decode_text(data, name)
    soup = BeautifulSoup(text, "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "svg", "head"]):
        if tag.name == "head" and soup.title:
            continue
        tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else None
    if soup.head:
        soup.head.decompose()
    # Rewrite the DOM as Markdown-ish text so one section parser serves both formats.
    for tag in soup.find_all(["h1", "h2", "h3", "h4", "h5", "h6"]):
        tag.replace_with(f"\n\n{'#' * int(tag.name[1])} {tag.get_text(' ', strip=True)}\n\n")
    for tag in soup.find_all("br"):
        tag.replace_with("\n")
    for tag in soup.find_all(["p", "div", "li", "pre", "blockquote", "tr", "dt", "dd", "section", "article"]):
        tag.insert_before("\n\n")
        tag.insert_after("\n\n")
    h1, sections = sections_from_markdown(soup.get_text())
    return title or h1, sections, {}


def _parse_pdf(data: bytes, name: str) -> tuple[str | None, list[Section], dict]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise ParseError("encrypted PDF; remove the password and upload again")
        sections = []
        for number, page in enumerate(reader.pages, start=1):
            paragraphs = [
                p.replace("\n", " ") for p in clean_text(page.extract_text() or "").split("\n\n") if p
            ]
            if paragraphs:
                sections.append(Section((f"page {number}",), paragraphs))
        title = (reader.metadata or {}).get("/Title") if reader.metadata else None
    except ParseError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as e:
        raise ParseError(f"not a readable PDF ({type(e).__name__}: {e})") from None
    return (str(title).strip() or None) if title else None, sections, {"pages": len(reader.pages)}


def _parse_docx(data: bytes, name: str) -> tuple[str | None, list[Section], dict]:
    import zipfile

    from docx import Document

    try:
        doc = Document(io.BytesIO(data))
    except (zipfile.BadZipFile, KeyError, ValueError) as e:
        raise ParseError(f"not a readable .docx file ({type(e).__name__}: {e})") from None
    lines: list[str] = []
    title = (doc.core_properties.title or "").strip() or None
    for para in doc.paragraphs:
        style = (para.style.name if para.style is not None else "") or ""
        text = para.text.strip()
        if not text:
            continue
        if style == "Title":
            title = title or text
        elif style.startswith("Heading") and style[-1:].isdigit():
            lines.append(f"\n{'#' * min(int(style.split()[-1]), 6)} {text}\n")
        else:
            lines.append(text + "\n")
    for table in doc.tables:
        for row in table.rows:
            lines.append(" | ".join(c.text.strip() for c in row.cells) + "\n")
    h1, sections = sections_from_markdown("\n".join(lines))
    return title or h1, sections, {}


PARSERS: dict[str, Callable[[bytes, str], tuple[str | None, list[Section], dict]]] = {
    ".txt": _parse_text,
    ".md": _parse_text,
    ".markdown": _parse_text,
    ".html": _parse_html,
    ".htm": _parse_html,
    ".pdf": _parse_pdf,
    ".docx": _parse_docx,
}


def record_to_document(record: IngestRecord, default_id: str) -> ParsedDocument:
    doc_id = record.id or default_id
    h1, sections = sections_from_markdown(record.text)
    if not sections:
        raise ParseError("empty text")
    return ParsedDocument(doc_id, (record.title or h1 or doc_id).strip(), sections, dict(record.metadata))


def _parse_jsonl(data: bytes, name: str, base_id: str) -> Iterator[ParsedDocument | IngestError]:
    """One document per record line; each bad line is an ``IngestError`` (``name:N``), in line order."""
    try:
        check_not_binary(data)
    except ParseError as e:
        yield IngestError(source=name, reason=str(e))
        return
    bad: list[LineProblem] = []
    reported = 0

    def line_errors() -> Iterator[IngestError]:
        nonlocal reported
        for p in bad[reported:]:
            yield IngestError(source=f"{name}:{p.line}", reason=str(p))
        reported = len(bad)

    records = 0
    for lineno, obj in iter_objects(data, source=name, problems=bad):
        yield from line_errors()  # the bad lines before this one
        records += 1
        where = f"{name}:{lineno}"
        try:
            doc = record_to_document(IngestRecord.model_validate(obj), f"{base_id}:{lineno}")
        except ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(map(str, x['loc'])) or 'record'}: {x['msg']}" for x in e.errors()
            )
            yield IngestError(source=where, reason=f"line {lineno}: invalid record ({problems})")
            continue
        except ParseError as e:
            yield IngestError(source=where, reason=f"line {lineno}: {e}")
            continue
        doc.metadata.setdefault("source", where)
        yield doc
    yield from line_errors()
    if not records and not bad:
        yield IngestError(source=name, reason="empty file: no records")


def parse_file(
    name: str, data: bytes, *, max_bytes: int, extensions: Iterable[str]
) -> Iterator[ParsedDocument | IngestError]:
    """Parse one file into documents; problems are yielded as ``IngestError`` instead of raised."""
    ext = Path(name).suffix.lower()
    allowed = set(extensions)
    if ext not in allowed:
        yield IngestError(
            source=name, reason=f"unsupported file type {ext or '(none)'!r}; supported: {sorted(allowed)}"
        )
        return
    if len(data) > max_bytes:
        yield IngestError(source=name, reason=f"too large: {len(data)} bytes (limit {max_bytes})")
        return
    if not data.strip():
        yield IngestError(source=name, reason="empty file")
        return
    doc_id = document_id_from_name(name)
    if ext == ".jsonl":
        yield from _parse_jsonl(data, name, doc_id)
        return
    try:
        title, sections, meta = PARSERS[ext](data, name)
    except ParseError as e:
        yield IngestError(source=name, reason=str(e))
        return
    if not sections:
        yield IngestError(source=name, reason="empty: no text found in the file")
        return
    title = (title or Path(name).stem.replace("_", " ").replace("-", " ")).strip()[:1000]
    yield ParsedDocument(doc_id, title, sections, {"source": name, **meta})
