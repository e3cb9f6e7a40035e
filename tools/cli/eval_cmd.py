"""``adept eval``: run a question set through base, RAG, adapter and adapter+RAG, and recommend a route."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tools.cli.common import console, err_console, handle_errors

app = typer.Typer()


@app.command("eval")
@handle_errors
def eval_command(
    questions: Annotated[
        Path,
        typer.Option(
            "--questions", "-q", help="Eval set (JSONL: question, answer?, reference_documents?, tags?)."
        ),
    ],
    url: Annotated[
        str | None,
        typer.Option(
            "--url", envvar="ADEPT_URL", help="Gateway URL; without it an embedded platform is started."
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", envvar="ADEPT_API_KEY", help="The tenant's API key.", show_default=False),
    ] = None,
    data_dir: Annotated[
        str | None, typer.Option("--data-dir", help="Data dir of the embedded platform (when no --url).")
    ] = None,
    adapter: Annotated[
        str | None,
        typer.Option("--adapter", help="Adapter for the adapter routes (default: the tenant's first)."),
    ] = None,
    routes: Annotated[
        str, typer.Option("--routes", help="Routes to run, comma-separated.")
    ] = "base,rag,lora,rag+lora",
    top_k: Annotated[
        int, typer.Option("--top-k", min=1, max=100, help="Passages retrieved per question.")
    ] = 4,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Most tokens per answer.")] = 64,
    seed: Annotated[int, typer.Option("--seed", help="Decoding and bootstrap seed.")] = 0,
    system_prompt: Annotated[
        str | None,
        typer.Option("--system-prompt", help="System message for every route (default: answer briefly)."),
    ] = None,
    corpus: Annotated[
        list[Path] | None,
        typer.Option(
            "--corpus", help="Files or folders to ingest into the tenant's knowledge base first (repeatable)."
        ),
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", help="Directory for report.json, report.md and charts.")
    ] = Path("eval-report"),
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set", "-s", help="Embedded platform setting: key=value (repeatable).", show_default=False
        ),
    ] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
    tag: Annotated[
        str | None,
        typer.Option(
            "--tag",
            help="Only the questions with this tag (e.g. `heldout`: the half no prompt tuning saw).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Compare routes on a question set through the tenant's public API and recommend one."""
    from adept.errors import InvalidRequest
    from adept.evalset import load_eval_set
    from tools.eval.report import print_report, write_report
    from tools.eval.routes import DEFAULT_SYSTEM_PROMPT, Decoding, parse_route_names
    from tools.eval.runner import EvalOptions, corpus_files, embedded_platform

    # Everything that can be checked locally is checked before any platform starts.
    eval_set = load_eval_set(questions)
    if tag:
        eval_set = eval_set.with_tag(tag)
    options = EvalOptions(
        routes=parse_route_names(routes),
        adapter=adapter,
        decoding=Decoding(
            max_tokens=max_tokens,
            seed=seed,
            top_k=top_k,
            system_prompt=DEFAULT_SYSTEM_PROMPT if system_prompt is None else system_prompt,
        ),
        seed=seed,
    )
    if url and data_dir:
        raise InvalidRequest(
            "give either --url (a running platform) or --data-dir (an embedded one), not both"
        )
    if url and not api_key:
        raise InvalidRequest("--url needs --api-key (or ADEPT_API_KEY): the tenant's key")

    if corpus:
        corpus_files(list(corpus))  # a missing path fails before any platform starts or upload begins

    if url:
        report = _run(url, api_key or "", eval_set, options, corpus, not no_progress)
    else:
        err_console.print("starting an embedded platform with the demo tenant (this takes a minute)...")
        say = lambda line: err_console.print(line, highlight=False)  # noqa: E731
        with embedded_platform(data_dir, overrides, say=say) as (emb_url, demo_key):
            report = _run(emb_url, api_key or demo_key, eval_set, options, corpus, not no_progress)

    print_report(report, console)
    paths = write_report(report, out)
    console.print(f"wrote {', '.join(str(p) for p in paths.values())}", highlight=False)


def _run(url: str, api_key: str, eval_set, options, corpus: list[Path] | None, progress: bool) -> dict:
    from tools.eval.client import PlatformClient
    from tools.eval.runner import ingest_corpus, run_eval

    with PlatformClient(url, api_key) as client:
        if corpus:
            done = ingest_corpus(client, list(corpus))
            err_console.print(
                f"ingested {len(done['documents'])} documents from {done['files']} files", highlight=False
            )
            for e in done["errors"]:
                err_console.print(f"[yellow]skipped[/] {e.get('source')}: {e.get('reason')}", highlight=False)
        return run_eval(client, eval_set, options, progress=progress)
