"""``adept config``: show the effective platform configuration, validate config files."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated

import typer

from tools.cli.common import console, handle_errors, platform_config

app = typer.Typer(no_args_is_help=True)

# Options every kernel command shares (imported by the tenant/adapter/models commands).
DataDirOption = Annotated[
    str | None,
    typer.Option(
        "--data-dir", help="Adept data dir (default: $ADEPT_DATA_DIR or ~/.adept).", show_default=False
    ),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set", "-s", help="Override a platform setting: key=value (repeatable).", show_default=False
    ),
]

# kind -> "module:Class"; imported on demand so a kind whose module is absent only fails when asked for.
KINDS = {
    "platform": "adept.config.platform:PlatformConfig",
    "tenant": "adept.config.tenant:TenantSpec",
    "adapter-manifest": "adept.config.adapter:AdapterManifest",
    "retrieval": "adept.config.retrieval:RetrievalConfig",
    "finetune": "adept.config.training:FineTuneJobConfig",
    "serving": "adept.config.serving:ServingConfig",
    "llm": "adept.config.llm:LLMConfig",
}


@app.command("show")
@handle_errors
def show(
    data_dir: DataDirOption = None,
    overrides: SetOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of YAML.")] = False,
) -> None:
    """Print the effective platform configuration (defaults < $ADEPT_CONFIG < ADEPT_* env < options)."""
    import json

    import yaml

    cfg = platform_config(data_dir, overrides)
    data = cfg.model_dump(mode="json")
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        typer.echo(yaml.safe_dump(data, sort_keys=False).rstrip())
        # Derived locations, as comments so the output stays a valid config file.
        typer.echo(f"# milvus: {cfg.resolved_milvus_uri}")
        typer.echo(f"# adapter store: {cfg.resolved_adapter_store}")
        typer.echo(f"# tenant store: {cfg.tenants_db}")
        typer.echo(f"# models: {cfg.models_dir}")


@app.command("validate")
@handle_errors
def validate_file(
    file: Annotated[Path, typer.Argument(help="YAML file to check.")],
    kind: Annotated[
        str, typer.Option("--kind", "-k", help=f"What the file is: {', '.join(KINDS)}.")
    ] = "platform",
) -> None:
    """Check a config file; every problem is reported at once."""
    from adept.config.base import load_config
    from adept.errors import InvalidRequest

    if kind not in KINDS:
        raise InvalidRequest(f"unknown kind {kind!r}; use one of: {', '.join(KINDS)}")
    module, _, cls_name = KINDS[kind].partition(":")
    cls = getattr(importlib.import_module(module), cls_name)
    load_config(cls, file, env=False)
    console.print(f"[green]ok[/]: {file} is a valid {kind} config", highlight=False)
