"""The weights Job that fills the model cache, and the init containers that make Ray pods wait for it."""

import re

import helm_python
import pytest
import yaml

from tests.charts.chart_render import CHART_DIR, find, one, pod_specs, render, render_objects, values_for

pytestmark = pytest.mark.charts

HUB = ["microsoft/Phi-3-mini-4k-instruct", "sentence-transformers/all-MiniLM-L6-v2"]


def weights_jobs(objs):
    """The weights Job(s); the chart's other Job (the bundled Milvus's root password) is not one."""
    return [
        o for o in find(objs, "Job") if o["metadata"]["labels"]["app.kubernetes.io/component"] == "weights"
    ]


def job(objs):
    found = weights_jobs(objs)
    assert len(found) == 1, [o["metadata"]["name"] for o in found]
    return found[0]


def ray_pods(objs):
    """(where, pod spec) of every Ray pod: serving and training heads and workers."""
    return [
        (f"{o['kind']}/{where}", spec)
        for o in objs
        if o["kind"] in ("RayService", "RayCluster")
        for where, spec in pod_specs(o)
    ]


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


def test_the_job_downloads_the_hub_models_into_the_shared_cache(default_objects):
    j = job(default_objects)
    assert re.fullmatch(r"adept-weights-[0-9a-f]{8}", j["metadata"]["name"])
    assert j["metadata"]["labels"]["app.kubernetes.io/component"] == "weights"
    pod = j["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and j["spec"]["backoffLimit"] == 6
    c = pod["containers"][0]
    assert c["image"] == "ghcr.io/adept-project/adept:0.1.0"
    assert c["command"] == ["adept", "models", "pull", "--download", *HUB]
    env = env_of(c)
    assert env["HF_HOME"]["value"] == "/models/hf" and "HF_HUB_OFFLINE" not in env
    assert "HF_TOKEN" not in env and "HF_ENDPOINT" not in env
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["models"]["persistentVolumeClaim"]["claimName"] == "adept-models"
    assert {"name": "models", "mountPath": "/models"} in c["volumeMounts"]
    # The replicas read the cache where the Job writes it.
    for where, spec in ray_pods(default_objects):
        assert env_of(spec["containers"][0])["HF_HOME"]["value"] == "/models/hf", where


def test_the_job_runs_once_per_model_and_revision():
    """The Job's name hashes its spec: unrelated changes keep it (Helm leaves a finished Job alone)."""
    name = job(render_objects({}))["metadata"]["name"]
    assert job(render_objects({}))["metadata"]["name"] == name
    assert job(render_objects({"serving": {"gpuWorkers": {"maxReplicas": 8}}}))["metadata"]["name"] == name
    pinned = job(render_objects({"model": {"name": "microsoft/Phi-3-mini-4k-instruct@0a67737"}}))
    assert pinned["metadata"]["name"] != name
    assert (
        "microsoft/Phi-3-mini-4k-instruct@0a67737"
        in pinned["spec"]["template"]["spec"]["containers"][0]["command"]
    )


def test_token_and_mirror_reach_only_the_downloading_container():
    objs = render_objects(
        {
            "modelCache": {
                "download": {
                    "tokenSecret": "hf",
                    "tokenKey": "token",
                    "endpoint": "https://hf.mirror.internal",
                }
            }
        }
    )
    env = env_of(job(objs)["spec"]["template"]["spec"]["containers"][0])
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf", "key": "token"}
    assert env["HF_ENDPOINT"]["value"] == "https://hf.mirror.internal"
    for obj in objs:
        if obj in weights_jobs(objs):
            continue
        for where, spec in pod_specs(obj):
            for c in spec.get("initContainers", []) + spec["containers"]:
                assert "HF_TOKEN" not in env_of(c), f"{obj['kind']} {where}/{c['name']}"


def test_every_ray_pod_waits_for_the_weights(default_objects):
    name = job(default_objects)["metadata"]["name"]
    pods = ray_pods(default_objects)
    assert len(pods) == 5  # serving head, cpu, gpu; training head, gpu
    for where, spec in pods:
        (init,) = [c for c in spec["initContainers"] if c["name"] != "check-gpu-driver"]
        assert init["name"] == "wait-for-weights", where
        assert init["command"][: 3 + len(HUB)] == ["adept", "models", "wait", *HUB]
        assert f"kubectl -n adept logs job/{name}" in init["command"][-1]
        assert init["image"] == spec["containers"][0]["image"], where  # the CUDA image on GPU pods
        assert env_of(init)["HF_HUB_OFFLINE"]["value"] == "1"
        assert {"name": "models", "mountPath": "/models"} in init["volumeMounts"]


def test_an_existing_claim_is_filled_by_the_job():
    objs = render_objects({"modelCache": {"existingClaim": "weights"}})
    assert not find(objs, "PersistentVolumeClaim", "adept-models")
    vols = {v["name"]: v for v in job(objs)["spec"]["template"]["spec"]["volumes"]}
    assert vols["models"]["persistentVolumeClaim"]["claimName"] == "weights"


def test_air_gapped_a_pre_filled_claim_and_no_download():
    values = {"modelCache": {"existingClaim": "weights", "download": {"enabled": False}}}
    rendered = render(values)
    objs = [d for t, text in rendered.items() if t.endswith(".yaml") for d in yaml.safe_load_all(text) if d]
    assert not weights_jobs(objs)
    for where, spec in ray_pods(objs):
        init = weights_init(spec)
        assert init["command"][:5] == ["adept", "models", "wait", *HUB], where
        assert "filled beforehand" in init["command"][-1]
    assert "modelCache.download.enabled=false" in rendered["adept/templates/NOTES.txt"]


def test_bundled_models_need_no_job(profile):
    objs = render_objects(values_for(profile))
    hub_models = profile in ("default", "gpu-prod")
    assert bool(weights_jobs(objs)) == hub_models
    if not hub_models:
        for where, spec in ray_pods(objs):
            assert weights_init(spec)["command"] == [
                "adept",
                "models",
                "wait",
                "bundled:smollm2-135m-instruct",
                "bundled:all-minilm-l6-v2",
            ], where


def test_a_per_pod_cache_downloads_in_the_init_container():
    objs = render_objects({"modelCache": {"type": "emptyDir", "download": {"tokenSecret": "hf"}}})
    assert not weights_jobs(objs)
    for where, spec in ray_pods(objs):
        init = weights_init(spec)
        assert init["name"] == "fetch-weights" and init["command"] == [
            "adept",
            "models",
            "pull",
            "--download",
            *HUB,
        ]
        assert "HF_TOKEN" in env_of(init) and "HF_TOKEN" not in env_of(spec["containers"][0]), where


def test_a_per_pod_cache_without_download_cannot_hold_hub_models():
    with pytest.raises(helm_python.HelmError, match=r"emptyDir with modelCache\.download\.enabled=false"):
        render_objects({"modelCache": {"type": "emptyDir", "download": {"enabled": False}}})


def test_nothing_claims_that_the_first_start_downloads():
    notes = render({})["adept/templates/NOTES.txt"]
    assert "logs -f job/adept-weights-" in notes and "kubectl -n adept wait --for=condition=complete" in notes
    for text in (notes, (CHART_DIR / "values.yaml").read_text()):
        assert "first start downloads" not in text and "downloaded once into" not in text


def weights_init(spec):
    """The init container that fetches or waits for the weights (GPU pods check their driver first)."""
    (init,) = [c for c in spec["initContainers"] if c["name"] != "check-gpu-driver"]
    return init
