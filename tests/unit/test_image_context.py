"""Every package the distribution installs reaches the images' build context and the full images.

The CLI moved to tools/ and the images' COPY of it met a .dockerignore that still listed the old packages:
the build failed only when an image was built. This reads the three files instead."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _packages() -> list[str]:
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    return [p.rstrip("*") for p in find["include"]]


def test_the_build_context_admits_every_package():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    admitted = {line[1:].strip("/") for line in lines if line.startswith("!")}
    assert set(_packages()) <= admitted, f"missing from .dockerignore: {set(_packages()) - admitted}"


def test_the_full_images_copy_every_package():
    for name in ("Containerfile", "Containerfile.cuda"):
        text = (ROOT / "images" / name).read_text()
        copied = set(re.findall(r"^COPY ([A-Za-z0-9_]+) /src/\1\s*$", text, re.M))
        assert set(_packages()) <= copied, f"{name} does not COPY {set(_packages()) - copied}"
