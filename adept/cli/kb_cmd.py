"""``adept kb``: ingest, search, list and delete knowledge-base documents of a running platform."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from adept.cli.common import console, err_console, handle_errors

app = typer.Typer(no_args_is_help=True, help="Ingest, search, list and delete knowledge-base documents.")

UrlOpt = Annotated[
    str,
    typer.Option("--url", envvar="ADEPT_URL", help="Base URL of the running platform.", show_default=True),
]
KeyOpt = Annotated[
    str, typer.Option("--api-key", envvar="ADEPT_API_KEY", help="The tenant's API key.", show_default=False)
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the raw JSON reply.")]
_BATCH_BYTES = 8 * 1024 * 1024  # files per upload request, so a bar moves and one 413 names one big file
_BATCH_FILES = 32
_STATUS_ERRORS = {400: "InvalidRequest", 401: "AuthenticationError", 403: "PermissionDenied", 404: "NotFound",
                  409: "Conflict", 413: "PayloadTooLarge", 415: "UnsupportedMedia", 429: "RateLimited",
                  503: "Unavailable", 507: "StorageError"}  # fmt: skip


class _Client:
    """A tiny client for ``/v1/kb``: turns HTTP errors into ``AdeptError`` (one line, right exit code)."""

    def __init__(self, url: str, api_key: str) -> None:
        import httpx

        if not api_key:
            from adept.errors import AuthenticationError

            raise AuthenticationError("no API key: pass --api-key or set ADEPT_API_KEY")
        self.url = url.rstrip("/")
        self.http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=600
        )

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        from adept import errors

        try:
            resp = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise errors.Unavailable(
                f"cannot reach Adept at {self.url}: {e} (is `adept up` running?)"
            ) from None
        if resp.status_code < 400:
            return resp.json()
        try:
            body = resp.json()
            message = body["error"]["message"]
        except (ValueError, KeyError, TypeError):
            body, message = {}, resp.text[:300] or resp.reason_phrase
        cls = getattr(errors, _STATUS_ERRORS.get(resp.status_code, "AdeptError"))
        err = cls(message) if cls is not errors.RateLimited else cls(message, retry_after=1)
        err.details = body.get("errors", [])  # per-file reasons of a failed ingest
        raise err


def _walk(paths: list[Path]) -> list[tuple[str, Path]]:
    """``(name sent to the server, path)``; names are relative to a directory argument, as the server expects."""
    out = []
    for root in paths:
        if root.is_dir():
            for p in sorted(root.rglob("*")):
                rel = p.relative_to(root)
                if p.is_file() and not any(part.startswith(".") for part in rel.parts):
                    out.append((rel.as_posix(), p))
        elif root.is_file():
            out.append((root.name, root))
        else:
            raise FileNotFoundError(2, "no such file or directory", str(root))
    return out


def _batches(files: list[tuple[str, Path]]) -> list[list[tuple[str, Path]]]:
    batches: list[list[tuple[str, Path]]] = []
    size = 0
    for name, path in files:
        n = path.stat().st_size
        if not batches or size + n > _BATCH_BYTES or len(batches[-1]) >= _BATCH_FILES:
            batches.append([])
            size = 0
        batches[-1].append((name, path))
        size += n
    return batches


@app.command()
@handle_errors
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or directories (recursively).")],
    url: UrlOpt = "http://127.0.0.1:8000",
    api_key: KeyOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Upload documents (.txt .md .html .pdf .docx .jsonl); unchanged documents are skipped."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from adept.errors import AdeptError, InvalidRequest

    client = _Client(url, api_key)
    files = _walk(paths)
    if not files:
        raise InvalidRequest("no files found under the given paths")
    documents: list[dict] = []
    errors: list[dict] = []
    columns = (
        TextColumn("[bold]ingest"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
    )
    with Progress(*columns, console=err_console, transient=as_json) as bar:
        task = bar.add_task("", total=len(files))
        for batch in _batches(files):
            bar.update(task, description=batch[0][0])
            upload = [
                ("files", (name, path.read_bytes(), "application/octet-stream")) for name, path in batch
            ]
            try:
                reply = client.call("POST", "/v1/kb/documents", files=upload)
                documents += reply["documents"]
                errors += reply["errors"]
            except AdeptError as e:
                if e.status in (401, 403, 503):
                    raise
                details = getattr(e, "details", None)
                errors += details or [{"source": name, "reason": e.message} for name, _ in batch]
            bar.advance(task, len(batch))
    if as_json:
        console.print_json(json.dumps({"documents": documents, "errors": errors}))
    else:
        counts = {
            s: sum(d.get("status") == s for d in documents) for s in ("created", "updated", "unchanged")
        }
        chunks = sum(d["chunks"] for d in documents)
        console.print(
            f"{len(documents)} documents ({counts['created']} new, {counts['updated']} updated, "
            f"{counts['unchanged']} unchanged), {chunks} chunks; {len(errors)} errors"
        )
        for e in errors:
            err_console.print(f"[red]skipped[/] {e['source']}: {e['reason']}", highlight=False)
    if errors and not documents:
        raise typer.Exit(2)


@app.command()
@handle_errors
def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Number of results (1-100).")] = 5,
    url: UrlOpt = "http://127.0.0.1:8000",
    api_key: KeyOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Show the chunks most relevant to QUERY, with their sources."""
    reply = _Client(url, api_key).call("POST", "/v1/kb/search", json={"query": query, "top_k": top_k})
    if as_json:
        console.print_json(json.dumps(reply))
        return
    if not reply["results"]:
        console.print("no results")
    for i, hit in enumerate(reply["results"], start=1):
        where = f" > {hit['heading_path']}" if hit.get("heading_path") else ""
        console.print(
            f"[bold]{i}. {hit['title']}[/]{where}  [dim]{hit['chunk_id']}  score {hit['score']:.4f}[/]"
        )
        text = hit["text"].replace("\n", " ")
        console.print(f"   {text[:300]}{'…' if len(text) > 300 else ''}", highlight=False)


@app.command("list")
@handle_errors
def list_(url: UrlOpt = "http://127.0.0.1:8000", api_key: KeyOpt = "", as_json: JsonOpt = False) -> None:
    """List documents with their chunk counts."""
    from rich.table import Table

    reply = _Client(url, api_key).call("GET", "/v1/kb/documents")
    if as_json:
        console.print_json(json.dumps(reply))
        return
    table = Table("id", "title", "chunks")
    for d in reply["documents"]:
        table.add_row(d["id"], d["title"], str(d["chunks"]))
    console.print(table)
    console.print(
        f"{len(reply['documents'])} documents, {sum(d['chunks'] for d in reply['documents'])} chunks"
    )


@app.command()
@handle_errors
def delete(
    document_id: Annotated[str, typer.Argument(metavar="ID", help="Document id (see `adept kb list`).")],
    url: UrlOpt = "http://127.0.0.1:8000",
    api_key: KeyOpt = "",
) -> None:
    """Delete one document and its chunks."""
    from urllib.parse import quote

    reply = _Client(url, api_key).call("DELETE", f"/v1/kb/documents/{quote(document_id, safe='/')}")
    console.print(f"deleted {reply['id']} ({reply['chunks']} chunks)")
