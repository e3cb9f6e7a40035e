"""``adept kb``: ingest, search, list and delete knowledge-base documents of a running platform."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from tools.cli.common import console, err_console, handle_errors

app = typer.Typer(no_args_is_help=True, help="Ingest, search, list and delete knowledge-base documents.")

UrlOpt = Annotated[
    str,
    typer.Option("--url", envvar="ADEPT_URL", help="Base URL of the running platform.", show_default=True),
]
KeyOpt = Annotated[
    str, typer.Option("--api-key", envvar="ADEPT_API_KEY", help="The tenant's API key.", show_default=False)
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the raw JSON reply.")]


def _client(url: str, api_key: str) -> Any:
    """The tenant's view of ``/v1/kb``: HTTP errors become ``AdeptError`` (one line, right exit code)."""
    from adept.admin_client import PlatformHTTP

    if not api_key:
        from adept.errors import AuthenticationError

        raise AuthenticationError("no API key: pass --api-key or set ADEPT_API_KEY")
    return PlatformHTTP(url, api_key)


def _walk(paths: list[Path]) -> list[tuple[str, Path]]:
    """``(name sent to the server, path)``; names are relative to a directory argument, as the server expects."""
    from adept.documents import walk_files

    for root in paths:
        if not root.exists():
            raise FileNotFoundError(2, "no such file or directory", str(root))
    return list(walk_files(paths))


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

    from adept.documents import upload_batches
    from adept.errors import AdeptError, InvalidRequest

    client = _client(url, api_key)
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
        for batch in upload_batches(files):
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
    reply = _client(url, api_key).call("POST", "/v1/kb/search", json={"query": query, "top_k": top_k})
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

    reply = _client(url, api_key).call("GET", "/v1/kb/documents")
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

    reply = _client(url, api_key).call("DELETE", f"/v1/kb/documents/{quote(document_id, safe='/')}")
    console.print(f"deleted {reply['id']} ({reply['chunks']} chunks)")
