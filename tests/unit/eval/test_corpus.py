"""``--corpus`` file naming matches what the knowledge base derives document ids from."""

from __future__ import annotations

from pathlib import Path

import pytest

from adept.errors import NotFound
from tools.eval.runner import corpus_files


def test_folder_files_are_named_relative_to_the_folder_parent(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "a.md").write_text("# A")
    (docs / "sub" / "b.txt").write_text("B")
    (docs / ".hidden.md").write_text("no")
    single = tmp_path / "c.md"
    single.write_text("# C")
    names = [n for n, _ in corpus_files([docs, single])]
    assert names == ["docs/a.md", "docs/sub/b.txt", "c.md"]


def test_missing_corpus_path(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="corpus path not found"):
        corpus_files([tmp_path / "absent"])
