"""Training RayCluster: its own GPU worker group that scales to zero, and a job API Service on 8265."""

import pytest

from tests.charts.chart_render import find, one, render_objects, values_for, worker_group

pytestmark = pytest.mark.charts


def test_training_cluster_has_a_gpu_worker_group(default_objects):
    rc = one(default_objects, "RayCluster", "adept-training")
    assert rc["spec"]["enableInTreeAutoscaling"] is True
    group = worker_group(rc, "gpu-workers")
    assert group["minReplicas"] == 0 and group["maxReplicas"] >= 1
    res = group["template"]["spec"]["containers"][0]["resources"]
    assert res["limits"]["nvidia.com/gpu"] >= 1
    assert "nodeSelector" not in group["template"]["spec"]  # the nvidia.com/gpu request places it


def test_job_api_service_targets_the_training_head(default_objects):
    svc = one(default_objects, "Service", "adept-jobs")
    assert svc["spec"]["ports"][0]["port"] == 8265
    assert svc["spec"]["ports"][0]["targetPort"] == "dashboard"
    assert svc["spec"]["selector"]["app.kubernetes.io/component"] == "training"
    assert svc["spec"]["selector"]["adept.io/ray-group"] == "head"
    head = one(default_objects, "RayCluster")["spec"]["headGroupSpec"]["template"]
    assert svc["spec"]["selector"].items() <= head["metadata"]["labels"].items()
    ports = {p["name"]: p["containerPort"] for p in head["spec"]["containers"][0]["ports"]}
    assert ports["dashboard"] == 8265


def test_cpu_training_for_dev():
    rc = one(render_objects(values_for("cpu-dev")), "RayCluster")
    assert [g["groupName"] for g in rc["spec"]["workerGroupSpecs"]] == ["cpu-workers"]


def test_training_can_be_disabled():
    objs = render_objects({"training": {"enabled": False}})
    assert not find(objs, "RayCluster") and not find(objs, "Service", "adept-jobs")
