"""Every object rendered from every shipped values file is valid for the API it targets."""

import pytest

from tests.charts.chart_render import (
    kuberay_validators,
    pod_specs,
    ray_cluster_spec,
    validation_errors,
)

pytestmark = pytest.mark.charts


def test_every_object_validates(profile_objects):
    errors, unknown = [], []
    for obj in profile_objects:
        if obj["kind"] == "ServiceMonitor":
            continue  # Prometheus Operator CRD: no schema here; checked structurally in test_servicemonitor.py
        try:
            errors += validation_errors(obj)
        except LookupError as e:
            unknown.append(str(e))
    assert not unknown, unknown
    assert not errors, "\n".join(errors)


def test_kuberay_crds_are_the_real_ones():
    assert {k for _, k in kuberay_validators()} >= {"RayService", "RayCluster", "RayJob"}


def test_strict_crd_validation_catches_a_misplaced_field(default_objects):
    rs = next(o for o in default_objects if o["kind"] == "RayService")
    bad = {**rs, "spec": {**rs["spec"], "enableInTreeAutoscaling": True}}  # belongs under rayClusterConfig
    assert any("enableInTreeAutoscaling" in e for e in validation_errors(bad))


def test_every_container_has_resources(profile_objects):
    missing = []
    for obj in profile_objects:
        for where, spec in pod_specs(obj):
            for c in spec.get("initContainers", []) + spec["containers"]:
                res = c.get("resources") or {}
                for part in ("requests", "limits"):
                    if not {"cpu", "memory"} <= set(res.get(part) or {}):
                        missing.append(f"{obj['kind']}/{obj['metadata']['name']} {where}/{c['name']} {part}")
        if obj["kind"] in ("RayService", "RayCluster"):
            # KubeRay injects the autoscaler sidecar into the head pod with these resources.
            opts = ray_cluster_spec(obj).get("autoscalerOptions") or {}
            if not {"cpu", "memory"} <= set((opts.get("resources") or {}).get("requests") or {}):
                missing.append(f"{obj['kind']}/{obj['metadata']['name']} autoscaler sidecar")
    assert not missing, missing


def test_every_pod_runs_non_root_with_a_security_context(profile_objects):
    seen = 0
    for obj in profile_objects:
        for where, spec in pod_specs(obj):
            seen += 1
            pod = spec.get("securityContext") or {}
            assert pod.get("runAsNonRoot") is True, f"{obj['kind']} {where}"
            assert pod.get("seccompProfile", {}).get("type") == "RuntimeDefault"
            for c in spec["containers"]:
                sc = c.get("securityContext") or {}
                assert sc.get("allowPrivilegeEscalation") is False, f"{obj['kind']} {where}/{c['name']}"
                assert sc.get("capabilities", {}).get("drop") == ["ALL"]
    assert seen >= 2


def test_operator_root_filesystem_is_read_only(default_objects):
    dep = next(o for o in default_objects if o["kind"] == "Deployment")
    assert (
        dep["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    )


def test_names_are_prefixed_with_the_release(profile):
    from tests.charts.chart_render import render_objects, values_for

    objs = render_objects(values_for(profile), name="prod", namespace="ml")
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding"}
    for o in objs:
        name = o["metadata"]["name"]
        assert name.startswith("ml-prod-adept" if o["kind"] in cluster_scoped else "prod-adept"), name
        assert len(name) <= 63
