"""Secure cluster mode on the rendered objects (docs/security.md): Ray token auth, secrets per use,
ServiceAccount tokens only where the API is called, Milvus auth and TLS, secrets stable under GitOps."""

import base64
from collections import defaultdict

import pytest
import yaml

from tests.charts.chart_render import find, one, pod_specs, ray_cluster_spec, render_objects

pytestmark = pytest.mark.charts

S3_VALUES = {
    "adapterStore": {
        "type": "s3",
        "s3": {"uri": "s3://bucket/adapters", "existingSecret": "s3-keys"},
    }
}


def _component(obj, pod_where):
    labels = obj["metadata"].get("labels", {})
    return f"{labels.get('app.kubernetes.io/component', obj['kind'])}/{pod_where}"


def secret_users(objs) -> dict[tuple[str, str], set[str]]:
    """(Secret, key) -> the pods (component/group) whose containers get it in their environment."""
    users: dict[tuple[str, str], set[str]] = defaultdict(set)
    for obj in objs:
        for where, spec in pod_specs(obj):
            for c in spec.get("initContainers", []) + spec["containers"]:
                for e in c.get("env", []):
                    ref = e.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        users[(ref["name"], ref["key"])].add(_component(obj, where))
            for v in spec.get("volumes", []):
                if "secret" in v:
                    users[(v["secret"]["secretName"], "*")].add(_component(obj, where))
    return users


def ray_containers(objs):
    for obj in objs:
        if obj["kind"] in ("RayService", "RayCluster"):
            for where, spec in pod_specs(obj):
                yield obj, where, spec


def test_every_ray_cluster_demands_its_own_token(profile_objects):
    service = one(profile_objects, "RayService")
    assert ray_cluster_spec(service)["authOptions"] == {"mode": "token", "secretName": "adept-ray-serving"}
    for cluster in find(profile_objects, "RayCluster"):  # the ci profile runs no training cluster
        assert ray_cluster_spec(cluster)["authOptions"] == {
            "mode": "token",
            "secretName": "adept-ray-training",
        }
    for obj, where, spec in ray_containers(profile_objects):
        own = "adept-ray-serving" if obj["kind"] == "RayService" else "adept-ray-training"
        env = {e["name"]: e for e in spec["containers"][0]["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token", where
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": own, "key": "auth_token"}, where
    tokens = {
        s["metadata"]["name"]: base64.b64decode(s["data"]["auth_token"])
        for s in find(profile_objects, "Secret")
        if s["metadata"]["name"].startswith("adept-ray-")
    }
    assert set(tokens) == {"adept-ray-serving"} | (
        {"adept-ray-training"} if find(profile_objects, "RayCluster") else set()
    )
    assert len(set(tokens.values())) == len(tokens) and all(len(t) >= 64 for t in tokens.values())


def test_the_operator_sends_the_training_token_and_notes_say_how():
    from tests.charts.chart_render import render

    objs = render_objects({})
    env = {e["name"]: e for e in one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["ADEPT_RAY_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "adept-ray-training",
        "key": "auth_token",
    }
    notes = render({})["adept/templates/NOTES.txt"]
    assert "RAY_AUTH_MODE=token" in notes and "get secret adept-ray-training" in notes


def test_secrets_reach_only_the_processes_that_use_them():
    objs = render_objects(S3_VALUES)
    users = secret_users(objs)
    # The admin key: the operator only. Serving pods get its sha256; training pods nothing of it.
    assert users[("adept-admin", "admin-key")] == {"operator/template"}
    assert users[("adept-admin", "admin-key-sha256")] == {
        "serving/head",
        "serving/cpu-workers",
        "serving/gpu-workers",
    }
    # S3 keys: where adapters are read (serving) and published (the operator), never training pods.
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert users[("s3-keys", key)] == {
            "serving/head",
            "serving/cpu-workers",
            "serving/gpu-workers",
            "operator/template",
        }
    # Milvus's root password: retrieval (serving) and the Job that sets it.
    assert users[("adept-milvus-root", "password")] == {
        "serving/head",
        "serving/cpu-workers",
        "serving/gpu-workers",
        "milvus-auth/template",
    }
    # Each Ray token: its own cluster's pods, and the operator for the training cluster's job API.
    assert users[("adept-ray-serving", "auth_token")] == {
        "serving/head",
        "serving/cpu-workers",
        "serving/gpu-workers",
    }
    assert users[("adept-ray-training", "auth_token")] == {
        "training/head",
        "training/gpu-workers",
        "operator/template",
    }
    training_refs = {k for k, who in users.items() if any(w.startswith("training/") for w in who)}
    assert training_refs == {("adept-ray-training", "auth_token")}


def test_training_pods_hand_off_and_see_only_their_part_of_the_volume(default_objects):
    cluster = one(default_objects, "RayCluster")
    for where, spec in pod_specs(cluster):
        c = spec["containers"][0]
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["ADEPT_TRAINING_PUBLISH"] == "handoff", where
        mounts = {m["mountPath"]: m for m in c["volumeMounts"] if m["name"] == "data"}
        root = "/var/lib/adept"
        assert set(mounts) == {f"{root}/training", f"{root}/shared", f"{root}/models"}, where
        assert mounts[f"{root}/shared"]["readOnly"] and mounts[f"{root}/models"]["readOnly"], where
    serve = yaml.safe_load(one(default_objects, "RayService")["spec"]["serveConfigV2"])
    platform = serve["applications"][0]["args"]["platform"]
    # Cluster tenancy: Tenant resources, watched by every gateway replica (no SQLite on shared storage).
    assert platform["tenant_store"] == "kubernetes" and platform["kubernetes_namespace"] == "adept"
    assert platform["training_publish"] == "handoff"


def test_service_account_tokens_only_where_the_api_is_called(profile_objects):
    for obj, where, spec in ray_containers(profile_objects):
        if obj["kind"] == "RayService" and where != "gpu-workers":
            # The gateway's tenant store (head, CPU workers) and KubeRay's autoscaler (head).
            assert spec["serviceAccountName"] == "adept-serving", where
            assert spec["automountServiceAccountToken"] is True, where
        elif where != "head":
            assert spec["automountServiceAccountToken"] is False, (obj["kind"], where)
            assert "serviceAccountName" not in spec, (obj["kind"], where)
    for job in find(profile_objects, "Job"):
        assert job["spec"]["template"]["spec"]["automountServiceAccountToken"] is False, job["metadata"][
            "name"
        ]


def test_training_head_runs_no_job_code(default_objects):
    """The training head holds the autoscaler's token: with num-cpus 0, drivers run on workers."""
    head = ray_cluster_spec(one(default_objects, "RayCluster"))["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"


def test_bundled_milvus_runs_with_authorization():
    objs = render_objects({})
    from tests.charts.chart_render import CHART_DIR

    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    user = yaml.safe_load(values["milvus"]["extraConfigFiles"]["user.yaml"])
    assert user["common"]["security"]["authorizationEnabled"] is True
    password = one(objs, "Secret", "adept-milvus-root")
    assert len(base64.b64decode(password["data"]["password"])) >= 32
    assert password["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    (job,) = [o for o in objs if o["kind"] == "Job" and o["metadata"]["name"].startswith("adept-milvus-root-")]
    # An ordinary Job that retries, not a hook `helm install` would wait for (Milvus takes far past 5 min).
    assert "helm.sh/hook" not in (job["metadata"].get("annotations") or {})
    assert job["spec"]["backoffLimit"] >= 30
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "python",
        "-m",
        "services.retrieval.milvus_auth",
    ]
    env = {
        e["name"]: e
        for e in one(objs, "RayService")["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"][
            "containers"
        ][0]["env"]
    }
    assert env["ADEPT_PLATFORM__MILVUS_TOKEN"]["value"] == "root:$(ADEPT_MILVUS_ROOT_PASSWORD)"
    names = [
        e["name"]
        for e in one(objs, "RayService")["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"][
            "containers"
        ][0]["env"]
    ]
    assert names.index("ADEPT_MILVUS_ROOT_PASSWORD") < names.index(
        "ADEPT_PLATFORM__MILVUS_TOKEN"
    )  # $(VAR) order


def test_milvus_tls_verifies_the_server_with_the_given_ca():
    objs = render_objects({"milvusTls": {"caSecret": "milvus-ca", "serverName": "milvus.internal"}})
    serve = yaml.safe_load(one(objs, "RayService")["spec"]["serveConfigV2"])
    platform = serve["applications"][0]["args"]["platform"]
    assert platform["milvus_uri"].startswith("https://")
    assert platform["milvus_tls_ca_file"] == "/etc/adept/milvus-ca/ca.crt"
    assert platform["milvus_tls_server_name"] == "milvus.internal"
    users = secret_users(objs)
    assert "serving/head" in users[("milvus-ca", "*")] and "milvus-auth/template" in users[("milvus-ca", "*")]
    assert not any(w.startswith("training/") for w in users[("milvus-ca", "*")])


def test_gitops_brings_every_secret_and_renders_the_same_twice():
    values = {
        "auth": {"existingSecret": "admin"},
        "rayAuth": {"serving": {"existingSecret": "ray-s"}, "training": {"existingSecret": "ray-t"}},
        "milvusAuth": {"existingSecret": "milvus-root"},
    }
    first, second = render_objects(values), render_objects(values)
    assert not find(first, "Secret"), [s["metadata"]["name"] for s in find(first, "Secret")]
    assert first == second  # nothing random left: Argo CD sees no drift
    assert ray_cluster_spec(one(first, "RayService"))["authOptions"]["secretName"] == "ray-s"
    assert ray_cluster_spec(one(first, "RayCluster"))["authOptions"]["secretName"] == "ray-t"
    users = secret_users(first)
    assert ("milvus-root", "password") in users and ("admin", "admin-key") in users


def test_generated_secrets_are_kept_across_upgrades_by_lookup():
    from tests.charts.chart_render import CHART_DIR

    for template in ("secret-admin.yaml", "secret-ray-auth.yaml", "milvus-auth.yaml"):
        source = (CHART_DIR / "templates" / template).read_text()
        assert 'lookup "v1" "Secret"' in source and "b64dec" in source, template
