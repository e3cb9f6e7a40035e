"""``adept models``: prepare base models (convert the bundled GGUF once) and list what resolves."""

from __future__ import annotations

from typing import Annotated

import typer

from adept.cli.common import console, err_console, handle_errors, platform_config
from adept.cli.config_cmd import DataDirOption, SetOption

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
    ref: Annotated[
        str | None,
        typer.Argument(help="Model reference (default: the configured `model`).", show_default=False),
    ] = None,
    data_dir: DataDirOption = None,
    overrides: SetOption = None,
) -> None:
    """Make a model ready offline: convert the bundled GGUF once, or check a local dir / cached hub id."""
    from adept.models import canonical_model_id, resolve_model

    cfg = platform_config(data_dir, overrides)
    ref = ref or cfg.model
    with err_console.status(f"preparing {ref} (the bundled model converts once, ~15 s)..."):
        path = resolve_model(ref, cfg.models_dir)
    console.print(f"[green]ready[/]: {canonical_model_id(ref)} -> {path}", highlight=False, soft_wrap=True)


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
