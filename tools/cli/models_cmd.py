"""``adept models``: prepare base models (convert the bundled GGUF once, or download on request), list
what resolves, and wait until models are in the cache (the chart's init containers)."""

from __future__ import annotations

from typing import Annotated

import typer

from tools.cli.common import console, err_console, handle_errors, platform_config
from tools.cli.config_cmd import DataDirOption, SetOption

app = typer.Typer(no_args_is_help=True)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


@app.command("pull")
@handle_errors
def pull(
    refs: Annotated[
        list[str] | None,
        typer.Argument(
            help="Model references (default: the configured `model`; with --download also `embedding_model`).",
            show_default=False,
        ),
    ] = None,
    download: Annotated[
        bool,
        typer.Option(
            "--download",
            help="Fetch hub models into the Hugging Face cache (HF_HOME; HF_TOKEN for gated models). "
            "Without it nothing is downloaded: the model must already resolve offline.",
        ),
    ] = False,
    data_dir: DataDirOption = None,
    overrides: SetOption = None,
) -> None:
    """Make models ready offline: convert the bundled GGUF once, check a local dir / cached hub id, or --download."""
    from adept.models import canonical_model_id, resolve_model
    from adept.weights import download_model, is_hub_ref

    cfg = platform_config(data_dir, overrides)
    if not refs:
        refs = [cfg.model, cfg.embedding_model] if download else [cfg.model]
    for ref in refs:
        if download and is_hub_ref(ref):
            err_console.print(f"downloading {ref} into the Hugging Face cache...", highlight=False)
            path = download_model(ref, out=err_console.file)
        else:
            with err_console.status(f"preparing {ref} (the bundled model converts once, ~15 s)..."):
                path = resolve_model(ref, cfg.models_dir)
        console.print(
            f"[green]ready[/]: {canonical_model_id(ref)} -> {path}", highlight=False, soft_wrap=True
        )


@app.command("wait")
@handle_errors
def wait(
    refs: Annotated[list[str], typer.Argument(help="Model references that must resolve offline.")],
    timeout: Annotated[
        float, typer.Option(min=0, help="Give up after this many seconds (exit 7); 0 waits for ever.")
    ] = 0,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between checks and progress lines.")] = 10,
    hint: Annotated[
        str, typer.Option(help="Appended to each waiting line (e.g. which Job fills the cache).")
    ] = "",
) -> None:
    """Wait until every model is in the local cache (what the chart's init containers run)."""
    from adept.weights import wait_for_models

    wait_for_models(
        refs,
        timeout=timeout,
        interval=interval,
        hint=hint,
        report=lambda line: console.print(line, highlight=False, soft_wrap=True),
    )


@app.command("list")
@handle_errors
def list_(
    data_dir: DataDirOption = None,
    overrides: SetOption = None,
) -> None:
    """List bundled models, prepared directories and models in the local Hugging Face cache."""
    from rich.table import Table

    from adept.models import list_models

    cfg = platform_config(data_dir, overrides)
    table = Table(title=f"models ({cfg.models_dir})")
    for col in ("model", "ready", "size", "path", "about"):
        table.add_column(col, overflow="fold")
    for m in list_models(cfg.models_dir):
        name = f"{m.ref} [bold](default)[/]" if m.ref == cfg.model else m.ref
        ready = "[green]ready[/]" if m.ready else "[yellow]not pulled[/]"
        table.add_row(name, ready, _size(m.size_bytes), str(m.path or "-"), m.description)
    console.print(table)
