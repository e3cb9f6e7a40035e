"""Generated files stay generated: ``make sync`` output matches the checkout, and drift is detected."""

from __future__ import annotations

import shutil

import pytest

from adept import codegen


def test_checked_in_generated_files_are_up_to_date(repo_root):
    drifted = codegen.check(repo_root)
    assert drifted == [], "run `make sync`:\n" + "\n".join(drifted)


def test_check_detects_changed_missing_and_stale_files(repo_root, tmp_path):
    generators, _ = codegen.load_generators()
    if not generators:
        pytest.skip("no generator present in this checkout yet")
    shutil.copytree(repo_root / "charts", tmp_path / "charts", ignore=codegen._IGNORE)
    codegen.run(tmp_path)
    assert codegen.check(tmp_path) == []
    crds = sorted((tmp_path / "charts" / "adept" / "crds").glob("*.yaml"))
    if len(crds) < 2:
        pytest.skip("not enough generated CRDs to tamper with")
    crds[0].write_text(crds[0].read_text() + "\n# hand edit\n")
    crds[1].unlink()
    assert codegen.main(["--check", "--repo-root", str(tmp_path)]) == 1
    drifted = codegen.check(tmp_path)
    assert f"changed: {crds[0].relative_to(tmp_path)}" in drifted
    assert f"missing: {crds[1].relative_to(tmp_path)}" in drifted
    assert codegen.main(["--repo-root", str(tmp_path)]) == 0  # `make sync` repairs it
    assert codegen.check(tmp_path) == []
