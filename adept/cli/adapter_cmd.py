"""``adept adapter``: list, publish, activate and delete tenants' adapters (embedded registry)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from adept.cli.common import console, handle_errors, platform_config
from adept.cli.config_cmd import DataDirOption, SetOption

app = typer.Typer(no_args_is_help=True)

TenantArg = Annotated[str, typer.Argument(help="Tenant name.")]
NameArg = Annotated[str, typer.Argument(help="Adapter name.")]


@app.command("list")
@handle_errors
def list_(
    tenant: TenantArg,
    data_dir: DataDirOption = None,
    overrides: SetOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List a tenant's adapter versions; `*` marks what requests get (pinned, else latest)."""
    from rich.table import Table

    from adept.adapters import open_adapter_registry

    registry = open_adapter_registry(platform_config(data_dir, overrides))
    versions = registry.list(tenant)
    served = {v.name: registry.resolve(tenant, v.name).version for v in versions} if versions else {}
    if as_json:
        rows = [
            {
                "id": v.id,
                "active": served[v.name] == v.version,
                "uri": v.uri,
                "manifest": v.manifest.model_dump(),
            }
            for v in versions
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"adapters of {tenant}")
    for col in ("adapter", "", "base model", "method", "rank", "created", "location"):
        table.add_column(col, overflow="fold")
    for v in versions:
        m = v.manifest
        mark = "*" if served[v.name] == v.version else ""
        table.add_row(v.id, mark, m.base_model, m.method, str(m.rank or "-"), m.created_at, v.uri)
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
) -> None:
    """Publish a PEFT adapter as the next version; refused if it was trained on another base model."""
    from adept.adapters import open_adapter_registry
    from adept.errors import InvalidRequest, PermissionDenied
    from adept.models import canonical_model_id
    from adept.tenancy import open_tenant_store

    cfg = platform_config(data_dir, overrides)
    quotas = open_tenant_store(cfg).get(tenant).quotas  # NotFound for an unknown tenant
    manifest: dict = {}
    if (src / "manifest.json").is_file():
        try:
            manifest = json.loads((src / "manifest.json").read_text(encoding="utf-8"))
        except ValueError as e:
            raise InvalidRequest(f"{src / 'manifest.json'}: not valid JSON: {e}") from None
    if base_model and "base_model" not in manifest:
        manifest["base_model"] = base_model
    registry = open_adapter_registry(cfg)
    new_name = not registry.versions(tenant, name)
    if quotas.max_adapters and new_name and registry.count_adapters(tenant) >= quotas.max_adapters:
        raise PermissionDenied(
            f"tenant {tenant} already has {quotas.max_adapters} adapters (its max_adapters quota)",
            code="quota_exceeded",
        )
    version = registry.publish(tenant, name, src, manifest, expected_base_model=canonical_model_id(cfg.model))
    console.print(f"[green]published[/] {version.id} -> {version.uri}", highlight=False, soft_wrap=True)


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
) -> None:
    """Pin the version that requests for TENANT/NAME get."""
    from adept.adapters import open_adapter_registry

    open_adapter_registry(platform_config(data_dir, overrides)).set_active(tenant, name, version)
    console.print(f"{tenant}/{name} now serves {version or 'the latest version'}", highlight=False)


@app.command("delete")
@handle_errors
def delete(
    tenant: TenantArg,
    name: NameArg,
    version: Annotated[str | None, typer.Option("--version", help="Delete only this version (v<N>).")] = None,
    data_dir: DataDirOption = None,
    overrides: SetOption = None,
) -> None:
    """Delete an adapter (every version), or one version of it."""
    from adept.adapters import open_adapter_registry

    open_adapter_registry(platform_config(data_dir, overrides)).delete(tenant, name, version)
    console.print(f"[green]deleted[/] {tenant}/{name}{'@' + version if version else ''}", highlight=False)
