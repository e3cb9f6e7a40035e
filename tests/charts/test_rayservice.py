"""RayService: the Serve application, GPU worker group, autoscaler and zero-downtime upgrades."""

import pytest
import yaml

from tests.charts.chart_render import CHART_DIR, one, pod_specs, render_objects, values_for, worker_group

pytestmark = pytest.mark.charts


def serve_config(objs):
    return yaml.safe_load(one(objs, "RayService")["spec"]["serveConfigV2"])


def test_gpu_worker_group_requests_gpus(default_objects):
    group = worker_group(one(default_objects, "RayService"), "gpu-workers")
    pod = group["template"]["spec"]
    res = pod["containers"][0]["resources"]
    assert res["limits"]["nvidia.com/gpu"] == 1 and res["requests"]["nvidia.com/gpu"] == 1
    # Placed by the nvidia.com/gpu request alone: no node label or product is required.
    assert "nodeSelector" not in pod and "affinity" not in pod
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]


def test_gpu_pool_placement_comes_from_values():
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["h100"]}]}
                ]
            }
        }
    }
    objs = render_objects(
        {
            "serving": {
                "gpuWorkers": {
                    "gpusPerWorker": 4,
                    "nodeSelector": {"pool": "gpu"},
                    "affinity": affinity,
                    "image": "repo/adept:gpu",
                    "tolerations": [
                        {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}
                    ],
                }
            }
        }
    )
    pod = worker_group(one(objs, "RayService"), "gpu-workers")["template"]["spec"]
    # Helm merges maps: the default GPU label stays unless set to null.
    assert pod["nodeSelector"]["pool"] == "gpu" and pod["affinity"] == affinity
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert pod["containers"][0]["image"] == "repo/adept:gpu"
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 4


def test_autoscaling_is_on(profile_objects):
    rs = one(profile_objects, "RayService")
    cluster = rs["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    for group in cluster.get("workerGroupSpecs", []):
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    deployments = {d["name"]: d for d in serve_config(profile_objects)["applications"][0]["deployments"]}
    assert set(deployments) == {"gateway", "llm", "retrieval"}
    assert any("autoscaling_config" in d for d in deployments.values())


def test_default_replicas_scale_between_min_and_max(default_objects):
    gpu = worker_group(one(default_objects, "RayService"), "gpu-workers")
    assert (gpu["minReplicas"], gpu["maxReplicas"]) == (1, 4)
    llm = next(
        d for d in serve_config(default_objects)["applications"][0]["deployments"] if d["name"] == "llm"
    )
    assert llm["autoscaling_config"]["max_replicas"] == 4 and llm["ray_actor_options"]["num_gpus"] == 1


def test_serve_application_runs_build_app(profile_objects):
    app = serve_config(profile_objects)["applications"][0]
    assert app["import_path"] == "tools.eval.serve_app:build_app"  # services.app plus the evaluator
    assert app["route_prefix"] == "/"


def test_serve_args_validate_against_serving_config(profile_objects):
    from adept.config import serving

    args = serve_config(profile_objects)["applications"][0]["args"]
    cfg = serving.ServingConfig.model_validate(args)
    assert cfg.gateway.host == "0.0.0.0" and cfg.gateway.port == 8000
    assert cfg.platform.milvus_uri.startswith("http://")  # a Milvus server, never Lite, in the cluster
    app_deployments = {d["name"]: d for d in serve_config(profile_objects)["applications"][0]["deployments"]}
    # serveConfigV2's overrides and the builder's args carry the same options.
    assert (
        app_deployments["llm"]["ray_actor_options"]["num_gpus"]
        == cfg.deployments.llm.ray_actor_options.num_gpus
    )


def test_serve_config_is_valid_for_ray_serve(profile_objects):
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(serve_config(profile_objects))


def test_production_defaults():
    args = serve_config(render_objects())["applications"][0]["args"]["platform"]
    assert args["model"] == "microsoft/Phi-3-mini-4k-instruct"
    assert (args["dtype"], args["device"]) == ("bfloat16", "cuda")


def test_cpu_dev_has_no_gpu():
    objs = render_objects(values_for("cpu-dev"))
    rs = one(objs, "RayService")
    assert "gpu-workers" not in {g["groupName"] for g in rs["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    assert "nvidia.com/gpu" not in str(rs)
    assert serve_config(objs)["applications"][0]["args"]["platform"]["device"] == "cpu"


def test_user_args_merge_over_generated_ones():
    objs = render_objects(
        {"serving": {"args": {"llm": {"max_batch_size": 32}, "platform": {"collection": "acme"}}}}
    )
    args = serve_config(objs)["applications"][0]["args"]
    assert args["llm"]["max_batch_size"] == 32
    assert args["platform"]["collection"] == "acme" and args["platform"]["model"]  # generated keys kept


def test_deployment_options_belong_in_serving_deployments():
    import helm_python

    from tests.charts.chart_render import render

    with pytest.raises(helm_python.HelmError, match=r"serving\.deployments"):
        render({"serving": {"args": {"deployments": {"llm": {"num_replicas": 2}}}}})


def test_zero_downtime_upgrades(default_objects):
    spec = one(default_objects, "RayService")["spec"]
    assert spec["upgradeStrategy"] == {"type": "NewCluster"}
    assert spec["rayClusterDeletionDelaySeconds"] > 0


def test_head_keeps_replicas_off_in_production(default_objects):
    head = one(default_objects, "RayService")["spec"]["rayClusterConfig"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert all(isinstance(v, str) for v in head["rayStartParams"].values())  # KubeRay wants strings


def test_ray_pods_share_storage_and_model_cache(default_objects):
    pod = one(default_objects, "RayService")["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in pod["volumes"]}
    assert claims["data"] == "adept-data" and claims["models"] == "adept-models"
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["HF_HOME"]["value"] == "/models/hf"
    # The admin key's sha256 only: the key itself never reaches a Ray pod (docs/security.md).
    assert "ADEPT_ADMIN_KEY" not in env
    assert env["ADEPT_ADMIN_KEY_SHA256"]["valueFrom"]["secretKeyRef"] == {
        "name": "adept-admin",
        "key": "admin-key-sha256",
    }


def test_deployment_names_match_the_application(default_objects):
    """serveConfigV2 overrides name deployments; a name the application lacks fails the deploy."""
    from services.gateway.deployment import GatewayDeployment
    from services.llm.deployment import LLMDeployment
    from services.retrieval.deployment import RetrievalDeployment

    names = {d["name"] for d in serve_config(default_objects)["applications"][0]["deployments"]}
    assert names == {GatewayDeployment.name, LLMDeployment.name, RetrievalDeployment.name}


def test_images_are_the_ones_make_image_builds(default_objects):
    """CPU image on heads and CPU workers, the CUDA variant on GPU workers, all tagged with appVersion."""
    chart_yaml = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    tag = chart_yaml["appVersion"]
    for obj in (one(default_objects, "RayService"), one(default_objects, "RayCluster")):
        for where, spec in pod_specs(obj):
            want = f"ghcr.io/adept-project/adept:{tag}" + ("-cuda" if where == "gpu-workers" else "")
            assert spec["containers"][0]["image"] == want, (obj["kind"], where)


def test_ray_pods_get_a_memory_backed_dev_shm(profile_objects):
    """Ray's object store lives in /dev/shm; a container runtime's default is 64 MiB."""
    for obj in profile_objects:
        if obj["kind"] not in ("RayService", "RayCluster"):
            continue
        for where, spec in pod_specs(obj):
            c = spec["containers"][0]
            assert {"name": "shared-mem", "mountPath": "/dev/shm"} in c["volumeMounts"], where
            vol = next(v for v in spec["volumes"] if v["name"] == "shared-mem")
            assert vol["emptyDir"] == {"medium": "Memory", "sizeLimit": c["resources"]["limits"]["memory"]}


def test_cpu_only_replicas_stay_off_gpu_workers(profile_objects):
    """CPU-only deployments need `adept_cpu_replicas`, which GPU workers never advertise: no replica of the
    gateway or retrieval lands on a GPU node, and their scale-ups add CPU workers, never GPU ones."""
    rs = one(profile_objects, "RayService")
    cluster = rs["spec"]["rayClusterConfig"]
    app = serve_config(profile_objects)["applications"][0]
    for opts in [*app["deployments"], *app["args"]["deployments"].values()]:
        actor = opts["ray_actor_options"]
        needs = (actor.get("resources") or {}).get("adept_cpu_replicas")
        assert needs == (None if actor.get("num_gpus", 0) > 0 else 1), opts
    offers = {
        g["groupName"]: (g.get("resources") or {}).get("adept_cpu_replicas")
        for g in cluster["workerGroupSpecs"]
    }
    assert offers.get("gpu-workers") is None
    if "cpu-workers" in offers:
        assert offers["cpu-workers"] == "1000"
    head = cluster["headGroupSpec"]
    head_cpus = head["rayStartParams"].get("num-cpus")
    assert ((head.get("resources") or {}).get("adept_cpu_replicas") == "1000") == (head_cpus != "0")
    # Every CPU-only replica has somewhere to go.
    assert "cpu-workers" in offers or head_cpus != "0"


def test_custom_resources_of_a_group_are_kept():
    objs = render_objects({"serving": {"cpuWorkers": {"rayStartParams": {"resources": "'{\"ssd\": 2}'"}}}})
    group = worker_group(one(objs, "RayService"), "cpu-workers")
    assert group["resources"] == {"adept_cpu_replicas": "1000", "ssd": "2"}
    assert "resources" not in group["rayStartParams"]  # KubeRay would let the group field replace it anyway


def test_cpu_only_deployment_keeps_its_own_custom_resources():
    objs = render_objects(
        {
            "serving": {
                "deployments": {
                    "retrieval": {
                        "name": "retrieval",
                        "ray_actor_options": {"num_cpus": 1, "resources": {"ssd": 1}},
                    }
                }
            }
        }
    )
    retrieval = next(
        d for d in serve_config(objs)["applications"][0]["deployments"] if d["name"] == "retrieval"
    )
    assert retrieval["ray_actor_options"]["resources"] == {"ssd": 1, "adept_cpu_replicas": 1}
