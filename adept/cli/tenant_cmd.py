"""``adept tenant``: create, list, delete tenants and rotate their keys (embedded tenant store)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from adept.cli.common import console, err_console, handle_errors, platform_config
from adept.cli.config_cmd import DataDirOption, SetOption

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
    data_dir: DataDirOption = None,
    overrides: SetOption = None,
) -> None:
    """Create a tenant and print its API key (once)."""
    from adept.config.base import validate
    from adept.config.tenant import TenantSpec, check_tenant_name
    from adept.errors import InvalidRequest
    from adept.tenancy import open_tenant_store

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
        }.items()
        if v is not None
    }
    spec = validate(
        TenantSpec, {"name": name, "display_name": display_name, "quotas": quotas}, source="tenant"
    )
    tenant, key = open_tenant_store(platform_config(data_dir, overrides)).create(spec)
    _print_key(f"[green]created[/] tenant {tenant.name}.", key)


@app.command("list")
@handle_errors
def list_(data_dir: DataDirOption = None, overrides: SetOption = None, as_json: JsonOption = False) -> None:
    """List tenants with their quotas (keys are never shown, only their first characters)."""
    from rich.table import Table

    from adept.tenancy import open_tenant_store

    tenants = open_tenant_store(platform_config(data_dir, overrides)).list()
    if as_json:
        typer.echo(json.dumps([t.to_dict() for t in tenants], indent=2))
        return
    table = Table(title=f"{len(tenants)} tenant{'s' * (len(tenants) != 1)}")
    for col in ("name", "display name", "req/min", "tok/min", "adapters", "documents", "key", "created"):
        table.add_column(col, overflow="fold")
    for t in tenants:
        q = t.quotas
        table.add_row(
            t.name,
            t.display_name,
            str(q.requests_per_minute),
            str(q.tokens_per_minute),
            str(q.max_adapters),
            str(q.max_documents),
            t.key_prefix + "...",
            t.created_at,
        )
    console.print(table)


@app.command("delete")
@handle_errors
def delete(
    name: NameArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    data_dir: DataDirOption = None,
    overrides: SetOption = None,
) -> None:
    """Delete a tenant and its adapters; its API key stops working at once."""
    from adept.adapters import open_adapter_registry
    from adept.tenancy import open_tenant_store

    cfg = platform_config(data_dir, overrides)
    store = open_tenant_store(cfg)
    store.get(name)  # NotFound before asking anything
    if not yes:
        typer.confirm(f"Delete tenant {name!r} and all its adapters?", abort=True, err=True)
    store.delete(name)
    open_adapter_registry(cfg).delete_tenant(name)
    console.print(f"[green]deleted[/] tenant {name} and its adapters", highlight=False)


@app.command("rotate-key")
@handle_errors
def rotate_key(name: NameArg, data_dir: DataDirOption = None, overrides: SetOption = None) -> None:
    """Issue a new API key; the old one stops working at once."""
    from adept.tenancy import open_tenant_store

    key = open_tenant_store(platform_config(data_dir, overrides)).rotate_key(name)
    _print_key(f"[green]new key[/] for tenant {name}; the old key no longer works.", key)
