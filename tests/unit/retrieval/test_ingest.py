"""Parsing of every supported format, and every bad input reported by name with a reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from adept.config.retrieval import SUPPORTED_EXTENSIONS
from adept.documents import document_id_from_name, walk_files
from services.retrieval.ingest import (
    ParsedDocument,
    clean_text,
    parse_file,
    sections_from_markdown,
)
from services.retrieval.protocol import IngestError
from tests.assets.retrieval.make_docs import make_docx, make_pdf

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "retrieval"


def parse(name: str, data: bytes, max_bytes: int = 10_000_000) -> list[ParsedDocument | IngestError]:
    return list(parse_file(name, data, max_bytes=max_bytes, extensions=SUPPORTED_EXTENSIONS))


def only_doc(name: str, data: bytes) -> ParsedDocument:
    [doc] = parse(name, data)
    assert isinstance(doc, ParsedDocument), doc
    return doc


def only_error(name: str, data: bytes, **kw) -> str:
    [err] = parse(name, data, **kw)
    assert isinstance(err, IngestError), err
    assert err.source.split(":")[0] == name
    return err.reason


def test_markdown_titles_and_heading_paths() -> None:
    doc = only_doc("manuals/turbine.md", (ASSETS / "turbine.md").read_bytes())
    assert doc.id == "manuals/turbine"
    assert doc.title == "Wind Turbine WT-9 Service Manual"
    paths = {s.heading_path[-1]: s.heading_path for s in doc.sections}
    assert paths["Oil sampling"] == ("Wind Turbine WT-9 Service Manual", "Gearbox", "Oil sampling")
    assert paths["Blades"] == ("Wind Turbine WT-9 Service Manual", "Blades")


def test_html_drops_scripts_and_keeps_structure() -> None:
    doc = only_doc("grid.html", (ASSETS / "grid.html").read_bytes())
    assert doc.title == "Substation Switching Rules"
    text = " ".join(p for s in doc.sections for p in s.paragraphs)
    assert "ignored" not in text and "color" not in text
    earthing = next(s for s in doc.sections if s.heading_path[-1] == "Earthing")
    assert "Test for dead with an approved voltage detector." in earthing.paragraphs
    assert "before work starts" in earthing.paragraphs[0]


def test_text_paragraphs_and_title_from_name() -> None:
    doc = only_doc("oil_notes.txt", (ASSETS / "notes.txt").read_bytes())
    assert doc.title == "oil notes"
    assert len(doc.sections[0].paragraphs) == 3


def test_pdf_pages_become_sections() -> None:
    data = make_pdf([["Gearbox oil grade ISO VG 320."], ["Blade inspection yearly."]], title="WT-9 sheet")
    doc = only_doc("sheet.pdf", data)
    assert doc.title == "WT-9 sheet"
    assert [s.heading_path for s in doc.sections] == [("page 1",), ("page 2",)]
    assert doc.metadata["pages"] == 2


def test_docx_headings() -> None:
    doc = only_doc(
        "policy.docx",
        make_docx("Permit policy", {"Scope": ["Applies to all crews."], "Validity": ["One shift."]}),
    )
    assert doc.title == "Permit policy"
    assert [s.heading_path for s in doc.sections] == [("Scope",), ("Validity",)]


def test_jsonl_records_and_malformed_line_number() -> None:
    items = parse("broken.jsonl", (ASSETS / "broken.jsonl").read_bytes())
    docs = [i for i in items if isinstance(i, ParsedDocument)]
    errors = [i for i in items if isinstance(i, IngestError)]
    assert [d.id for d in docs] == ["ok-1", "ok-2"]
    assert len(errors) == 1 and errors[0].source == "broken.jsonl:2" and "line 2" in errors[0].reason


def test_jsonl_defaults_and_metadata() -> None:
    docs = parse("faq.jsonl", (ASSETS / "faq.jsonl").read_bytes())
    assert [d.id for d in docs] == ["faq-1", "faq-2", "faq:3"]
    assert docs[0].metadata["category"] == "metering" and docs[0].title == "Meter reading"


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("empty.txt", b"", "empty file"),
        ("blank.md", b"  \n\n \t\n", "empty file"),
        ("junk.txt", bytes(range(256)) * 8, "binary data"),
        ("latin1.txt", "café crème".encode("latin-1"), "not valid UTF-8 (byte 0xe9 at offset 3)"),
        ("image.png", b"\x89PNG...", "unsupported file type '.png'"),
        ("broken.pdf", b"%PDF-1.4 garbage", "not a readable PDF"),
        ("broken.docx", b"PK not a zip", "not a readable .docx"),
        ("empty.jsonl", b"\n\n", "empty file"),
        ("nolist.jsonl", b"[1, 2]\n", "line 1: expected a JSON object"),
        ("noext", b"hello", "unsupported file type"),
    ],
)
def test_bad_files_have_clear_reasons(name: str, data: bytes, reason: str) -> None:
    assert reason in only_error(name, data)


def test_too_large_is_refused_before_parsing() -> None:
    assert "too large: 2048 bytes (limit 1024)" in only_error("big.txt", b"a" * 2048, max_bytes=1024)


def test_jsonl_record_validation_errors() -> None:
    items = parse(
        "r.jsonl", b'{"text": ""}\n{"title": "x"}\n{"id": "a\\"b", "text": "t"}\n{"text": "t", "extra": 1}\n'
    )
    reasons = [i.reason for i in items if isinstance(i, IngestError)]
    assert len(reasons) == 4
    assert reasons[0].startswith("line 1: empty text")
    assert "line 2" in reasons[1] and "text" in reasons[1]
    assert "invalid document id" in reasons[2]
    assert "extra" in reasons[3]


def test_clean_text_normalizes() -> None:
    assert clean_text("a\r\nb\t\t c\x07\n\n\n\nd\u00a0e") == "a\nb c\n\nd e"


def test_markdown_heading_levels_pop() -> None:
    _, sections = sections_from_markdown("# A\n\nx\n\n### C\n\ny\n\n## B\n\nz")
    assert [s.heading_path for s in sections] == [("A",), ("A", "C"), ("A", "B")]


def test_document_ids_are_safe_and_stable() -> None:
    assert document_id_from_name("safety-manual.md") == "safety-manual"
    assert document_id_from_name("guides/setup.md") == "guides/setup"
    assert document_id_from_name('we"ird\\name.txt') == "we_ird/name"


def test_walk_files_is_relative_and_skips_hidden(tmp_path: Path) -> None:
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "a.md").write_text("# A")
    (tmp_path / "docs" / "sub" / "b.txt").write_text("b")
    (tmp_path / "docs" / ".git").mkdir()
    (tmp_path / "docs" / ".git" / "x.txt").write_text("x")
    names = [n for n, _ in walk_files([tmp_path / "docs", tmp_path / "docs" / "a.md"])]
    assert names == ["a.md", "sub/b.txt", "a.md"]
