"""The CUDA image smoke is current: its recipe and constraints are what `make image-smoke VARIANT=cuda` last
passed on (images/cuda-smoke.stamp). CI runs the CPU smoke only; this keeps the CUDA one from going stale."""

from __future__ import annotations

from tests.images import cuda_stamp


def test_the_cuda_smoke_stamp_matches_the_recipe():
    stamp = cuda_stamp.read_stamp()
    assert stamp.get("recipe_sha256") == cuda_stamp.recipe_hash(), (
        "the CUDA image recipe (images/Containerfile.cuda, requirements/constraints-cuda.txt, images/build.sh) "
        "changed since `make image-smoke VARIANT=cuda` last passed: run it and commit images/cuda-smoke.stamp"
    )


def test_the_hash_covers_every_recipe_file(tmp_path):
    for rel in cuda_stamp.RECIPE:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    before = cuda_stamp.recipe_hash(tmp_path)
    for rel in cuda_stamp.RECIPE:
        (tmp_path / rel).write_text("y")
        assert cuda_stamp.recipe_hash(tmp_path) != before, rel
        (tmp_path / rel).write_text("x")


def test_copying_another_project_package_is_not_a_recipe_change(tmp_path):
    for rel in cuda_stamp.RECIPE:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("FROM base\nCOPY adept /src/adept\nRUN pip install /src\n")
    before = cuda_stamp.recipe_hash(tmp_path)
    cf = tmp_path / "images/Containerfile.cuda"
    cf.write_text("FROM base\nCOPY adept /src/adept\nCOPY tools /src/tools\nRUN pip install /src\n")
    assert cuda_stamp.recipe_hash(tmp_path) == before
    cf.write_text("FROM base\nCOPY adept /src/adept\nCOPY wheels /opt/wheels\nRUN pip install /src\n")
    assert cuda_stamp.recipe_hash(tmp_path) != before  # copying something else into the image is a change
    cf.write_text("FROM base\nCOPY adept /src/adept\nRUN pip install /src gcc\n")
    assert cuda_stamp.recipe_hash(tmp_path) != before
