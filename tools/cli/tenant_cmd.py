"""``adept tenant``: create, list, delete tenants and rotate their keys (see ``tools.cli.target`` for where)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from tools.cli.common import console, err_console, handle_errors
from tools.cli.config_cmd import DataDirOption, SetOption
from tools.cli.target import AdminKeyOption, UrlOption, open_target, run

app = typer.Typer(no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="Tenant name (a DNS label: lowercase letters, digits, '-').")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _print_key(message: str, key: str) -> None:
    # The key alone goes to stdout (KEY=$(adept tenant create acme)); the explanation to stderr.
    err_console.print(f"{message} It is shown only this once; store it now:", highlight=False)
    typer.echo(key)


@app.command("create")
@handle_errors
def create(
    name: NameArg,
    display_name: Annotated[str, typer.Option("--display-name", help="Human-readable name.")] = "",
    rpm: Annotated[int | None, typer.Option("--rpm", help="Requests per minute (0 = unlimited).")] = None,
    tpm: Annotated[int | None, typer.Option("--tpm", help="Tokens per minute (0 = unlimited).")] = None,
    max_adapters: Annotated[
        int | None, typer.Option("--max-adapters", help="Adapters the tenant may own.")
    ] = None,
    max_documents: Annotated[
        int | None, typer.Option("--max-documents", help="Documents in its knowledge base.")
    ] = None,
    max_files: Annotated[
        int | None, typer.Option("--max-files", help="Fine-tuning files it may keep (/v1/files).")
    ] = None,
    max_jobs: Annotated[
        int | None, typer.Option("--max-jobs", help="Fine-tuning jobs unfinished at once.")
    ] = None,
    max_jobs_per_day: Annotated[
        int | None, typer.Option("--max-jobs-per-day", help="Fine-tuning jobs it may create per 24 h.")
    ] = None,
    max_trained_tokens: Annotated[
        int | None,
        typer.Option("--max-trained-tokens-per-day", help="Tokens its jobs may train on per 24 h."),
    ] = None,
    data_dir: DataDirOption = None,
    overrides: SetOption = None,
    url: UrlOption = None,
    admin_key: AdminKeyOption = None,
) -> None:
    """Create a tenant and print its API key (once)."""
    from adept.config.base import validate
    from adept.config.tenant import TenantSpec, check_tenant_name
    from adept.errors import InvalidRequest

    try:
        check_tenant_name(name)  # one clear line rather than a validation report
    except ValueError as e:
        raise InvalidRequest(str(e)) from None
    quotas = {
        k: v
        for k, v in {
            "requests_per_minute": rpm,
            "tokens_per_minute": tpm,
            "max_adapters": max_adapters,
            "max_documents": max_documents,
            "max_files": max_files,
            "max_concurrent_finetune_jobs": max_jobs,
            "max_finetune_jobs_per_day": max_jobs_per_day,
            "max_trained_tokens_per_day": max_trained_tokens,
        }.items()
        if v is not None
    }
    spec = validate(
        TenantSpec, {"name": name, "display_name": display_name, "quotas": quotas}, source="tenant"
    )
    with open_target(data_dir, overrides, url, admin_key) as target:
        if target.remote:
            key = target.client.create_tenant(spec.model_dump())["api_key"]
        else:
            key = run(target.platform.create_tenant(spec))[1]
    _print_key(f"[green]created[/] tenant {name}.", key)


def _rows(target: Any) -> list[dict[str, Any]]:
    if target.remote:
        return target.client.list_tenants()
    return [t.to_dict() for t in run(target.platform.list_tenants())]


@app.command("list")
@handle_errors
def list_(
    data_dir: DataDirOption = None,
    overrides: SetOption = None,
    url: UrlOption = None,
    admin_key: AdminKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """List tenants with their quotas (keys are never shown, only their first characters)."""
    from rich.table import Table

    with open_target(data_dir, overrides, url, admin_key) as target:
        tenants = _rows(target)
    if as_json:
        typer.echo(json.dumps(tenants, indent=2))
        return
    table = Table(title=f"{len(tenants)} tenant{'s' * (len(tenants) != 1)}")
    for col in ("name", "display name", "req/min", "tok/min", "adapters", "documents", "key", "created"):
        table.add_column(col, overflow="fold")
    for t in tenants:
        q = t["quotas"]
        table.add_row(
            t["name"],
            t["display_name"],
            str(q["requests_per_minute"]),
            str(q["tokens_per_minute"]),
            str(q["max_adapters"]),
            str(q["max_documents"]),
            t["key_prefix"] + "...",
            t["created_at"],
        )
    console.print(table)


@app.command("delete")
@handle_errors
def delete(
    name: NameArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    data_dir: DataDirOption = None,
    overrides: SetOption = None,
    url: UrlOption = None,
    admin_key: AdminKeyOption = None,
) -> None:
    """Delete a tenant and everything it owns (documents, adapters, jobs); its key stops working at once."""
    with open_target(data_dir, overrides, url, admin_key) as target:
        if target.remote:
            target.client.get_tenant(name)  # NotFound before asking anything
        else:
            run(target.platform.get_tenant(name))
        if not yes:
            typer.confirm(
                f"Delete tenant {name!r} with its documents, adapters and jobs ({target.where})?",
                abort=True,
                err=True,
            )
        if target.remote:
            adapters = target.client.delete_tenant(name)["adapters_deleted"]
        else:
            adapters = run(target.platform.delete_tenant(name)).adapters_deleted
    console.print(
        f"[green]deleted[/] tenant {name} with its documents and {adapters} adapter{'s' * (adapters != 1)}",
        highlight=False,
    )


@app.command("rotate-key")
@handle_errors
def rotate_key(
    name: NameArg,
    data_dir: DataDirOption = None,
    overrides: SetOption = None,
    url: UrlOption = None,
    admin_key: AdminKeyOption = None,
) -> None:
    """Issue a new API key; the old one stops working at once."""
    with open_target(data_dir, overrides, url, admin_key) as target:
        key = target.client.rotate_key(name) if target.remote else run(target.platform.rotate_key(name))
    _print_key(f"[green]new key[/] for tenant {name}; the old key no longer works.", key)
