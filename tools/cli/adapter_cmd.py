"""``adept adapter``: list, publish, activate and delete tenants' adapters (see ``tools.cli.target`` for where)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from tools.cli.common import console, handle_errors
from tools.cli.config_cmd import DataDirOption, SetOption
from tools.cli.target import AdminKeyOption, UrlOption, open_target, run

app = typer.Typer(no_args_is_help=True)

TenantArg = Annotated[str, typer.Argument(help="Tenant name.")]
NameArg = Annotated[str, typer.Argument(help="Adapter name.")]


def _views(target: Any, tenant: str) -> list[dict[str, Any]]:
    """The admin API's adapter views, from wherever the target is."""
    if target.remote:
        return target.client.list_adapters(tenant)
    from services.gateway.admin import AdapterView

    versions = run(target.platform.list_adapters(tenant))
    served = run(target.platform.served_versions(tenant))
    return [AdapterView.of(v, served).model_dump() for v in versions]


@app.command("list")
@handle_errors
def list_(
    tenant: TenantArg,
    data_dir: DataDirOption = None,
    overrides: SetOption = None,
    url: UrlOption = None,
    admin_key: AdminKeyOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List a tenant's adapter versions; `*` marks what requests get (pinned, else latest)."""
    from rich.table import Table

    with open_target(data_dir, overrides, url, admin_key) as target:
        views = _views(target, tenant)
    if as_json:
        rows = [{k: v[k] for k in ("id", "active", "uri", "manifest")} for v in views]
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"adapters of {tenant}")
    for col in ("adapter", "", "base model", "method", "rank", "created", "location"):
        table.add_column(col, overflow="fold")
    for v in views:
        mark = "*" if v["active"] else ""
        table.add_row(
            v["id"], mark, v["base_model"], v["method"], str(v["rank"] or "-"), v["created_at"], v["uri"]
        )
    console.print(table)


@app.command("publish")
@handle_errors
def publish(
    tenant: TenantArg,
    name: NameArg,
    src: Annotated[
        Path, typer.Argument(help="Directory with adapter_config.json + adapter_model.safetensors.")
    ],
    base_model: Annotated[
        str | None,
        typer.Option(
            "--base-model",
            help="Base model the adapter was trained on, when DIR has no manifest.json "
            "(default: adapter_config.json's base_model_name_or_path).",
            show_default=False,
        ),
    ] = None,
    data_dir: DataDirOption = None,
    overrides: SetOption = None,
    url: UrlOption = None,
    admin_key: AdminKeyOption = None,
) -> None:
    """Publish a PEFT adapter as the next version; refused over quota or if trained on another base model."""
    from adept.errors import InvalidRequest

    if not src.is_dir():
        raise InvalidRequest(f"adapter directory not found: {src}")
    with open_target(data_dir, overrides, url, admin_key) as target:
        if target.remote:
            published = target.client.publish_adapter(tenant, name, src, base_model=base_model)
            adapter_id, where = published["id"], published["uri"]
        else:
            version = run(target.platform.publish_adapter(tenant, name, src, base_model=base_model))
            adapter_id, where = version.id, version.uri
    console.print(f"[green]published[/] {adapter_id} -> {where}", highlight=False, soft_wrap=True)


@app.command("activate")
@handle_errors
def activate(
    tenant: TenantArg,
    name: NameArg,
    version: Annotated[
        str | None, typer.Argument(help="Version to pin (v<N>); omit to follow the latest.")
    ] = None,
    data_dir: DataDirOption = None,
    overrides: SetOption = None,
    url: UrlOption = None,
    admin_key: AdminKeyOption = None,
) -> None:
    """Pin the version that requests for TENANT/NAME get."""
    with open_target(data_dir, overrides, url, admin_key) as target:
        if target.remote:
            target.client.activate_adapter(tenant, name, version)
        else:
            run(target.platform.activate_adapter(tenant, name, version))
    console.print(f"{tenant}/{name} now serves {version or 'the latest version'}", highlight=False)


@app.command("delete")
@handle_errors
def delete(
    tenant: TenantArg,
    name: NameArg,
    version: Annotated[str | None, typer.Option("--version", help="Delete only this version (v<N>).")] = None,
    data_dir: DataDirOption = None,
    overrides: SetOption = None,
    url: UrlOption = None,
    admin_key: AdminKeyOption = None,
) -> None:
    """Delete an adapter (every version), or one version of it; loaded copies are dropped too."""
    with open_target(data_dir, overrides, url, admin_key) as target:
        if target.remote:
            target.client.delete_adapter(tenant, name, version)
        else:
            run(target.platform.delete_adapter(tenant, name, version))
    console.print(f"[green]deleted[/] {tenant}/{name}{'@' + version if version else ''}", highlight=False)
