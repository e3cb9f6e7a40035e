"""The CUDA smoke stamp: which CUDA recipe `make image-smoke VARIANT=cuda` last passed on.

CI runs the CPU image smoke only (the CUDA image pulls many GB of wheels). To keep the CUDA smoke from going
stale, its recipe and constraints are hashed; a passing CUDA smoke writes the hash to images/cuda-smoke.stamp
(commit it), and a unit test (tests/unit/test_cuda_smoke_stamp.py) fails whenever the recipe's hash differs
from the stamp's: change the recipe or its constraints, and CI stays red until the CUDA smoke has passed on it.

    python -m tests.images.cuda_stamp check|write
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
STAMP = REPO_ROOT / "images" / "cuda-smoke.stamp"
# What the CUDA image is made of: its recipe, the constraints that pin its wheels, and the build script.
RECIPE = ("images/Containerfile.cuda", "requirements/constraints-cuda.txt", "images/build.sh")


# Lines that copy one of the project's own packages into the build (`COPY tools /src/tools`): they follow the
# source layout, which CI's CPU image already builds and smokes on every run; what they copy is code, not a
# dependency. Everything else (base, apt and pip steps, constraints, the build script) is the recipe.
_SOURCE_COPY = re.compile(rb"^COPY ([A-Za-z0-9_]+) /src/\1[ \t]*\r?\n", re.M)


def recipe_hash(root: Path = REPO_ROOT) -> str:
    digest = hashlib.sha256()
    for rel in RECIPE:
        digest.update(rel.encode() + b"\0" + _SOURCE_COPY.sub(b"", (root / rel).read_bytes()) + b"\0")
    return digest.hexdigest()


def read_stamp(path: Path = STAMP) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def write_stamp(extra: dict | None = None, path: Path = STAMP) -> dict:
    stamp = {
        "recipe_sha256": recipe_hash(),
        "files": list(RECIPE),
        "passed_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **(extra or {}),
    }
    path.write_text(json.dumps(stamp, indent=2) + "\n")
    return stamp


def main(argv: list[str]) -> int:
    if argv[:1] == ["write"]:
        extra = json.loads(argv[1]) if len(argv) > 1 else {}
        print(json.dumps(write_stamp(extra)))
        return 0
    stamp = read_stamp()
    if stamp.get("recipe_sha256") != recipe_hash():
        print(
            "the CUDA image recipe changed since its last smoke: run `make image-smoke VARIANT=cuda` and commit "
            "images/cuda-smoke.stamp",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
