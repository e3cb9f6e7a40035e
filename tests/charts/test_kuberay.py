"""KubeRay: the pinned version is the one the chart is checked against, and what it needs is enforced.

The chart renders RayCluster ``authOptions.secretName`` (KubeRay >= 1.6.0). Rendered objects are validated
against the CRDs of exactly the version ``Chart.yaml`` pins (``shared/crds/kuberay/v<pin>/``); a pin without
its folder fails. The operator refuses a KubeRay whose CRD (or stored RayCluster) lacks the field.
"""

from __future__ import annotations

import re

import pytest
import yaml

from operators import kuberay as K
from tests.charts import chart_render
from tests.charts.chart_render import (
    CHART_DIR,
    find,
    render,
    render_objects,
    shared_dir,
    validation_errors,
    values_for,
)

pytestmark = pytest.mark.charts


def crd(version: str) -> dict:
    path = shared_dir() / "crds" / "kuberay" / f"v{version}" / "ray.io_rayclusters.yaml"
    return yaml.load(path.read_text(), Loader=yaml.CSafeLoader)


def test_the_pin_is_1_7_0_and_its_crds_are_what_the_tests_use():
    assert chart_render.kuberay_pin() == "1.7.0"
    assert chart_render.kuberay_crd_dir().name == "v1.7.0"
    assert K.crd_has_secret_name(crd(chart_render.kuberay_pin())) is True


def test_a_pin_without_its_crd_folder_fails_naming_it(monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"pins kuberay-operator 9\.9\.9.*v9\.9\.9.*have: v1\.5\.1"):
        chart_render.kuberay_crd_dir("9.9.9")


def test_the_rendered_clusters_are_refused_by_kubray_1_5_1(default_objects):
    """What the pinned-CRD check exists for: 1.5.1's schema has no authOptions.secretName."""
    rc = find(default_objects, "RayCluster")[0]
    errors = validation_errors(rc, kuberay_version="1.5.1")
    assert any("authOptions" in e and "secretName" in e for e in errors), errors
    assert validation_errors(rc) == []


@pytest.mark.parametrize(("version", "ok"), [("1.5.1", False), ("1.6.2", True), ("1.7.0", True)])
def test_the_operator_check_reads_each_real_crd(version, ok):
    if ok:
        K.check_raycluster_crd(crd(version))
    else:
        with pytest.raises(K.KubeRayTooOld, match=r"KubeRay >= 1\.6\.0 is required"):
            K.check_raycluster_crd(crd(version))


def test_the_operator_check_refuses_a_stored_cluster_that_lost_its_secret_name(default_objects):
    rc = find(default_objects, "RayCluster")[0]
    K.check_training_cluster(rc)
    pruned = {**rc, "spec": {**rc["spec"], "authOptions": {"mode": "token"}}}  # what 1.5.x stores
    with pytest.raises(K.KubeRayTooOld, match="adept-training"):
        K.check_training_cluster(pruned)


def test_a_crd_without_a_v1_schema_is_not_judged():
    assert K.crd_has_secret_name({}) is None
    K.check_raycluster_crd({"spec": {"versions": [{"name": "v1"}]}})


def test_the_operator_is_told_which_cluster_to_check_and_may_read_only_it(default_objects):
    dep = find(default_objects, "Deployment")[0]
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["ADEPT_TRAINING_CLUSTER"] == "adept-training"
    role = find(default_objects, "Role", "adept-operator")[0]
    ray_rules = [r for r in role["rules"] if "ray.io" in r["apiGroups"]]
    assert ray_rules == [
        {"apiGroups": ["ray.io"], "resources": ["rayclusters"], "resourceNames": ["adept-training"], "verbs": ["get"]}
    ]


def test_bring_your_own_kuberay_is_a_values_path():
    values = values_for(
        "gpu-prod",
        {"kuberay-operator": {"enabled": False}, "networkPolicy": {"kuberayOperatorNamespace": "ray-system"}},
    )
    chart_render.chart().validate_schema(values)
    objs = render_objects(values)
    assert find(objs, "RayService") and find(objs, "RayCluster")
    for policy in find(objs, "NetworkPolicy", "adept-serving") + find(objs, "NetworkPolicy", "adept-training"):
        peers = [p for rule in policy["spec"]["ingress"] for p in rule.get("from", [])]
        kuberay = [p for p in peers if p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == "kuberay-operator"]
        assert kuberay and all(
            p["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "ray-system"} for p in kuberay
        )
    notes = render(values)["adept/templates/NOTES.txt"]
    assert "KubeRay >= 1.6.0" in notes


def _schema_has(schema: dict, node: dict, path: list[str]) -> bool:
    defs = schema.get("$defs", {})

    def resolve(n: dict) -> list[dict]:
        if "$ref" in n:
            return resolve(defs[n["$ref"].rsplit("/", 1)[-1]])
        out = [n]
        for key in ("anyOf", "oneOf", "allOf"):
            for sub in n.get(key, []):
                out += resolve(sub)
        return out

    if not path:
        return True
    for n in resolve(node):
        props = n.get("properties", {})
        if path[0] in props and _schema_has(schema, props[path[0]], path[1:]):
            return True
        extra = n.get("additionalProperties")
        if path[0] not in props and (extra is True or isinstance(extra, dict)):
            return True  # an open map (subchart values, Kubernetes objects, dicts of settings)
    return False


def readme_value_keys() -> set[str]:
    """Dotted values keys the chart README names: in backticks, in `--set k=v`, in `k.x=...` of its commands."""
    text = (CHART_DIR / "README.md").read_text()
    text = text.split("<!-- BEGIN:values -->")[0]  # the generated table lists the schema's own keys
    top = set(yaml.safe_load((CHART_DIR / "values.yaml").read_text())) | {"global"}
    tokens = set(re.findall(r"--set\s+([A-Za-z][\w.-]*)=", text))
    for span in re.findall(r"`([^`\n]+)`", text):
        words = span.split()
        for i, word in enumerate(words):
            if i and words[i - 1] in ("-m", "-f", "--config"):
                continue
            tokens.update(re.findall(r"^([A-Za-z][\w-]*(?:\.[A-Za-z_][\w-]*)+)(?:[=:,)]|$)", word))
    return {t for t in tokens if t.split(".")[0] in top}


def test_every_values_key_the_readme_names_exists_in_the_schema():
    schema = yaml.safe_load((CHART_DIR / "values.schema.json").read_text())
    keys = readme_value_keys()
    assert len(keys) > 20, keys  # the README names many; an extraction that finds none proves nothing
    missing = sorted(k for k in keys if not _schema_has(schema, schema, k.split(".")))
    assert not missing, f"the chart README names values keys the schema rejects: {missing}"


def test_the_readme_key_check_catches_the_old_selector_key():
    schema = yaml.safe_load((CHART_DIR / "values.schema.json").read_text())
    assert not _schema_has(schema, schema, ["networkPolicy", "kuberayOperatorNamespaceSelector"])
    assert _schema_has(schema, schema, ["networkPolicy", "kuberayOperatorNamespace"])
