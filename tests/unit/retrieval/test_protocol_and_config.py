"""Config validation, wire models, filter expressions and the multipart reader (no Milvus, no model)."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from adept.config.retrieval import IndexConfig, RetrievalConfig
from adept.errors import InvalidRequest, PayloadTooLarge
from services.retrieval.knowledge_base import _filter_expr
from services.retrieval.protocol import IngestRecord, SearchRequest
from services.retrieval.store import _scope, is_lite_uri
from services.retrieval.upload import header_params, read_capped, split_multipart


def test_config_defaults_and_errors() -> None:
    cfg = RetrievalConfig()
    assert cfg.max_file_bytes == 50 * 1024 * 1024 and cfg.max_top_k == 100
    with pytest.raises(ValidationError) as e:
        RetrievalConfig(
            chunk_size_tokens=32, chunk_overlap_tokens=32, max_top_k=101, supported_extensions=[".exe"]
        )
    text = str(e.value)
    assert "max_top_k" in text and "supported_extensions" in text


def test_overlap_must_be_below_size() -> None:
    with pytest.raises(ValidationError, match="chunk_overlap_tokens"):
        RetrievalConfig(chunk_size_tokens=64, chunk_overlap_tokens=64)


def test_index_per_backend() -> None:
    assert IndexConfig().resolve(lite=True) == IndexConfig().resolve(lite=False)
    kind, build, search = IndexConfig().resolve(lite=False)
    assert kind == "HNSW" and build["M"] == 16 and search["ef"] == 256
    assert IndexConfig(type="HNSW", search_params={"ef": 64}).resolve(lite=True)[2] == {"ef": 64}
    assert IndexConfig(type="FLAT").resolve(lite=True) == ("FLAT", {}, {})


def test_uri_kind() -> None:
    assert is_lite_uri("/data/milvus.db") and is_lite_uri("milvus.db")
    assert not is_lite_uri("http://milvus:19530") and not is_lite_uri("https://x.zillizcloud.com")


def test_scope_rejects_bad_tenant_names() -> None:
    assert _scope("acme") == 'tenant == "acme"'
    assert _scope("acme", "x == 1") == 'tenant == "acme" and (x == 1)'
    for bad in ['a" or tenant != "', "", "UPPER", "admin"]:
        with pytest.raises(InvalidRequest):
            _scope(bad)


def test_filter_expressions_are_literals_only() -> None:
    assert _filter_expr(None) == ""
    assert (
        _filter_expr({"category": "billing", "year": 2024})
        == 'metadata["category"] == "billing" and metadata["year"] == 2024'
    )
    assert _filter_expr({"document_id": ["a", "b"]}) == 'document_id in ["a", "b"]'
    assert _filter_expr({"ok": True}) == 'metadata["ok"] == true'
    for bad in [{'x"]': 1}, {"k": 'a" or 1 == 1 or "'}, {"k": {"nested": 1}}, {"k": []}]:
        with pytest.raises(InvalidRequest):
            _filter_expr(bad)


def test_wire_models() -> None:
    with pytest.raises(ValidationError):
        IngestRecord(id='bad"id', text="x")
    with pytest.raises(ValidationError):
        SearchRequest(query="q", filter={"bad key": 1})
    with pytest.raises(ValidationError):
        SearchRequest(query="q", unknown=1)


def test_multipart_split() -> None:
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="files"; filename="guide/a.md"\r\n'
        b"Content-Type: text/markdown\r\n\r\n# A\r\n\r\ntext\r\n"
        b'--XyZ\r\nContent-Disposition: form-data; name="note"\r\n\r\nplain field\r\n'
        b"--XyZ\r\nContent-Disposition: form-data; name=\"files\"; filename*=UTF-8''caf%C3%A9.txt\r\n\r\n\x00\x01bin\r\n"
        b"--XyZ--\r\n"
    )
    parts = split_multipart(body, "multipart/form-data; boundary=XyZ")
    assert parts == [
        ("files", "guide/a.md", b"# A\r\n\r\ntext"),
        ("note", None, b"plain field"),
        ("files", "café.txt", b"\x00\x01bin"),
    ]
    with pytest.raises(InvalidRequest):
        split_multipart(body, "multipart/form-data")
    assert header_params('form-data; name="a\\"b"') == {"name": 'a"b'}


def test_read_capped_stops_early() -> None:
    async def stream():
        for _ in range(100):
            yield b"x" * 1000

    assert len(asyncio.run(read_capped(stream(), None, 200_000))) == 100_000
    with pytest.raises(PayloadTooLarge):
        asyncio.run(read_capped(stream(), None, 5_000))
    with pytest.raises(PayloadTooLarge, match="200000000 bytes"):
        asyncio.run(read_capped(stream(), "200000000", 5_000))
