"""Placement simulation of the rendered chart: every shipped training config, every README example and every
Serve deployment at its max replicas fits the worker groups each values file renders (``adept.placement``).

The cluster shape is read from the rendered KubeRay objects the way KubeRay turns them into ``ray start``
(num-cpus, else the CPU limit rounded up; ``nvidia.com/gpu``; the group's ``resources``) and must equal the
``training_shape`` the chart hands the gateway and the operator.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from adept.config.cluster_shape import ClusterShape, NodeGroupShape
from adept.config.training import FineTuneJobConfig, WorkersSection
from adept.placement import (
    DoesNotFit,
    check_job_fits,
    default_job_resources,
    fit_job,
    place,
    place_job,
)
from tests.charts.chart_render import CHART_DIR, REPO_ROOT, VALUES_FILES, find, one, render, render_objects, values_for

pytestmark = pytest.mark.charts

TRAINING_CONFIGS = sorted((REPO_ROOT / "training" / "configs").glob("*.yaml"))
GPU_PROFILES = ("default", "gpu-prod")


def _group_shape(name: str, group: dict, *, replicas: tuple[int, int]) -> NodeGroupShape:
    container = group["template"]["spec"]["containers"][0]
    limits = container["resources"]["limits"]
    params = group.get("rayStartParams") or {}
    return NodeGroupShape(
        name=name,
        cpus=params.get("num-cpus", limits["cpu"]),
        gpus=params.get("num-gpus", limits.get("nvidia.com/gpu", 0)),
        resources=group.get("resources") or {},
        min_replicas=replicas[0],
        max_replicas=replicas[1],
    )


def shape_of(obj: dict) -> ClusterShape:
    """What KubeRay makes of a rendered RayCluster / RayService's cluster."""
    spec = obj["spec"]["rayClusterConfig"] if obj["kind"] == "RayService" else obj["spec"]
    head = _group_shape("head", spec["headGroupSpec"], replicas=(1, 1))
    groups = [
        _group_shape(g["groupName"], g, replicas=(g["minReplicas"], g["maxReplicas"]))
        for g in spec.get("workerGroupSpecs") or []
    ]
    return ClusterShape(head=head, groups=groups)


def training_profiles() -> list[str]:
    return [p for p in sorted(VALUES_FILES) if find(render_objects(values_for(p)), "RayCluster")]


@pytest.fixture(scope="module", params=["default", "cpu-dev", "gpu-prod"])
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, render_objects(values_for(request.param))


def serve_args(objs: list[dict]) -> dict:
    rs = one(objs, "RayService")
    return yaml.safe_load(rs["spec"]["serveConfigV2"])["applications"][0]["args"]


def test_the_shape_the_chart_hands_on_is_what_kuberay_runs(rendered):
    _, objs = rendered
    derived = shape_of(one(objs, "RayCluster"))
    platform = serve_args(objs)["platform"]
    assert ClusterShape.model_validate(platform["training_shape"]) == derived
    dep = one(objs, "Deployment")
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert ClusterShape.model_validate(json.loads(env["ADEPT_TRAINING_SHAPE"])) == derived
    assert derived.head.cpus == 0, "job code (drivers) must never run on the training head"


def load_config(path: Path) -> FineTuneJobConfig:
    return FineTuneJobConfig.model_validate(yaml.safe_load(path.read_text()))


@pytest.mark.parametrize("config", TRAINING_CONFIGS, ids=lambda p: p.name)
def test_every_shipped_training_config_fits_where_its_resources_exist(rendered, config):
    profile, objs = rendered
    shape = shape_of(one(objs, "RayCluster"))
    job = load_config(config)
    needs_gpu = job.workers.use_gpu
    if needs_gpu and not shape.gpus_per_node():
        with pytest.raises(DoesNotFit, match="GPU"):
            check_job_fits(shape, job.workers)
        return
    placed = place_job(shape, job.workers)
    assert placed.where("the job's driver") != "head"
    for group in shape.groups:
        assert placed.count(group.name) <= group.max_replicas


def readme_examples() -> list[tuple[str, dict]]:
    """FineTuneJob resources in the READMEs (their `spec.config`) and the configs their commands submit."""
    out = []
    for doc in (REPO_ROOT / "README.md", CHART_DIR / "README.md"):
        text = doc.read_text()
        for block in re.findall(r"```[\w-]*\n(.*?)```", text, re.S):
            for chunk in re.findall(r"(apiVersion: adept\.dev/v1alpha1\nkind: FineTuneJob\n.*?)(?:\nYAML|\Z)", block, re.S):
                obj = yaml.safe_load(chunk)
                out.append((f"{doc.name}: FineTuneJob {obj['metadata']['name']}", obj["spec"]))
            for cfg in re.findall(r"ray job submit[^\n]*(?:\\\n[^\n]*)*--config (training/configs/[\w.-]+)", block):
                out.append((f"{doc.name}: ray job submit {cfg}", {"file": cfg}))
    return out


def test_the_readmes_have_examples_to_place():
    names = [n for n, _ in readme_examples()]
    assert any("FineTuneJob" in n for n in names) and any("ray job submit" in n for n in names), names


@pytest.mark.parametrize("profile", ["default", "cpu-dev", "gpu-prod"])
def test_every_readme_example_fits_and_trains_on_gpus_where_there_are_some(profile):
    shape = shape_of(one(render_objects(values_for(profile)), "RayCluster"))
    gpus = shape.gpus_per_node() > 0
    for name, example in readme_examples():
        if "file" in example:
            job = load_config(REPO_ROOT / example["file"])
            if job.workers.use_gpu and not gpus:
                with pytest.raises(DoesNotFit):
                    fit_job(job, shape)
                continue
        else:
            job = FineTuneJobConfig.model_validate(
                {**example["config"], "tenant": example["tenant"], "adapter": example["adapter"]}
            )
        job = fit_job(job, shape)  # a job naming no workers gets the training group's
        placed = place_job(shape, job.workers)
        assert placed.where("the job's driver") != "head", name
        if "file" not in example:
            assert job.workers.use_gpu is gpus, name
            if gpus:
                assert job.workers.resources_per_worker["GPU"] == 1, name


def test_a_job_naming_no_workers_trains_on_the_gpu_group():
    shape = shape_of(one(render_objects(values_for("gpu-prod")), "RayCluster"))
    workers = default_job_resources(shape)
    assert workers == WorkersSection(num_workers=1, use_gpu=True, resources_per_worker={"CPU": 7.0, "GPU": 1.0})
    assert place_job(shape, workers).count("gpu-workers") == 1  # driver beside the worker


def test_a_job_that_can_never_fit_is_refused_naming_what_is_missing():
    shape = shape_of(one(render_objects(values_for("gpu-prod")), "RayCluster"))
    too_many = WorkersSection(num_workers=5, use_gpu=True, resources_per_worker={"CPU": 7, "GPU": 1})
    with pytest.raises(DoesNotFit, match=r"GPU: 1.*gpu-workers: 4 x") as e:
        check_job_fits(shape, too_many)
    assert e.value.status == 400 and e.value.param == "workers"
    # The trap: full-pod workers plus the driver need five pods against maxReplicas 4.
    full = WorkersSection(num_workers=4, use_gpu=True, resources_per_worker={"CPU": 8, "GPU": 1})
    with pytest.raises(DoesNotFit, match="the job's driver"):
        check_job_fits(shape, full)


def test_the_training_group_scales_from_zero_and_back():
    for profile in GPU_PROFILES:
        objs = render_objects(values_for(profile))
        rc = one(objs, "RayCluster")
        gpu = next(g for g in rc["spec"]["workerGroupSpecs"] if g["groupName"] == "gpu-workers")
        assert gpu["minReplicas"] == 0 and gpu["replicas"] == 0, profile
        assert rc["spec"]["enableInTreeAutoscaling"] is True
        assert rc["spec"]["autoscalerOptions"]["idleTimeoutSeconds"] > 0
        shape = shape_of(rc)
        job = load_config(REPO_ROOT / "training/configs/phi3-mini-qlora-1gpu.yaml")
        assert place_job(shape, job.workers).count("gpu-workers") == 1  # from zero: one pod for one GPU
    assert "idleTimeoutSeconds" in (CHART_DIR / "README.md").read_text()


def serve_demands(objs: list[dict]) -> list[tuple[str, dict]]:
    """Every Serve replica at its most: max_replicas (autoscaling) or num_replicas, with its actor resources."""
    cfg = yaml.safe_load(one(objs, "RayService")["spec"]["serveConfigV2"])
    out = []
    for d in cfg["applications"][0]["deployments"]:
        auto = d.get("autoscaling_config") or {}
        n = auto.get("max_replicas") or d.get("num_replicas") or 1
        actor = d.get("ray_actor_options") or {}
        bundle = {"CPU": float(actor.get("num_cpus", 1)), "GPU": float(actor.get("num_gpus", 0) or 0)}
        bundle.update({k: float(v) for k, v in (actor.get("resources") or {}).items()})
        out += [(f"{d['name']} replica {i}", bundle) for i in range(n)]
    return out


def test_serve_max_replicas_fit_kuberay_max_nodes(rendered):
    """Issue 26: Serve's autoscaler never asks for more than KubeRay's can add (and GPU replicas land on GPUs)."""
    profile, objs = rendered
    shape = shape_of(one(objs, "RayService"))
    demands = serve_demands(objs)
    placed = place(shape, demands)
    for node in placed.nodes:
        for what in node.placed:
            if what.startswith("llm") and dict(demands)[what]["GPU"] > 0:
                assert node.group == "gpu-workers", (profile, what, node.group)
            if not what.startswith("llm"):
                assert node.group != "gpu-workers", (profile, what)  # CPU-only replicas stay off GPU pods
    llm = next(d for d in yaml.safe_load(one(objs, "RayService")["spec"]["serveConfigV2"])["applications"][0][
        "deployments"] if d["name"] == "llm")
    gpus = float(llm["ray_actor_options"].get("num_gpus") or 0)
    if gpus:
        group = next(g for g in shape.groups if g.name == "gpu-workers")
        assert group.max_replicas * group.gpus >= llm["autoscaling_config"]["max_replicas"] * gpus, profile


def test_one_more_llm_replica_than_the_gpu_group_holds_is_caught():
    objs = render_objects(values_for("gpu-prod"))
    shape = shape_of(one(objs, "RayService"))
    demands = serve_demands(objs) + [("llm replica extra", {"CPU": 4.0, "GPU": 1.0})]
    with pytest.raises(DoesNotFit, match="llm replica"):
        place(shape, demands)


def test_notes_and_readmes_submit_with_entrypoint_cpus():
    texts = [render(values_for("default"))["adept/templates/NOTES.txt"], (CHART_DIR / "README.md").read_text()]
    for text in texts:
        for cmd in re.findall(r"ray job submit --address[^\n]*", text):
            assert "--entrypoint-num-cpus 1" in cmd, cmd
