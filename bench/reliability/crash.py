"""The platform process SIGKILLed during an ingest and during adapter publishes, then restarted.

The kill takes the whole process group (gateway, engine, Milvus Lite server): what a node
loss or an OOM kill does. After the restart: the tenant store is intact (every key still
authenticates, SQLite ``integrity_check`` is ok), no document is half-visible (each live
document's chunk rows equal its record's count, no duplicate chunk ids, re-running the same
ingest converges to the same documents as an uninterrupted control run), and every visible
adapter version is complete and byte-identical to what was published.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench.reliability.report import Outcome
from bench.reliability.seed import documents_for

REPO = Path(__file__).resolve().parents[2]


class ServerProcess:
    """``bench.reliability.server`` in its own session, so a SIGKILL can take its whole group."""

    def __init__(self, data_dir: Path, model: Path, admin_key: str, log: Path) -> None:
        self.data_dir, self.model, self.admin_key, self.log = data_dir, model, admin_key, log
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self, timeout_s: float = 300) -> str:
        url_file = self.data_dir.parent / f"url-{secrets.token_hex(3)}"
        env = {**os.environ, "ADEPT_ADMIN_KEY": self.admin_key, "PYTHONPATH": str(REPO)}
        cmd = [sys.executable, "-m", "bench.reliability.server", "--data-dir", str(self.data_dir)]
        cmd += ["--model", str(self.model), "--url-file", str(url_file)]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=REPO, env=env, stdout=log, stderr=log, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        while not url_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"the platform process did not start; see {self.log}")
            time.sleep(0.1)
        self.url = url_file.read_text()
        return self.url

    def kill(self) -> None:
        """SIGKILL the whole process group (the platform and its Milvus Lite server)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=60)
        _wait_group_gone(self.proc.pid)
        self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        self.kill()


def _wait_group_gone(pgid: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def _admin(url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=300)


def _in_background(fn: Any) -> threading.Thread:
    def run() -> None:
        try:
            fn()
        except Exception:
            pass  # the server was killed under it: expected

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def kill_during_writes(
    model: Path, lora_src: Path, workdir: Path, *, seed: int = 0, docs: int = 60
) -> Outcome:
    """SIGKILL once mid-ingest and once mid-publish-loop; verify everything after each restart."""
    rng = random.Random(seed)
    out = Outcome("SIGKILL during ingest / adapter publish", faults=2)
    started = time.monotonic()
    admin_key = "adept-admin-" + secrets.token_urlsafe(24)
    data_dir = workdir / "data"
    workdir.mkdir(parents=True, exist_ok=True)
    server = ServerProcess(data_dir, model, admin_key, workdir / "server.log")
    try:
        url = server.start()
        keys: dict[str, str] = {}
        with _admin(url, admin_key) as admin:
            for name in ("victim", "control"):
                r = admin.post("/admin/tenants", json={"name": name, "quotas": {"requests_per_minute": 0}})
                r.raise_for_status()
                keys[name] = r.json()["api_key"]
            records = documents_for("victim", "zqcrash", docs)
            for rec in records:  # longer documents: more chunks, a longer window to die in
                rec["text"] = (rec["text"] + " ") * 12
            h = {"Authorization": f"Bearer {keys['control']}"}
            control = admin.post("/v1/kb/documents", json={"records": records}, headers=h).json()
            expected = {d["id"]: d["chunks"] for d in control["documents"]}

            # 1. Kill mid-ingest.
            hv = {"Authorization": f"Bearer {keys['victim']}"}
            _in_background(lambda: admin.post("/v1/kb/documents", json={"records": records}, headers=hv))
            time.sleep(rng.uniform(0.3, 1.5))
        server.kill()
        url = server.start()
        _check_tenants(out, url, keys)
        _check_documents(out, url, keys["victim"], expected, records, partial_ok=True)

        # 2. Kill during a loop of adapter publishes.
        published: list[str] = []
        with _admin(url, admin_key) as admin:

            def publish_loop() -> None:
                for _ in range(200):
                    r = admin.post(
                        "/admin/adapters", json={"tenant": "victim", "name": "crashy", "path": str(lora_src)}
                    )
                    if r.status_code == 201:
                        published.append(r.json()["version"])

            _in_background(publish_loop)
            time.sleep(rng.uniform(0.5, 2.0))
        server.kill()
        out.details["published_before_kill"] = len(published)
        url = server.start()
        _check_tenants(out, url, keys)
        _check_adapters(
            out, url, admin_key, keys["victim"], data_dir / "adapters" / "victim" / "crashy", lora_src
        )
        _check_documents(out, url, keys["victim"], expected, records, partial_ok=False)
        server.stop()
        _check_raw_chunks(out, data_dir, expected)
        _check_sqlite(out, data_dir / "tenants.sqlite")
    finally:
        server.stop()
    out.load = f"{docs}-document ingest, publish loop"
    out.seconds = time.monotonic() - started
    return out


def _check_tenants(out: Outcome, url: str, keys: dict[str, str]) -> None:
    with httpx.Client(base_url=url, timeout=120) as c:
        for name, key in keys.items():
            r = c.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
            out.check(
                r.status_code == 200, f"after restart tenant {name} cannot authenticate: {r.status_code}"
            )


def _check_documents(
    out: Outcome, url: str, key: str, expected: dict[str, int], records: list[dict], *, partial_ok: bool
) -> None:
    """Every listed document whole; re-running the interrupted ingest converges to the control's documents."""
    h = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, timeout=300) as c:
        listed = {d["id"]: d["chunks"] for d in c.get("/v1/kb/documents", headers=h).json()["documents"]}
        for doc, chunks in listed.items():
            if expected.get(doc) != chunks:
                out.fail(f"document {doc} visible with {chunks} chunks, expected {expected.get(doc)}", lost=1)
        out.details.setdefault("documents_visible_after_kill", len(listed))
        if partial_ok:
            r = c.post("/v1/kb/documents", json={"records": records}, headers=h)
            out.check(r.status_code == 200, f"re-running the ingest failed: {r.status_code} {r.text[:200]}")
        listed = {d["id"]: d["chunks"] for d in c.get("/v1/kb/documents", headers=h).json()["documents"]}
        missing = set(expected) - set(listed)
        if missing:
            out.fail(
                f"{len(missing)} documents missing after the re-run: {sorted(missing)[:3]}", lost=len(missing)
            )
        for hit in c.post("/v1/kb/search", json={"query": "isolation code", "top_k": 10}, headers=h).json()[
            "results"
        ]:
            out.check(
                hit["document_id"] in expected, f"search returned unknown document {hit['document_id']}"
            )


def _check_raw_chunks(out: Outcome, data_dir: Path, expected: dict[str, int]) -> None:
    """Straight from the Milvus Lite file: no duplicate, orphaned or stale chunk rows."""
    from pymilvus import MilvusClient

    client = MilvusClient(str(data_dir / "milvus.db"))
    try:
        for col in ("adept_chunks", "adept_chunks_documents"):
            client.load_collection(col)
        rows = client.query(
            "adept_chunks", filter='tenant == "victim"', output_fields=["chunk_id", "generation"], limit=16384
        )
        records = client.query(
            "adept_chunks_documents",
            filter='tenant == "victim"',
            output_fields=["document_id", "generation", "chunks"],
            limit=16384,
        )
    finally:
        client.close()
    ids = [r["chunk_id"] for r in rows]
    if len(ids) != len(set(ids)):
        out.fail(f"{len(ids) - len(set(ids))} duplicate chunk rows", lost=len(ids) - len(set(ids)))
    if len(ids) != sum(expected.values()):
        out.fail(f"{len(ids)} chunk rows stored, {sum(expected.values())} expected", lost=1)
    docs = [r["document_id"] for r in records]
    if len(docs) != len(set(docs)) or set(docs) != set(expected):
        out.fail(f"{len(docs)} document records for {len(set(docs))} ids, {len(expected)} expected", lost=1)
    out.details["chunk_rows"] = len(ids)


def _check_adapters(out: Outcome, url: str, admin_key: str, key: str, adapter_dir: Path, src: Path) -> None:
    """Visible versions are whole and byte-identical; half-written ones are invisible; publishing resumes."""
    with _admin(url, admin_key) as admin:
        listed = admin.get("/admin/adapters/victim").json()["data"]
        versions = [v["version"] for v in listed if v["name"] == "crashy"]
        out.details["adapter_versions_after_kill"] = len(versions)
        for v in versions:
            vdir = adapter_dir / v
            for f in ("adapter_config.json", "adapter_model.safetensors"):
                same = (vdir / f).is_file() and (vdir / f).read_bytes() == (src / f).read_bytes()
                out.check(same, f"crashy@{v}: {f} differs from what was published")
            try:
                json.loads((vdir / "manifest.json").read_text())
            except (OSError, ValueError) as e:
                out.fail(f"crashy@{v}: manifest unreadable ({e})", lost=1)
        r = admin.post("/admin/adapters", json={"tenant": "victim", "name": "crashy", "path": str(src)})
        out.check(r.status_code == 201, f"publishing after the crash failed: {r.status_code} {r.text[:200]}")
        if r.status_code == 201:
            out.check(r.json()["version"] not in versions, "a version number was reused after the crash")
        body = {"model": "crashy", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        r = admin.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
        out.check(r.status_code == 200, f"the latest adapter does not serve after the crash: {r.status_code}")


def _check_sqlite(out: Outcome, path: Path) -> None:
    db = sqlite3.connect(path)
    try:
        ok = db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()
    out.check(ok == "ok", f"tenant store integrity_check: {ok}")
