"""Fixtures of the image smoke test (``make image-smoke``): the built images, the rendered chart, scratch volumes.

The test runs what the chart's pods run, from the images ``make image`` built, in a private network and PID
namespace that ``make image-smoke`` sets up: Ray's fixed ports (6379, 8265, 8000, 52365) cannot collide
with anything else on the machine, nothing listens beyond that namespace, and no process outlives it.
"""

from __future__ import annotations

import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.charts.chart_render import one, render, values_for
from tests.images.containers import image_exists

pytestmark = pytest.mark.image
SHM = Path("/dev/shm")


def _private_network() -> bool:
    """True when this process sees only the loopback interface (``unshare --net``)."""
    lines = Path("/proc/net/dev").read_text().splitlines()[2:]
    return {line.split(":", 1)[0].strip() for line in lines} == {"lo"}


@pytest.fixture(scope="session", autouse=True)
def private_namespaces() -> None:
    if not _private_network():
        pytest.fail(
            "the image smoke test runs only through `make image-smoke` (private network and PID namespaces)"
        )


@pytest.fixture(scope="session")
def scratch() -> Iterator[Path]:
    """Host directories that stand in for the pods' volumes (memory-backed ones mirrored under /dev/shm)."""
    root = Path(tempfile.mkdtemp(prefix="adept-smoke-", dir="/tmp"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(SHM / root.name, ignore_errors=True)


@pytest.fixture(scope="session")
def admin_key() -> str:
    """What the chart's generated admin Secret would hold."""
    return "adept-admin-" + secrets.token_urlsafe(24)


def rendered(values: dict[str, Any]) -> dict[str, Any]:
    """Objects of the chart rendered by Helm's engine, by (kind, name)."""
    out = {}
    for path, text in render(values).items():
        if path.endswith(".yaml"):
            for doc in yaml.safe_load_all(text):
                if doc:
                    out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out


@pytest.fixture(scope="session")
def cpu_dev() -> dict[str, Any]:
    """The chart as `helm template -f values-cpu-dev.yaml` renders it."""
    return rendered(values_for("cpu-dev"))


@pytest.fixture(scope="session")
def cpu_image(cpu_dev) -> str:
    """The image the chart's Ray head runs, which `make image` must have built."""
    image = one(list(cpu_dev.values()), "RayService")["spec"]["rayClusterConfig"]["headGroupSpec"][
        "template"
    ]["spec"]["containers"][0]["image"]
    assert image_exists(image), f"{image} is not built: run `make image` first"
    return image


@pytest.fixture(scope="session")
def operator_image(cpu_dev) -> str:
    image = cpu_dev[("Deployment", "adept-operator")]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image_exists(image), f"{image} is not built: run `make image` first"
    return image


def container_env(container: dict[str, Any], secrets_: dict[tuple[str, str], str]) -> dict[str, str]:
    """A rendered container's env with Secret references resolved and ``$(VAR)`` references to earlier
    variables expanded (what the kubelet would inject)."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                lambda m: env.get(m.group(1), m.group(0)),
                str(item["value"]),
            )
            continue
        ref = item["valueFrom"]
        if "secretKeyRef" in ref:
            key = (ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"])
            env[item["name"]] = secrets_[key]
        elif "fieldRef" in ref and ref["fieldRef"]["fieldPath"] == "metadata.namespace":
            env[item["name"]] = "adept"
        else:
            raise AssertionError(f"no stand-in for env {item}")
    return env


def pod_volumes(pod: dict[str, Any], root: Path) -> dict[str, Path]:
    """A host directory per volume of a rendered pod: memory-backed ones under /dev/shm, like the kubelet's."""
    from tests.images.containers import owned_dir

    out = {}
    for vol in pod["volumes"]:
        memory = (vol.get("emptyDir") or {}).get("medium") == "Memory"
        base = SHM / root.relative_to("/tmp") if memory else root
        out[vol["name"]] = owned_dir(base, vol["name"])
    return out


def mounts(container: dict[str, Any], volumes: dict[str, Path]) -> dict[str, str]:
    """``{host dir: mountPath}`` for a rendered container's volumeMounts."""
    return {str(volumes[m["name"]]): m["mountPath"] for m in container.get("volumeMounts", [])}
