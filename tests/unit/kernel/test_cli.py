"""The kernel's CLI commands through typer's CliRunner: output, one-line errors, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from tests.unit.kernel.test_registry import BASE, make_adapter_dir
from tools.cli import app


@pytest.fixture
def cli(data_dir, monkeypatch):
    for name in list(os.environ):
        if name.startswith("ADEPT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ADEPT_DATA_DIR", str(data_dir))
    monkeypatch.setenv("COLUMNS", "200")  # rich tables: keep rows on one line
    runner = CliRunner()

    def run(*args: str, input: str | None = None):
        return runner.invoke(app, list(args), input=input)

    return run


def one_line_error(result, exit_code: int) -> str:
    assert result.exit_code == exit_code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_tenant_lifecycle(cli, data_dir):
    created = cli("tenant", "create", "acme", "--display-name", "ACME Corp", "--rpm", "5")
    assert created.exit_code == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("adept-") and "shown only this once" in created.stderr
    listed = json.loads(cli("tenant", "list", "--json").stdout)
    assert [(t["name"], t["quotas"]["requests_per_minute"]) for t in listed] == [("acme", 5)]
    assert key not in cli("tenant", "list").stdout
    rotated = cli("tenant", "rotate-key", "acme").stdout.strip()
    assert rotated.startswith("adept-") and rotated != key
    assert cli("tenant", "delete", "acme", input="n\n").exit_code != 0  # declined: nothing deleted
    assert "acme" in cli("tenant", "list").stdout
    assert cli("tenant", "delete", "acme", "--yes").exit_code == 0
    assert json.loads(cli("tenant", "list", "--json").stdout) == []


def test_tenant_errors_are_one_line_with_exit_codes(cli):
    cli("tenant", "create", "acme")
    assert "already exists" in one_line_error(cli("tenant", "create", "acme"), 5)
    assert "invalid tenant name" in one_line_error(cli("tenant", "create", "Not_A_Label"), 2)
    assert "not found" in one_line_error(cli("tenant", "delete", "nobody", "--yes"), 4)
    assert "not found" in one_line_error(cli("tenant", "rotate-key", "nobody"), 4)


def test_adapter_publish_list_activate_delete(cli, tmp_path):
    src = make_adapter_dir(tmp_path / "a")
    assert cli("tenant", "create", "acme").exit_code == 0
    for _ in range(2):
        res = cli("adapter", "publish", "acme", "legal", str(src))
        assert res.exit_code == 0, res.stderr
    assert "acme/legal@v2" in res.stdout
    rows = json.loads(cli("adapter", "list", "acme", "--json").stdout)
    assert [(r["id"], r["active"]) for r in rows] == [("acme/legal@v1", False), ("acme/legal@v2", True)]
    assert rows[0]["manifest"]["base_model"] == BASE
    assert cli("adapter", "activate", "acme", "legal", "v1").exit_code == 0
    table = cli("adapter", "list", "acme").stdout
    assert "acme/legal@v1" in table and "acme/legal@v2" in table
    assert cli("adapter", "delete", "acme", "legal", "--version", "v1").exit_code == 0
    assert [r["id"] for r in json.loads(cli("adapter", "list", "acme", "--json").stdout)] == ["acme/legal@v2"]
    assert cli("adapter", "delete", "acme", "legal").exit_code == 0
    assert "not found" in one_line_error(cli("adapter", "delete", "acme", "legal"), 4)


def test_adapter_for_another_base_model_is_refused(cli, tmp_path):
    cli("tenant", "create", "acme")
    src = make_adapter_dir(tmp_path / "phi", base="microsoft/Phi-3-mini-4k-instruct")
    line = one_line_error(cli("adapter", "publish", "acme", "legal", str(src)), 5)
    assert "microsoft/Phi-3-mini-4k-instruct" in line and BASE in line
    # A manifest.json in the directory is what decides, over adapter_config.json.
    (src / "manifest.json").write_text(json.dumps({"tenant": "x", "name": "y", "base_model": BASE}))
    assert cli("adapter", "publish", "acme", "legal", str(src)).exit_code == 0


def test_adapter_publish_checks_tenant_and_quota(cli, tmp_path):
    src = make_adapter_dir(tmp_path / "a")
    assert "tenant 'ghost' not found" in one_line_error(cli("adapter", "publish", "ghost", "x", str(src)), 4)
    cli("tenant", "create", "acme", "--max-adapters", "1")
    assert cli("adapter", "publish", "acme", "one", str(src)).exit_code == 0
    assert (
        cli("adapter", "publish", "acme", "one", str(src)).exit_code == 0
    )  # a new version is not a new adapter
    assert "max_adapters" in one_line_error(cli("adapter", "publish", "acme", "two", str(src)), 3)
    assert "not a PEFT adapter" in one_line_error(cli("adapter", "publish", "acme", "one", str(tmp_path)), 2)


def test_config_show_is_the_effective_config(cli, data_dir):
    res = cli("config", "show", "--set", "device=cpu")
    assert res.exit_code == 0, res.stderr
    shown = yaml.safe_load(res.stdout)
    assert shown["data_dir"] == str(data_dir) and shown["device"] == "cpu"
    assert f"# adapter store: {data_dir / 'adapters'}" in res.stdout
    assert json.loads(cli("config", "show", "--json").stdout)["model"] == BASE
    # What `config show` prints is itself a valid platform config file.
    f = data_dir / "shown.yaml"
    f.write_text(res.stdout)
    assert cli("config", "validate", str(f)).exit_code == 0


def test_config_validate_reports_every_problem(cli, tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("device: gpu\nmodle: x\n")
    res = cli("config", "validate", str(f))
    assert res.exit_code == 2
    assert "2 problems" in res.stderr and "device" in res.stderr and "modle: unknown field" in res.stderr
    t = tmp_path / "tenant.yaml"
    t.write_text("name: acme\nquotas: {max_adapters: 3}\n")
    assert cli("config", "validate", str(t), "--kind", "tenant").exit_code == 0
    assert "unknown kind" in one_line_error(cli("config", "validate", str(t), "--kind", "nope"), 2)


def test_models_list_and_pull_a_local_directory(cli, tiny_phi3):
    listed = cli("models", "list")
    assert listed.exit_code == 0, listed.stderr
    assert "bundled:smollm2-135m-instruct" in listed.stdout and "bundled:all-minilm-l6-v2" in listed.stdout
    pulled = cli("models", "pull", str(tiny_phi3))
    assert pulled.exit_code == 0 and "ready" in pulled.stdout
    assert "not found" in one_line_error(cli("models", "pull", "/nonexistent/model"), 4)


def test_importing_the_cli_imports_no_heavy_library():
    code = (
        "import sys, tools.cli, adept.tenancy, adept.adapters, adept.models; "
        "print([m for m in ('torch', 'ray', 'transformers', 'pymilvus', 'kopf', 'peft', 'fsspec') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_a_missing_command_module_fails_loudly():
    import typer

    from tools.cli import register

    target = typer.Typer()
    with pytest.raises(ModuleNotFoundError, match=r"tools\.cli\.no_such_cmd"):
        register(
            target,
            [("tools.cli.config_cmd", "config", "Config."), ("tools.cli.no_such_cmd", "gone", "Gone.")],
        )


def test_every_command_area_is_registered():
    from tools.cli import _AREAS

    groups = {g.name for g in app.registered_groups}
    assert groups == {name for _, name, _ in _AREAS if name is not None}
    top = {c.name or c.callback.__name__ for c in app.registered_commands}
    assert {"up", "ask", "eval", "version"} <= top
    assert "finetune" in groups  # run (also `adept finetune --config ...`), list, show, events, cancel
