"""Every entry point reaches the same kernel operations on a running platform: the CLI (through the
admin API, found by the run file), the admin knowledge-base routes the operator syncs through, and
the purge the operator's finalizer calls. One embedded platform for the module (see conftest).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from adept.admin_client import AdminClient, find_running
from tests.integration.gateway.conftest import ADMIN_KEY

pytestmark = pytest.mark.integration


def adept(env, *args: str) -> subprocess.CompletedProcess:
    """The real CLI in its own process, pointed at the running platform's data dir only."""
    child = {k: v for k, v in os.environ.items() if not k.startswith("ADEPT_")}
    child.update(ADEPT_ADMIN_KEY=ADMIN_KEY, COLUMNS="250")
    cmd = [sys.executable, "-c", "from tools.cli import main; main()", *args]
    cmd += ["--data-dir", str(env.config.platform.data_dir)]
    return subprocess.run(cmd, capture_output=True, text=True, env=child, timeout=300)


def tenant_client(env, key: str) -> httpx.Client:
    return httpx.Client(base_url=env.url, headers={"Authorization": f"Bearer {key}"}, timeout=120)


def test_the_running_platform_is_found_through_its_run_file(env):
    running = find_running(env.config.platform.data_dir)
    assert running is not None and running.url == env.url and running.pid == os.getpid()


def test_cli_delete_then_recreate_through_the_running_platform_inherits_nothing(env):
    created = adept(env, "tenant", "create", "cli-co")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    with tenant_client(env, key) as c:
        r = c.post("/v1/kb/documents", json={"records": [{"id": "memo", "text": "The vault code is 4411."}]})
        assert r.status_code == 200, r.text
        assert [
            h["document_id"] for h in c.post("/v1/kb/search", json={"query": "vault code"}).json()["results"]
        ]
    published = adept(env, "adapter", "publish", "cli-co", "style", str(env.adapters_dir / "support"))
    assert published.returncode == 0 and "cli-co/style@v1" in published.stdout, published.stderr

    # The platform holds the Milvus Lite file: only its admin API can delete the documents.
    deleted = adept(env, "tenant", "delete", "cli-co", "--yes")
    assert deleted.returncode == 0, deleted.stderr
    assert "1 adapter" in deleted.stdout
    again = adept(env, "tenant", "create", "cli-co").stdout.strip()
    with tenant_client(env, again) as c:
        assert c.get("/v1/kb/documents").json()["documents"] == []
        assert c.post("/v1/kb/search", json={"query": "vault code"}).json()["results"] == []
        assert [m["id"] for m in c.get("/v1/models").json()["data"]] == [env.base_model]
    assert adept(env, "adapter", "list", "cli-co", "--json").stdout.strip() == "[]"
    assert adept(env, "tenant", "delete", "cli-co", "--yes").returncode == 0


def test_cli_errors_through_the_admin_api_are_one_line(env):
    r = adept(env, "tenant", "delete", "nobody-here", "--yes")
    assert r.returncode == 4 and r.stderr.strip().startswith("error:") and "not found" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_admin_kb_routes_act_for_the_named_tenant_only(env):
    with AdminClient(env.url, ADMIN_KEY) as admin:
        reply = admin.ingest_records("acme", [{"id": "ops/a", "text": "Night shift starts at 22:00."}])
        assert [d["id"] for d in reply["documents"]] == ["ops/a"]
        assert "ops/a" in [d["id"] for d in admin.list_documents("acme")]
        assert "ops/a" not in [d["id"] for d in admin.list_documents("globex")]
        admin.delete_document("acme", "ops/a")
        assert "ops/a" not in [d["id"] for d in admin.list_documents("acme")]
    r = env.admin.get("/admin/kb/nobody-here/documents")
    assert r.status_code == 404 and r.json()["error"]["message"]
    with tenant_client(env, env.keys["acme"]) as c:  # a tenant key is not an admin key, even for itself
        assert c.get("/admin/kb/acme/documents").status_code == 403
    r = env.admin.post(
        "/admin/kb/acme/documents",
        params={"chunk_size_tokens": 64, "chunk_overlap_tokens": 64},
        json={"records": [{"id": "x", "text": "y"}]},
    )
    assert r.status_code == 400 and "chunk_overlap_tokens" in r.json()["error"]["message"]


def test_kb_sync_reaches_the_knowledge_base_through_the_admin_api(env, tmp_path: Path):
    """The operator's KnowledgeBase sync, against a real gateway and retrieval deployment."""
    from operators import kb_sync
    from operators.models import parse_spec

    shared = tmp_path / "shared"
    (shared / "manuals" / "sub").mkdir(parents=True)
    (shared / "manuals" / "pumps.md").write_text("# Pumps\nPrime the P-7 pump before start-up.\n")
    (shared / "manuals" / "sub" / "valves.txt").write_text("Valve V-2 closes clockwise.\n")
    (shared / "manuals" / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    spec = parse_spec(
        "KnowledgeBase",
        {
            "tenant": "acme",
            "sources": [{"path": "manuals"}, {"documents": [{"id": "note", "text": "Inline note."}]}],
            "retrieval": {"chunk_size_tokens": 64, "chunk_overlap_tokens": 8},
        },
    )
    with AdminClient(env.url, ADMIN_KEY) as admin:
        result = kb_sync.sync(admin, "acme", "plant", spec, shared_dir=str(shared))
        assert result.documents == 3 and result.chunks >= 3
        assert [e["source"] for e in result.errors] == ["broken.pdf"]
        owned = sorted(d["id"] for d in admin.list_documents("acme") if d["id"].startswith("plant/"))
        assert owned == ["plant/note", "plant/pumps", "plant/sub/valves"]
        (shared / "manuals" / "sub" / "valves.txt").unlink()
        again = kb_sync.sync(admin, "acme", "plant", spec, shared_dir=str(shared))
        assert (again.documents, again.removed) == (2, 1)
        assert kb_sync.remove(admin, "acme", "plant") == 2
        assert not [d for d in admin.list_documents("acme") if d["id"].startswith("plant/")]
        assert kb_sync.remove(admin, "nobody-here", "plant") == 0  # a tenant already gone


def test_purge_removes_what_a_tenant_owns_but_keeps_it(env):
    with AdminClient(env.url, ADMIN_KEY) as admin:
        key = admin.create_tenant({"name": "purged"})["api_key"]
        admin.ingest_records("purged", [{"id": "d", "text": "to be purged"}])
        admin.publish_adapter("purged", "x", env.adapters_dir / "support")
        assert admin.purge_tenant("purged") == {"name": "purged", "deleted": True, "adapters_deleted": 1}
        assert admin.list_documents("purged") == [] and admin.list_adapters("purged") == []
        with tenant_client(env, key) as c:  # still a tenant: its key works, it just owns nothing
            assert c.get("/v1/kb/documents").status_code == 200
        admin.delete_tenant("purged")
