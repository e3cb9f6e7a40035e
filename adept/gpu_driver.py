"""Start-up check: the node's NVIDIA driver is new enough for the CUDA build of torch in this image.

torch 2.13's PyPI wheel is built for CUDA 13.0, which needs driver R580 or newer. An older driver does not
fail at start: it fails deep inside the first CUDA call (``cudaErrorInsufficientDriver``, or vLLM's worker
dying without a word). GPU pods of the chart run this first (an init container,
``python -m adept.gpu_driver``), so the pod's status says which driver it needs and which it found.

The node's driver version comes from ``/proc/driver/nvidia/version``, which the kernel module provides to
every container on the node (no GPU allocation needed).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from adept.errors import Unavailable

PROC_VERSION = Path("/proc/driver/nvidia/version")
# Oldest Linux driver branch per CUDA toolkit minor (NVIDIA's CUDA release notes, table 3; "minor version
# compatibility" would let an older branch run some kernels, but not PTX JIT, Triton or vLLM's kernels).
MIN_DRIVER = {
    "12.4": 550,
    "12.6": 560,
    "12.8": 570,
    "12.9": 575,
    "13.0": 580,
    "13.1": 580,
    "13.2": 580,
}


class DriverTooOld(Unavailable):
    """The node's NVIDIA driver cannot run this image's CUDA build."""


def required_driver(cuda: str) -> int:
    """The oldest driver branch for a CUDA version (``"13.0"``); unknown newer ones need the newest known."""
    major_minor = ".".join(cuda.split(".")[:2])
    if major_minor in MIN_DRIVER:
        return MIN_DRIVER[major_minor]
    known = sorted(MIN_DRIVER, key=lambda v: tuple(map(int, v.split("."))))
    if tuple(map(int, major_minor.split("."))) > tuple(map(int, known[-1].split("."))):
        return MIN_DRIVER[known[-1]]
    raise ValueError(f"no driver requirement known for CUDA {cuda}")


def node_driver(path: Path = PROC_VERSION) -> str | None:
    """The loaded kernel module's version (``580.65.06``), or None when no NVIDIA driver is loaded."""
    try:
        text = path.read_text()
    except OSError:
        return None
    m = re.search(r"Kernel Module(?: for \S+)?\s+([0-9]+(?:\.[0-9]+)+)", text) or re.search(
        r"\b([0-9]{3}\.[0-9]+(?:\.[0-9]+)?)\b", text
    )
    return m.group(1) if m else None


def image_cuda() -> tuple[str, str] | None:
    """(torch version, CUDA version) of this image's torch, or None for a CPU build."""
    import torch

    return (torch.__version__, torch.version.cuda) if torch.version.cuda else None


def check_driver(cuda: str, *, torch_version: str = "torch", path: Path = PROC_VERSION) -> str:
    """Return the node's driver version if it can run ``cuda``.

    Raises:
        DriverTooOld: no driver loaded, or one older than ``required_driver(cuda)``; the message names both.
    """
    need = required_driver(cuda)
    have = node_driver(path)
    if have is None:
        raise DriverTooOld(
            f"no NVIDIA driver found ({path} is missing): {torch_version} (CUDA {cuda}) needs driver >= {need} "
            "on a node with a GPU (the NVIDIA GPU Operator installs it)"
        )
    if int(have.split(".")[0]) < need:
        raise DriverTooOld(
            f"this node's NVIDIA driver {have} is too old: {torch_version} (CUDA {cuda}) needs driver >= {need}. "
            f"Upgrade the node's driver (GPU Operator `driver.version`) to R{need} or newer, or schedule the GPU "
            "workers onto nodes that have it."
        )
    return have


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adept.gpu_driver", description=__doc__.splitlines()[0])
    parser.add_argument("--version-file", type=Path, default=PROC_VERSION, help="the driver's version file")
    parser.add_argument("--cuda", help="CUDA version to check for (default: this image's torch build)")
    args = parser.parse_args(argv)
    torch_version = "torch"
    cuda = args.cuda
    if cuda is None:
        found = image_cuda()
        if found is None:
            print("adept.gpu_driver: torch is a CPU build here; nothing to check", flush=True)
            return 0
        torch_version, cuda = f"torch {found[0]}", found[1]
    try:
        have = check_driver(cuda, torch_version=torch_version, path=args.version_file)
    except DriverTooOld as e:
        print(f"error: {e.message}", file=sys.stderr, flush=True)
        return 1
    print(
        f"NVIDIA driver {have} runs {torch_version} (CUDA {cuda}, needs >= {required_driver(cuda)})",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
