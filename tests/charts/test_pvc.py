"""Adapter storage (shared PVC or S3) and the model cache volume."""

import pytest

from tests.charts.chart_render import find, one, render_objects, values_for

pytestmark = pytest.mark.charts


def ray_env(objs):
    pod = one(objs, "RayService")["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    return {e["name"]: e for e in pod["containers"][0]["env"]}, pod


def test_default_volumes_are_read_write_many(default_objects):
    data = one(default_objects, "PersistentVolumeClaim", "adept-data")
    models = one(default_objects, "PersistentVolumeClaim", "adept-models")
    assert data["spec"]["accessModes"] == ["ReadWriteMany"] == models["spec"]["accessModes"]
    assert data["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_s3_adapter_store():
    objs = render_objects(values_for("gpu-prod"))
    env, _ = ray_env(objs)
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "adept-s3"
    assert env["AWS_DEFAULT_REGION"]["value"] == "eu-west-1"
    assert "s3://acme-adept/adapters" in one(objs, "RayService")["spec"]["serveConfigV2"]


def test_s3_without_uri_fails():
    import helm_python

    with pytest.raises(helm_python.HelmError, match=r"adapterStore\.s3\.uri"):
        render_objects({"adapterStore": {"type": "s3"}})


def test_existing_claims_and_empty_dirs():
    objs = render_objects({"persistence": {"existingClaim": "mine"}, "modelCache": {"type": "emptyDir"}})
    assert not find(objs, "PersistentVolumeClaim")
    _, pod = ray_env(objs)
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["data"]["persistentVolumeClaim"]["claimName"] == "mine"
    assert vols["models"]["emptyDir"]["sizeLimit"] == "40Gi"


def test_ray_pods_never_reach_the_hub(profile_objects):
    """Weights come from the cache (the weights Job fills it); serving and training run offline."""
    env, _ = ray_env(profile_objects)
    assert env["HF_HUB_OFFLINE"]["value"] == "1" and env["TRANSFORMERS_OFFLINE"]["value"] == "1"
