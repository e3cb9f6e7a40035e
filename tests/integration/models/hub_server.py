"""A Hugging Face hub emulator on loopback: the four routes the hub client's ``snapshot_download`` uses.

The real hub cannot be reached from these machines, so the download path (``adept models pull
--download``, the chart's weights Job) is exercised against this server with the real
``huggingface_hub`` client pointed at it through ``HF_ENDPOINT``. It serves plain (non-LFS, non-Xet)
files, answers gated repositories with 401 unless the right bearer token comes, and logs every request
so tests can tell what was fetched.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


@dataclass
class Repo:
    """One model repository: one branch (``main``) at one commit."""

    files: dict[str, bytes]
    token: str | None = None  # gated: requests need ``Authorization: Bearer <token>``
    commit: str = ""

    def __post_init__(self) -> None:
        digest = hashlib.sha1(b"".join(k.encode() + v for k, v in sorted(self.files.items())))
        self.commit = self.commit or digest.hexdigest()

    @classmethod
    def from_dir(cls, path: Path, *, skip: tuple[str, ...] = (), token: str | None = None) -> Repo:
        files = {
            str(p.relative_to(path)): p.read_bytes()
            for p in sorted(path.rglob("*"))
            if p.is_file() and p.name not in skip
        }
        return cls(files, token=token)


def _blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class HubServer:
    repos: dict[str, Repo]
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    url: str = ""

    def __enter__(self) -> HubServer:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output clean
                return

            def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _error(self, status: int, code: str, message: str) -> None:
                body = json.dumps({"error": message}).encode()
                self._send(status, body, {"X-Error-Code": code, "X-Error-Message": message})

            def _repo(self, repo_id: str) -> Repo | None:
                repo = hub.repos.get(repo_id)
                if repo is None:
                    self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
                    return None
                if repo.token and self.headers.get("Authorization") != f"Bearer {repo.token}":
                    self._error(401, "GatedRepo", f"Access to model {repo_id} is restricted")
                    return None
                return repo

            def _commit(self, repo: Repo, revision: str) -> str | None:
                if revision in ("main", repo.commit):
                    return repo.commit
                self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                return None

            def do_HEAD(self) -> None:
                self.do_GET()

            def do_GET(self) -> None:
                path = unquote(urlsplit(self.path).path)
                hub.requests.append((self.command, path))
                if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/([^/]+)", path):
                    repo = self._repo(m[1])
                    if repo and (commit := self._commit(repo, m[2])):
                        info = {
                            "id": m[1],
                            "modelId": m[1],
                            "sha": commit,
                            "private": False,
                            "siblings": [{"rfilename": f} for f in repo.files],
                        }
                        self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"})
                elif m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(/.*)?", path):
                    repo = self._repo(m[1])
                    if repo and self._commit(repo, m[2]):
                        tree = [
                            {"type": "file", "path": f, "size": len(data), "oid": _blob_id(data)}
                            for f, data in repo.files.items()
                        ]
                        self._send(200, json.dumps(tree).encode(), {"Content-Type": "application/json"})
                elif m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
                    repo = self._repo(m[1])
                    if repo and (commit := self._commit(repo, m[2])):
                        data = repo.files.get(m[3])
                        if data is None:
                            self._error(404, "EntryNotFound", f"{m[3]} does not exist")
                            return
                        etag = f'"{_blob_id(data)}"'
                        self._send(200, data, {"X-Repo-Commit": commit, "ETag": etag})
                else:
                    self._error(404, "NotFound", f"no route for {path}")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fetched(self, method: str = "GET") -> list[str]:
        """Paths of file downloads (``resolve`` routes) seen so far."""
        return [p for m, p in self.requests if m == method and "/resolve/" in p]
