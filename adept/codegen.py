"""``python -m adept.codegen`` (``make sync``): regenerate every generated file from the pydantic models.

Generated files (CRDs, the chart's ``values.schema.json``) are never edited by hand. ``--check``
regenerates into a scratch copy of the repository and lists what differs from the checkout,
exiting non-zero when anything drifted; a test runs it so drift fails CI.
"""

from __future__ import annotations

import argparse
import filecmp
import importlib
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# (module, function): each takes the repository root and writes its files below it.
GENERATORS = [
    ("operators.crdgen", "write_crds"),
    ("adept.config.chart", "write_values_schema"),
]
# What --check copies into its scratch root: the generators read and write only here.
SCRATCH_TREES = ["charts"]
_IGNORE = shutil.ignore_patterns("*.tgz", "__pycache__", "Chart.lock")


class MissingGenerator(LookupError):
    """A listed generator cannot be loaded: its files would silently go stale, so nothing runs."""


def load_generators() -> list[tuple[str, Callable[[Path], object]]]:
    """Every generator in ``GENERATORS``, as ``(module.function, function)``.

    Raises:
        MissingGenerator: a module cannot be imported or lacks the function.
    """
    found = []
    for module, func in GENERATORS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            raise MissingGenerator(f"generator module {module} cannot be imported: {e}") from e
        fn = getattr(mod, func, None)
        if not callable(fn):
            raise MissingGenerator(f"generator {module}.{func} does not exist")
        found.append((f"{module}.{func}", fn))
    return found


def run(repo_root: Path) -> None:
    """Run every generator against ``repo_root``."""
    for name, fn in load_generators():
        fn(repo_root)
        print(f"ran {name}")


def _files(root: Path, trees: list[str]) -> set[str]:
    out = set()
    for tree in trees:
        base = root / tree
        if base.is_dir():
            out |= {
                str(p.relative_to(root))
                for p in base.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts
            }
    return out


def check(repo_root: Path) -> list[str]:
    """Files that ``make sync`` would add, change or remove under ``repo_root`` (empty: in sync)."""
    with tempfile.TemporaryDirectory(prefix="adept-codegen-") as tmp:
        scratch = Path(tmp)
        for tree in SCRATCH_TREES:
            if (repo_root / tree).is_dir():
                shutil.copytree(repo_root / tree, scratch / tree, ignore=_IGNORE)
        before = _files(scratch, SCRATCH_TREES)
        failed = []
        for name, fn in load_generators():
            try:
                fn(scratch)
            except Exception as e:  # report which generator broke, beside the drift of the others
                failed.append(f"failed: {name}: {type(e).__name__}: {e}")
        after = {str(p.relative_to(scratch)) for p in scratch.rglob("*") if p.is_file()}
        drifted = failed + [f"removed: {f}" for f in sorted(before - after)]
        for rel in sorted(after):
            real = repo_root / rel
            if not real.is_file():
                drifted.append(f"missing: {rel}")
            elif not filecmp.cmp(real, scratch / rel, shallow=False):
                drifted.append(f"changed: {rel}")
        return drifted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adept.codegen", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report drift; exit 1 if any file is stale")
    parser.add_argument(
        "--repo-root", type=Path, default=REPO_ROOT, help="repository root (default: this checkout)"
    )
    args = parser.parse_args(argv)
    root = args.repo_root.resolve()
    try:
        if args.check:
            drifted = check(root)
            if drifted:
                print(
                    "generated files are out of date (run `make sync`):",
                    *drifted,
                    sep="\n  ",
                    file=sys.stderr,
                )
                return 1
            print("generated files are up to date")
            return 0
        run(root)
    except MissingGenerator as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
