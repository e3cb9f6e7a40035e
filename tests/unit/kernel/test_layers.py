"""The import contracts in pyproject.toml hold, and they catch a breach, also one hidden in a function.

``lint-imports`` (import-linter, run by ``make lint``) builds the import graph with grimp, which
records every import statement, wherever it is: module level, inside a function, under
``TYPE_CHECKING``. The breach tests run it on a copy of the packages with one import added.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGES = ("adept", "services", "training", "operators", "tools")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(root / "pyproject.toml")],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_checkout_keeps_every_contract(repo_root: Path) -> None:
    result = lint_imports(repo_root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.fixture
def copy(repo_root: Path, tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(
            repo_root / package, tmp_path / package, ignore=shutil.ignore_patterns("*.pyc", "__pycache__")
        )
    shutil.copy(repo_root / "pyproject.toml", tmp_path)
    return tmp_path


def add_late_import(module: Path, statement: str) -> None:
    """Append a function whose body imports ``statement``: never run, still an import."""
    module.write_text(module.read_text() + f"\n\ndef _late() -> None:\n    {statement}  # noqa\n")


@pytest.mark.parametrize(
    ("module", "statement", "breach"),
    [
        (
            "adept/jsonl.py",
            "from services.gateway import protocol",
            "adept is not allowed to import services",
        ),
        ("adept/errors.py", "import training.data", "adept is not allowed to import training"),
        (
            "adept/config/base.py",
            "from tools.cli import app",
            "adept is not allowed to import tools",
        ),
        ("services/gateway/chat.py", "import training.data", "services is not allowed to import training"),
        ("training/data.py", "from operators import kube", "training is not allowed to import operators"),
        ("operators/resources.py", "import training.publish", "operators is not allowed to import training"),
        ("services/gateway/chat.py", "import tools.eval", "services is not allowed to import tools"),
    ],
)
def test_a_breach_inside_a_function_breaks_its_contract(
    copy: Path, module: str, statement: str, breach: str
) -> None:
    add_late_import(copy / module, statement)
    result = lint_imports(copy)
    assert result.returncode == 1, result.stdout
    assert breach in result.stdout
    assert f"{module.removesuffix('.py').replace('/', '.')} -> " in result.stdout


def test_the_tools_may_import_the_platform(copy: Path) -> None:
    """The tools are the top layer: no exemption is needed for them to use every layer below."""
    add_late_import(copy / "tools/cli/kb_cmd.py", "from services.embedded import start_platform")
    add_late_import(copy / "tools/eval/report.py", "import training.data")
    result = lint_imports(copy)
    assert result.returncode == 0, result.stdout
