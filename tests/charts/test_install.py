"""The documented install works as written: every README/NOTES command names what the chart renders, nothing
the release waits for depends on the slowest component, GPU pods are placed by their GPU request and check
their driver first, and training data in object storage is reachable read-only by training workers only."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.charts.chart_render import CHART_DIR, REPO_ROOT, find, one, pod_specs, render, render_objects, values_for

pytestmark = pytest.mark.charts

DOCS = [REPO_ROOT / "README.md", CHART_DIR / "README.md"]


def test_nothing_is_a_helm_hook(profile_objects):
    """Helm waits for hooks: the Milvus password Job (minutes after Milvus) would fail the install."""
    hooks = [
        f"{o['kind']}/{o['metadata']['name']}"
        for o in profile_objects
        if "helm.sh/hook" in ((o.get("metadata") or {}).get("annotations") or {})
    ]
    assert not hooks


def test_the_milvus_password_job_is_named_by_its_spec():
    a = [o for o in render_objects({}) if o["kind"] == "Job" and "milvus-root" in o["metadata"]["name"]]
    b = [
        o
        for o in render_objects({"image": {"tag": "0.2.0"}})
        if o["kind"] == "Job" and "milvus-root" in o["metadata"]["name"]
    ]
    assert len(a) == len(b) == 1 and a[0]["metadata"]["name"] != b[0]["metadata"]["name"]  # immutable template


def _commands(text: str) -> list[str]:
    """Shell commands of fenced blocks, continuation lines joined."""
    out = []
    for block in re.findall(r"```(?:bash|sh|console)?\n(.*?)```", text, re.S):
        out += [c.strip() for c in block.replace("\\\n", " ").splitlines() if c.strip()]
    return out


def _notes() -> str:
    return render(values_for("gpu-prod"))["adept/templates/NOTES.txt"]


def _texts() -> dict[str, str]:
    return {**{p.name if p.parent == REPO_ROOT else "charts/adept/README.md": p.read_text() for p in DOCS}, "NOTES": _notes()}


def test_every_documented_helm_wait_has_a_timeout():
    for name, text in _texts().items():
        for cmd in re.findall(r"helm (?:install|upgrade) [^\n]*", text.replace("\\\n", " ")):
            if "--wait" in cmd:
                assert "--timeout" in cmd, f"{name}: {cmd}"


def test_every_object_the_docs_name_is_rendered():
    """kubectl commands in the READMEs and NOTES against what `helm install adept -n adept` renders."""
    objs = render_objects(values_for("gpu-prod"))
    names = {(o["kind"], o["metadata"]["name"]) for o in objs}
    rayservices = {n for k, n in names if k == "RayService"}
    services = {n for k, n in names if k == "Service"} | {f"{r}-serve-svc" for r in rayservices}  # KubeRay's
    made_by_user: set[str] = set()
    checked = 0
    for doc, text in _texts().items():
        lines = [line for line in text.replace("\\\n", " ").splitlines() if "kubectl" in line]
        for line in lines:
            made_by_user |= set(re.findall(r"create secret generic (\S+)", line))
        for line in lines:
            if " -n adept " not in line and "-n adept" not in line:
                continue
            for secret in re.findall(r"get secret (\S+)", line):
                checked += 1
                assert ("Secret", secret) in names or secret in made_by_user or secret.startswith("adept-tenant-"), (
                    doc,
                    line,
                )
            for svc in re.findall(r"svc/([\w-]+)", line):
                checked += 1
                assert svc in services, (doc, svc)
            for job in re.findall(r"job/([\w-]+)", line):
                checked += 1
                assert ("Job", job) in names, (doc, job)
            for rs in re.findall(r"get rayservice ([\w-]+)", line):
                checked += 1
                assert rs in rayservices, (doc, rs)
            for comp in re.findall(r"-l app\.kubernetes\.io/component=([\w-]+)", line):
                checked += 1
                assert any(
                    o["kind"] == "Job"
                    and o["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == comp
                    for o in objs
                ), (doc, comp)
            for pvc in re.findall(r"delete pvc ([\w-]+)", line):
                checked += 1
                assert ("PersistentVolumeClaim", pvc) in names, (doc, pvc)
    assert checked >= 10


def test_every_set_key_in_the_docs_is_in_the_schema():
    from tests.charts.test_kuberay import _schema_has

    schema = yaml.safe_load((CHART_DIR / "values.schema.json").read_text())
    joined = [text.replace("\\\n", " ") for text in _texts().values()]
    helm = [c for text in joined for c in re.findall(r"helm (?:install|upgrade) [^\n]*", text)]
    keys = {k for cmd in helm for k in re.findall(r"--set ([A-Za-z][\w.-]*)=", cmd)}
    assert keys
    assert not [k for k in keys if not _schema_has(schema, schema, k.split("."))]


def _gpu_pods(objs):
    for obj in objs:
        for where, spec in pod_specs(obj):
            if any((c.get("resources") or {}).get("limits", {}).get("nvidia.com/gpu") for c in spec["containers"]):
                yield f"{obj['kind']}/{obj['metadata']['name']}/{where}", spec


@pytest.mark.parametrize("profile", ["default", "gpu-prod"])
def test_gpu_pods_are_placed_by_their_gpu_request_with_preferences_only(profile):
    pods = list(_gpu_pods(render_objects(values_for(profile))))
    assert len(pods) == 2
    for where, spec in pods:
        selector = spec.get("nodeSelector") or {}
        assert not [k for k in selector if "nvidia" in k], (where, selector)
        node = (spec.get("affinity") or {}).get("nodeAffinity") or {}
        assert "requiredDuringSchedulingIgnoredDuringExecution" not in node, where
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]


def test_gpu_prod_prefers_products_without_requiring_them():
    rs = one(render_objects(values_for("gpu-prod")), "RayService")
    gpu = next(g for g in rs["spec"]["rayClusterConfig"]["workerGroupSpecs"] if g["groupName"] == "gpu-workers")
    (pref,) = gpu["template"]["spec"]["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert pref["preference"]["matchExpressions"][0]["key"] == "nvidia.com/gpu.product"


def test_gpu_pods_check_their_driver_first(profile_objects):
    for where, spec in _gpu_pods(profile_objects):
        first = spec["initContainers"][0]
        assert first["name"] == "check-gpu-driver" and first["command"] == ["python", "-m", "adept.gpu_driver"], where
        assert first["terminationMessagePolicy"] == "FallbackToLogsOnError"
        assert first["image"] == spec["containers"][0]["image"]
    for obj in profile_objects:
        for where, spec in pod_specs(obj):
            if where != "gpu-workers":
                assert all(c["name"] != "check-gpu-driver" for c in spec.get("initContainers", [])), where


def test_gpu_prod_pins_the_model_revision_and_sizes_storage():
    values = values_for("gpu-prod")
    assert re.fullmatch(r"microsoft/Phi-3-mini-4k-instruct@[0-9a-f]{40}", values["model"]["name"])
    default = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert default["milvus"]["minio"]["persistence"]["size"] == "50Gi"  # the Milvus chart's own: 500Gi x 4
    assert values["milvus"]["minio"]["persistence"]["size"] == "100Gi"
    readme = (CHART_DIR / "README.md").read_text()
    assert "milvus.minio.persistence.size" in readme and "persistence.size" in readme


DATA = {"training": {"dataStore": {"uri": "s3://acme-training/adept", "existingSecret": "ro-keys", "region": "eu-west-1"}}}


def _env(spec):
    return {e["name"]: e for e in spec["containers"][0]["env"]}


def test_training_data_in_s3_reaches_training_workers_only_read_only():
    objs = render_objects(values_for("default", DATA))
    rc = one(objs, "RayCluster")
    for where, spec in pod_specs(rc):
        env = _env(spec)
        if where == "head":
            assert "AWS_ACCESS_KEY_ID" not in env  # the head runs no job code
        else:
            assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "ro-keys", "key": "AWS_ACCESS_KEY_ID"}
            assert env["ADEPT_TRAINING_DATA_URI"]["value"] == "s3://acme-training/adept"
    for where, spec in pod_specs(one(objs, "RayService")):
        assert not any(e.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == "ro-keys" for e in spec["containers"][0]["env"])
    policy = one(objs, "NetworkPolicy", "adept-training")
    assert any(p.get("port") == 443 for rule in policy["spec"]["egress"] for p in rule.get("ports", []))
    plain = one(render_objects(values_for("default")), "NetworkPolicy", "adept-training")
    assert not any(p.get("ipBlock") for rule in plain["spec"]["egress"] for p in rule.get("to", []))


def test_training_data_without_read_only_keys_is_refused():
    with pytest.raises(Exception, match="existingSecret"):
        render_objects(values_for("default", {"training": {"dataStore": {"uri": "s3://x/y"}}}))
    from adept.config.chart import TrainingDataStoreValues

    with pytest.raises(ValueError, match="read-only"):
        TrainingDataStoreValues(uri="s3://x/y")


def test_gpu_prod_the_4gpu_config_and_the_docs_agree_on_training_data():
    values = values_for("gpu-prod")
    uri = values["training"]["dataStore"]["uri"]
    config = (REPO_ROOT / "training" / "configs" / "phi3-mini-lora-4gpu.yaml").read_text()
    assert f"data.path={uri}/" in config and "output.storage_path=s3" not in config
    assert "training.dataStore" in (CHART_DIR / "README.md").read_text()
