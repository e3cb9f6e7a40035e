"""``/v1/kb`` routes (FastAPI TestClient, real KnowledgeBase) and ``adept kb`` against a live server."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from adept.config.retrieval import RetrievalConfig
from adept.config.tenant import TenantSpec
from adept.errors import AdeptError, AuthenticationError
from adept.tenancy import SQLiteTenantStore
from services.retrieval.api_router import build_kb_router
from services.retrieval.highlights import LEXICAL_WEIGHT
from services.retrieval.knowledge_base import AsyncKnowledgeBase
from tests.integration.retrieval.conftest import ASSETS

pytestmark = pytest.mark.integration
LIMITS = RetrievalConfig(max_file_bytes=100_000, max_request_bytes=300_000)


@pytest.fixture(scope="module")
def server(kb, tmp_path_factory):
    store = SQLiteTenantStore(tmp_path_factory.mktemp("tenants") / "t.sqlite")
    _, key_a = store.create(TenantSpec(name="http-a"))
    _, key_b = store.create(TenantSpec(name="http-b"))

    def get_tenant(request: Request):
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            raise AuthenticationError("missing bearer token")
        return store.authenticate(auth.removeprefix("Bearer "))

    app = FastAPI()
    app.add_exception_handler(AdeptError, lambda _r, e: JSONResponse(e.to_openai(), status_code=e.status))
    async_kb = AsyncKnowledgeBase(kb)
    app.include_router(build_kb_router(get_tenant, lambda: async_kb, config=LIMITS))
    return app, key_a, key_b


def client(app, key: str) -> TestClient:
    return TestClient(app, headers={"Authorization": f"Bearer {key}"})


def test_upload_list_search_delete(server) -> None:
    app, key_a, key_b = server
    a = client(app, key_a)
    files = [
        ("files", (p.name, p.read_bytes()))
        for p in sorted(ASSETS.glob("*"))
        if p.suffix in {".md", ".html", ".txt"}
    ]
    files.append(("files", ("broken.jsonl", (ASSETS / "broken.jsonl").read_bytes())))
    r = a.post("/v1/kb/documents", files=files)
    assert r.status_code == 200, r.text
    body = r.json()
    assert {d["id"] for d in body["documents"]} == {"turbine", "grid", "notes", "ok-1", "ok-2"}
    assert set(body["documents"][0]) >= {"id", "title", "chunks"}
    assert [e["source"] for e in body["errors"]] == ["broken.jsonl:2"]
    r = a.post(
        "/v1/kb/documents",
        json={"records": [{"id": "rec", "title": "R", "text": "Crane load limit is 12 t."}]},
    )
    assert r.status_code == 200 and r.json()["documents"][0]["chunks"] == 1
    listing = a.get("/v1/kb/documents").json()["documents"]
    assert {"turbine", "rec"} <= {d["id"] for d in listing}
    r = a.post("/v1/kb/search", json={"query": "crane load limit", "top_k": 2})
    hit = r.json()["results"][0]
    assert hit["document_id"] == "rec" and set(hit) >= {"document_id", "chunk_id", "title", "text", "score"}
    r = a.post("/v1/kb/search", json={"query": "crane load limit", "top_k": 1, "highlights": 1})
    # Its one sentence holds every query word: a cosine near 0.85 plus the whole lexical weight.
    expected = pytest.approx(0.85 + LEXICAL_WEIGHT, abs=0.2)
    assert r.json()["results"][0]["highlights"] == [
        {"text": "Crane load limit is 12 t.", "start": 0, "end": 25, "score": expected}
    ]
    assert a.delete("/v1/kb/documents/rec").json() == {"id": "rec", "deleted": True, "chunks": 1}
    assert a.delete("/v1/kb/documents/rec").status_code == 404
    # Tenant B: sees nothing of A's, cannot delete A's documents.
    b = client(app, key_b)
    assert b.get("/v1/kb/documents").json()["documents"] == []
    assert b.post("/v1/kb/search", json={"query": "gearbox oil"}).json()["results"] == []
    assert b.delete("/v1/kb/documents/turbine").status_code == 404
    assert "turbine" in {d["id"] for d in a.get("/v1/kb/documents").json()["documents"]}


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "message"),
    [
        ("post", "/v1/kb/search", {"json": {"query": ""}}, 400, "query"),
        ("post", "/v1/kb/search", {"json": {"query": "x", "top_k": 0}}, 400, "top_k"),
        ("post", "/v1/kb/search", {"json": {"query": "x", "top_k": 101}}, 400, "top_k"),
        ("post", "/v1/kb/search", {"json": {"top_k": 3}}, 400, "query"),
        ("post", "/v1/kb/search", {"json": {"query": "x", "highlights": 17}}, 400, "highlights"),
        ("post", "/v1/kb/search", {"json": {"query": "x", "highlights": "all"}}, 400, "highlights"),
        (
            "post",
            "/v1/kb/search",
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            400,
            "JSON",
        ),
        (
            "post",
            "/v1/kb/documents",
            {"files": [("files", ("empty.txt", b""))]},
            400,
            "empty.txt: empty file",
        ),
        ("post", "/v1/kb/documents", {"files": [("files", ("junk.txt", bytes(range(256))))]}, 400, "binary"),
        ("post", "/v1/kb/documents", {"files": [("files", ("l.txt", b"\xe9t\xe9"))]}, 400, "UTF-8"),
        ("post", "/v1/kb/documents", {"files": [("files", ("r.jsonl", b"{x\n"))]}, 400, "line 1"),
        ("post", "/v1/kb/documents", {"files": [("files", ("big.txt", b"a" * 150_000))]}, 413, "big.txt"),
        ("post", "/v1/kb/documents", {"files": [("files", ("huge.txt", b"a" * 400_000))]}, 413, "limit"),
        ("post", "/v1/kb/documents", {"json": {"records": []}}, 400, "records"),
        (
            "post",
            "/v1/kb/documents",
            {"content": b"text", "headers": {"content-type": "text/plain"}},
            415,
            "multipart",
        ),
        ("delete", "/v1/kb/documents/no-such-doc", {}, 404, "not found"),
    ],
)
def test_bad_requests_get_clear_4xx(server, method, path, kwargs, status, message) -> None:
    app, key_a, _ = server
    r = getattr(client(app, key_a), method)(path, **kwargs)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert message in err["message"] and err["type"] == "invalid_request_error"


def test_auth_required(server) -> None:
    app, _, _ = server
    assert TestClient(app).get("/v1/kb/documents").status_code == 401
    assert client(app, "adept-wrong").post("/v1/kb/search", json={"query": "x"}).status_code == 401


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_against_a_live_server(server, tmp_path: Path) -> None:
    import uvicorn

    from tools.cli import app as cli

    app, _, key_b = server
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.05)
    try:
        docs = tmp_path / "docs"
        (docs / "guides").mkdir(parents=True)
        (docs / "guides" / "crane.md").write_text("# Crane\n\nThe crane load limit is 12 t.\n")
        (docs / "bad.txt").write_bytes(b"\xff\xfe\x00junk")
        env = {"ADEPT_URL": f"http://127.0.0.1:{port}", "ADEPT_API_KEY": key_b}
        run = CliRunner().invoke
        r = run(cli, ["kb", "ingest", str(docs)], env=env)
        assert r.exit_code == 0, r.output
        assert "1 documents (1 new" in r.output and "bad.txt" in r.output
        assert "unchanged" in run(cli, ["kb", "ingest", str(docs)], env=env).output
        r = run(cli, ["kb", "search", "crane limit", "--top-k", "1"], env=env)
        assert r.exit_code == 0 and "guides/crane#0" in r.output
        assert "guides/crane" in run(cli, ["kb", "list"], env=env).output
        assert run(cli, ["kb", "delete", "guides/crane"], env=env).exit_code == 0
        r = run(cli, ["kb", "delete", "guides/crane"], env=env)
        assert r.exit_code == 4 and "not found" in r.output
        assert run(cli, ["kb", "search", "", "--api-key", key_b, "--url", env["ADEPT_URL"]]).exit_code == 2
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
