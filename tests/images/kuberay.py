"""What the KubeRay operator makes of a rendered Ray head group (mirrored at v1.5.1; the chart now pins 1.7.0).

The chart renders a head group (``rayStartParams``, group ``resources``, a container); KubeRay turns it into
the pod's ``ray start`` command, extra environment and probes. The image smoke test runs exactly that, so
this module mirrors ray-operator/controllers/ray/common/pod.go at v1.5.1: ``updateRayStartParamsResources``,
``setMissingRayStartParams``, ``generateRayStartCommand``/``convertParamMap``, ``BuildPod`` (``ulimit``
prefix, ``/bin/bash -c --``), ``setContainerEnvVars`` (RayService head) and ``initLivenessAndReadinessProbe``
(with utils/constant.go's ports, paths and timeouts). Only the head's code paths are mirrored. Since 1.6.0
KubeRay adds RAY_AUTH_MODE/RAY_AUTH_TOKEN only where the container does not set them (shared/crds/kuberay/
README.md); the chart sets both itself, so the head's environment here is the same on 1.7.0.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

DASHBOARD_PORT = 8265
DASHBOARD_AGENT_PORT = 52365
METRICS_PORT = 8080
GCS_PORT = 6379
# utils/constant.go: DefaultReadinessProbeTimeoutSeconds, DefaultReadinessProbeFailureThreshold.
PROBE_TIMEOUT_S = 2
PROBE_FAILURE_THRESHOLD = 10
WGET_HEALTH = "wget --tries 1 -T {timeout} -q -O- http://localhost:{port}/{path} | grep success"
_SUFFIX = {
    "": 1,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def quantity(value: str | int | float) -> float:
    """A Kubernetes quantity (``500m``, ``4Gi``, ``2``) as a number."""
    m = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value))
    if not m or m[2] not in _SUFFIX:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    return float(m[1]) * _SUFFIX[m[2]]


def _go_number(x: float) -> str:
    # encoding/json writes integral float64s without a fraction.
    return str(int(x)) if x == int(x) else repr(x)


def head_start_params(cluster: dict[str, Any]) -> dict[str, str]:
    """The complete ``rayStartParams`` of the head pod KubeRay creates for a ``rayClusterConfig``."""
    group = cluster["headGroupSpec"]
    params = {k: str(v) for k, v in group.get("rayStartParams", {}).items()}
    custom: dict[str, float] = {}
    for name, value in (group.get("resources") or {}).items():  # updateRayStartParamsResources
        lowered, q = name.lower(), quantity(value)
        if lowered == "cpu":
            params["num-cpus"] = str(math.ceil(q))
        elif lowered == "memory":
            params["memory"] = str(math.ceil(q))
        elif lowered.endswith("gpu"):
            params["num-gpus"] = str(math.ceil(q))
        else:
            custom[name] = q
    if custom:
        body = ",".join(f"{json.dumps(k)}:{_go_number(v)}" for k, v in sorted(custom.items()))
        params["resources"] = "'{" + body + "}'"
    params.setdefault("dashboard-host", "0.0.0.0")  # setMissingRayStartParams (head)
    params.setdefault("metrics-export-port", str(METRICS_PORT))
    params["block"] = "true"
    params.setdefault("dashboard-agent-listen-port", str(DASHBOARD_AGENT_PORT))
    if cluster.get("enableInTreeAutoscaling"):  # DefaultHeadPodTemplate: the autoscaler sidecar monitors
        params["no-monitor"] = "true"
    limits = group["template"]["spec"]["containers"][0].get("resources", {}).get("limits", {})
    if "num-cpus" not in params and "cpu" in limits:  # generateRayStartCommand
        params["num-cpus"] = str(math.ceil(quantity(limits["cpu"])))
    if "memory" not in params and "memory" in limits:
        params["memory"] = str(math.ceil(quantity(limits["memory"])))
    return params


def ray_start_command(params: dict[str, str]) -> str:
    """``ray start --head`` with the params as KubeRay's convertParamMap writes them (sorted)."""
    flags = ""
    for key in sorted(params):
        value = params[key]
        if value.lower() in ("true", "false") and key not in ("log-color", "include-dashboard"):
            if value.lower() == "true":
                flags += f" --{key} "
        else:
            flags += f" --{key}={value} "
    return f"ray start --head {flags}"


def head_container_command(cluster: dict[str, Any]) -> tuple[list[str], str]:
    """(the container's command and args, the bare ``ray start`` line) of the head pod."""
    start = ray_start_command(head_start_params(cluster))
    return ["/bin/bash", "-c", "--", f"ulimit -n 65536; {start}"], start


def head_env(start: str, cluster: str, pod: str) -> dict[str, str]:
    """The variables setContainerEnvVars adds to a RayService head container (field refs resolved)."""
    return {
        "RAY_CLUSTER_NAME": cluster,
        "RAY_CLOUD_INSTANCE_ID": pod,
        "RAY_NODE_TYPE_NAME": "headgroup",
        "KUBERAY_GEN_RAY_START_CMD": start,
        "RAY_PORT": str(GCS_PORT),
        "RAY_TIMEOUT_MS_TASK_WAIT_FOR_DEATH_INFO": "0",
        "RAY_GCS_SERVER_REQUEST_TIMEOUT_SECONDS": "5",
        "RAY_SERVE_KV_TIMEOUT_S": "5",
        "RAY_ADDRESS": f"127.0.0.1:{GCS_PORT}",
        "RAY_USAGE_STATS_KUBERAY_IN_USE": "1",
        "RAY_USAGE_STATS_EXTRA_TAGS": "kuberay_version=v1.5.1;kuberay_crd=RayService",
        "RAY_DASHBOARD_ENABLE_K8S_DISK_USAGE": "1",
    }


def head_probe_command() -> list[str]:
    """The head's liveness/readiness probe: raylet (dashboard agent) and GCS health, through wget and grep."""
    raylet = WGET_HEALTH.format(
        timeout=PROBE_TIMEOUT_S, port=DASHBOARD_AGENT_PORT, path="api/local_raylet_healthz"
    )
    gcs = WGET_HEALTH.format(timeout=PROBE_FAILURE_THRESHOLD, port=DASHBOARD_PORT, path="api/gcs_healthz")
    return ["bash", "-c", f"{raylet} && {gcs}"]


def serve_deploy_url() -> str:
    """Where KubeRay PUTs ``serveConfigV2`` (as JSON) and reads application status (dashboardclient)."""
    return f"http://127.0.0.1:{DASHBOARD_PORT}/api/serve/applications/"
