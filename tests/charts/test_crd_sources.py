"""The CRDs the chart tests validate against are found, or the tests fail saying where they looked.

A missing CRD folder used to skip the validation tests, which hid the day the folder went away.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.charts import chart_render

pytestmark = pytest.mark.charts


@pytest.fixture
def fresh_lookup(monkeypatch):
    monkeypatch.delenv("SHARED_DIR", raising=False)
    chart_render.shared_dir.cache_clear()
    yield monkeypatch
    chart_render.shared_dir.cache_clear()


def kuberay_crds(shared: Path) -> Path:
    crds = shared / "crds" / "kuberay"
    crds.mkdir(parents=True)
    (crds / "ray.io_rayclusters.yaml").write_text("kind: CustomResourceDefinition\n")
    return shared


def test_this_checkout_finds_the_kuberay_crds(fresh_lookup):
    assert any((chart_render.shared_dir() / "crds" / "kuberay").glob("*.yaml"))


def test_shared_dir_env_wins_and_a_wrong_one_fails_naming_it(fresh_lookup, tmp_path):
    fresh_lookup.setenv("SHARED_DIR", str(kuberay_crds(tmp_path / "mine")))
    assert chart_render.shared_dir() == tmp_path / "mine"
    chart_render.shared_dir.cache_clear()
    fresh_lookup.setenv("SHARED_DIR", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="set SHARED_DIR") as e:
        chart_render.shared_dir()
    assert str(tmp_path / "empty" / "crds" / "kuberay") in str(e.value)


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_a_worktree_elsewhere_finds_the_main_checkouts_shared_dir(fresh_lookup, tmp_path):
    main = tmp_path / "main"
    main.mkdir()
    git("init", "-q", cwd=main)
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "x", cwd=main)
    kuberay_crds(tmp_path / "shared")  # beside the main checkout, as on the build machines
    worktree = tmp_path / "elsewhere" / "wt"
    git("worktree", "add", "-q", str(worktree), cwd=main)
    fresh_lookup.setattr(chart_render, "REPO_ROOT", worktree)
    assert not (worktree.parent / "shared").exists()
    assert chart_render.shared_dir() == (tmp_path / "shared").resolve()


def test_no_crds_anywhere_fails_listing_every_place(fresh_lookup, tmp_path):
    lonely = tmp_path / "sdist"
    lonely.mkdir()  # not a git checkout, nothing beside it
    fresh_lookup.setattr(chart_render, "REPO_ROOT", lonely)
    with pytest.raises(FileNotFoundError) as e:
        chart_render.shared_dir()
    assert str(tmp_path / "shared" / "crds" / "kuberay") in str(e.value)
    assert str(lonely / "shared" / "crds" / "kuberay") in str(e.value)


def test_an_empty_chart_crds_folder_fails(monkeypatch, tmp_path):
    monkeypatch.setattr(chart_render, "OUR_CRDS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="make sync"):
        chart_render.our_crd_files()
