"""Generated files stay generated: ``make sync`` output matches the checkout, and drift is detected."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from adept import codegen


def test_checked_in_generated_files_are_up_to_date(repo_root):
    drifted = codegen.check(repo_root)
    assert drifted == [], "run `make sync`:\n" + "\n".join(drifted)


def write_demo(repo_root: Path) -> list[Path]:
    """A generator of the same shape as the real ones: owns charts/demo/, removes what it no longer makes."""
    out = Path(repo_root) / "charts" / "demo"
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.yaml"):
        if old.name not in ("a.yaml", "b.yaml"):
            old.unlink()
    for name in ("a.yaml", "b.yaml"):
        (out / name).write_text(f"# generated\nname: {name}\n")
    return [out / "a.yaml", out / "b.yaml"]


def broken(repo_root: Path) -> None:
    raise FileNotFoundError("values.yaml")


def test_check_reports_changed_missing_stale_and_failing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(codegen, "GENERATORS", [(__name__, "write_demo")])
    (tmp_path / "charts").mkdir()
    assert codegen.main(["--repo-root", str(tmp_path)]) == 0
    assert f"ran {__name__}.write_demo" in capsys.readouterr().out
    assert codegen.check(tmp_path) == []
    demo = tmp_path / "charts" / "demo"
    (demo / "a.yaml").write_text("hand edit\n")
    (demo / "b.yaml").unlink()
    (demo / "stale.yaml").write_text("old\n")
    assert sorted(codegen.check(tmp_path)) == [
        "changed: charts/demo/a.yaml",
        "missing: charts/demo/b.yaml",
        "removed: charts/demo/stale.yaml",
    ]
    assert codegen.main(["--check", "--repo-root", str(tmp_path)]) == 1
    assert "charts/demo/a.yaml" in capsys.readouterr().err
    assert codegen.main(["--repo-root", str(tmp_path)]) == 0  # `make sync` repairs it
    assert codegen.check(tmp_path) == []
    monkeypatch.setattr(codegen, "GENERATORS", [(__name__, "broken")])
    assert codegen.check(tmp_path)[0].startswith(f"failed: {__name__}.broken: FileNotFoundError")


@pytest.mark.parametrize(
    ("generator", "message"),
    [
        ((__name__, "absent_generator"), f"generator {__name__}.absent_generator does not exist"),
        (("operators.no_such_gen", "write"), "generator module operators.no_such_gen cannot be imported"),
        ((__name__, "BASE_NAME"), f"generator {__name__}.BASE_NAME does not exist"),  # not a function
    ],
)
def test_a_missing_generator_is_an_error_and_nothing_is_written(
    tmp_path, monkeypatch, capsys, generator, message
):
    monkeypatch.setattr(codegen, "GENERATORS", [(__name__, "write_demo"), generator])
    (tmp_path / "charts").mkdir()
    with pytest.raises(codegen.MissingGenerator, match=re.escape(message)):
        codegen.check(tmp_path)
    assert codegen.main(["--repo-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "charts" / "demo").exists()  # no generator ran: none half-applied
    assert codegen.main(["--check", "--repo-root", str(tmp_path)]) == 2


BASE_NAME = "a constant, not a generator"
