"""The CUDA image, checked without a GPU (`make image-smoke VARIANT=cuda`).

What a GPU worker needs before it ever touches a device: a C compiler that Triton finds and can build its
launcher with (vLLM's LoRA kernels and torch.compile build one at the first kernel; without gcc the LLM
replicas died at start), `import vllm`, the application building with `llm.engine: vllm` up to the point
where it needs a device (and failing there, saying so, not on an import), and the start-up driver check
naming the driver the image's torch needs when the node's is older.

A success writes images/cuda-smoke.stamp (the hash of the recipe and its constraints); a unit test
(tests/unit/kernel/test_cuda_smoke_stamp.py) fails when the recipe changed since, so the CUDA smoke runs
whenever its recipe or constraints change.
"""

from __future__ import annotations

import json
import textwrap

import pytest

from tests.charts.chart_render import one, values_for
from tests.images.conftest import rendered
from tests.images.containers import Container, image_exists

pytestmark = [pytest.mark.image, pytest.mark.cuda_image]


@pytest.fixture(scope="module")
def cuda_image() -> str:
    objs = list(rendered(values_for("gpu-prod")).values())
    rs = one(objs, "RayService")
    gpu = next(
        g for g in rs["spec"]["rayClusterConfig"]["workerGroupSpecs"] if g["groupName"] == "gpu-workers"
    )
    image = gpu["template"]["spec"]["containers"][0]["image"]
    assert image.endswith("-cuda")
    assert image_exists(image), f"{image} is not built: run `make image VARIANT=cuda` first"
    return image


@pytest.fixture(scope="module")
def box(cuda_image):
    c = Container(cuda_image)
    yield c
    c.remove()


def py(box: Container, code: str, timeout: float = 600):
    return box.run(["python", "-c", textwrap.dedent(code)], timeout=timeout)


def test_torch_is_the_cuda_build_and_vllm_imports(box):
    r = py(
        box,
        """
        import json, torch, vllm, bitsandbytes, deepspeed
        print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda, "vllm": vllm.__version__}))
        """,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    found = json.loads(r.stdout.strip().splitlines()[-1])
    assert found["torch"].startswith("2.13.0") and found["cuda"], found
    assert found["vllm"] == "0.29.0", found


def test_triton_finds_a_compiler_and_builds_its_launcher(box):
    """What Triton does at the first kernel: compile a small C extension against Python's headers."""
    r = py(
        box,
        """
        import inspect, os, shutil, tempfile, triton
        from triton.runtime import build
        cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
        assert cc, "no C compiler on PATH"
        src_dir = tempfile.mkdtemp()
        src = os.path.join(src_dir, "launcher.c")
        with open(src, "w") as f:
            f.write('#include <Python.h>\\nstatic struct PyModuleDef m = {PyModuleDef_HEAD_INIT, "launcher", NULL, -1, NULL};\\n'
                    'PyMODINIT_FUNC PyInit_launcher(void) { return PyModule_Create(&m); }\\n')
        params = inspect.signature(build._build).parameters
        kwargs = {"ccflags": []} if "ccflags" in params else {}
        so = build._build("launcher", src, src_dir, [], [], [], **kwargs)
        print("built", so, "with", cc, "triton", triton.__version__)
        """,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "built" in r.stdout


def test_the_app_builds_with_vllm_up_to_the_device(box, tiny_phi3):
    """ServingConfig with engine vllm validates, the Serve app builds, and the engine stops at the missing GPU
    (a tiny random Phi-3 stands in for the weights: the CUDA image carries no bundled model)."""
    r = box.run(
        [
            "python",
            "-c",
            textwrap.dedent(
                """
        from adept.config.platform import PlatformConfig
        from adept.config.serving import ServingConfig
        from services.app import build_app
        from services.llm.factory import build_engine

        cfg = ServingConfig.model_validate({
            "platform": {"model": "bundled:smollm2-135m-instruct", "device": "cuda", "dtype": "bfloat16",
                         "data_dir": "/tmp/adept"},
            "llm": {"engine": "vllm"},
            "deployments": {"llm": {"ray_actor_options": {"num_gpus": 1}}},
        })
        app = build_app(cfg.model_dump(mode="json"))
        print("app built:", type(app).__name__)
        from pathlib import Path
        try:
            build_engine(cfg.platform, cfg.llm, model_path=Path("/model"))
        except ImportError as e:
            raise SystemExit(f"import failed: {e!r}")
        except Exception as e:
            print("engine stopped at:", type(e).__name__, str(e)[:500])
        else:
            raise SystemExit("a vLLM engine started without a GPU")
        """
            ),
        ],
        volumes={str(tiny_phi3): "/model"},
        timeout=600,
    )
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    assert "app built" in r.stdout
    stopped = r.stdout.split("engine stopped at:", 1)[1].lower()
    assert any(w in stopped for w in ("cuda", "gpu", "device", "nvidia", "driver")), stopped
    print("the vLLM engine stopped at:", stopped[:300])


def test_the_driver_check_names_the_driver_needed(box, tmp_path):
    old = tmp_path / "version"
    old.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.86.15  Fri Jan 24 2025\n")
    old.chmod(0o644)
    tmp_path.chmod(0o755)
    r = box.run(
        ["python", "-m", "adept.gpu_driver", "--version-file", "/check/version"],
        volumes={str(tmp_path): "/check"},
    )
    assert r.returncode == 1
    assert "570.86.15 is too old: torch 2.13.0" in r.stderr and "needs driver >= 580" in r.stderr, r.stderr
    r = box.run(["python", "-m", "adept.gpu_driver"])  # no driver on this machine at all
    assert r.returncode == 1 and "no NVIDIA driver found" in r.stderr, r.stderr
