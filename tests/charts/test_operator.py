"""The Adept operator: Deployment, ServiceAccount, least-privilege RBAC matching our CRDs."""

import pytest
import yaml

from tests.charts.chart_render import find, one, our_crd_files, render_objects

pytestmark = pytest.mark.charts


def rules(objs, kind):
    return [r for o in find(objs, kind) for r in o["rules"]]


def test_operator_deployment(default_objects):
    dep = one(default_objects, "Deployment", "adept-operator")
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "adept-operator"
    one(default_objects, "ServiceAccount", "adept-operator")
    c = pod["containers"][0]
    # The operator's own small image (images/Containerfile.operator): no torch, no serving stack.
    assert c["image"] == "ghcr.io/adept-project/adept-operator:0.1.0"
    assert c["command"] == ["python", "-m", "operators"]
    assert {"--namespace=adept", "--standalone"} <= set(c["args"])
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["ADEPT_RAY_ADDRESS"] == "http://adept-jobs.adept.svc:8265"
    assert env["ADEPT_GATEWAY_URL"] == "http://adept-serve-svc.adept.svc:8000"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_rbac_is_least_privilege(profile_objects):
    namespaced = rules(profile_objects, "Role")
    for r in namespaced:
        assert "*" not in r["verbs"] and "*" not in r["resources"] and "*" not in r["apiGroups"], r
    # A namespace-only install: no cluster-scoped RBAC at all (kopf's scanning is off).
    assert not find(profile_objects, "ClusterRole") and not find(profile_objects, "ClusterRoleBinding")
    operator = one(profile_objects, "Role", "adept-operator")
    secrets = [r for r in operator["rules"] if r["resources"] == ["secrets"]]
    # Key Secrets by name: never list or watch, so it cannot enumerate the namespace's Secrets.
    assert secrets == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create", "patch", "delete"]}
    ]
    assert not any("update" in r["verbs"] for r in operator["rules"])
    # Jobs go over HTTP, not RayJob objects: of ray.io only reading the training RayCluster (the KubeRay check).
    ray = [r for r in namespaced if "ray.io" in r["apiGroups"]]
    assert all(r["verbs"] == ["get"] and r["resourceNames"] == ["adept-training"] for r in ray), ray
    binding = one(profile_objects, "RoleBinding", "adept-operator")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "adept-operator", "namespace": "adept"}]


def test_the_gateway_reads_tenants_and_finetunejobs_never_secrets(default_objects):
    role = one(default_objects, "Role", "adept-serving")
    granted = {res: set(r["verbs"]) for r in role["rules"] for res in r["resources"]}
    assert set(granted) == {"tenants", "finetunejobs"}
    assert granted["tenants"] >= {"get", "list", "watch", "create", "patch", "delete"}
    assert granted["finetunejobs"] >= {"create", "get", "list", "watch", "patch", "delete"}  # cancel: patch
    assert one(default_objects, "RoleBinding", "adept-serving")["subjects"][0]["name"] == "adept-serving"
    # The account mounts no token unless a pod template asks for it.
    assert one(default_objects, "ServiceAccount", "adept-serving")["automountServiceAccountToken"] is False


def test_watch_all_namespaces_uses_cluster_roles():
    objs = render_objects({"operator": {"watchAllNamespaces": True}})
    assert not find(objs, "Role", "adept-operator") and not find(objs, "RoleBinding", "adept-operator")
    cluster = one(objs, "ClusterRole")
    assert any(r["resources"] == ["namespaces"] for r in cluster["rules"])
    assert one(objs, "ClusterRoleBinding")["roleRef"]["name"] == cluster["metadata"]["name"]
    args = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--all-namespaces" in args


def test_peering_for_more_replicas():
    objs = render_objects({"operator": {"replicas": 2}})
    dep = one(objs, "Deployment")
    assert "--peering=adept" in dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert any(r["apiGroups"] == ["kopf.dev"] for r in one(objs, "Role", "adept-operator")["rules"])


def test_rbac_covers_our_crds():
    crds = [d for f in our_crd_files() for d in yaml.safe_load_all(f.read_text()) if d]
    objs = render_objects({"operator": {"replicas": 2}})
    operator = one(objs, "Role", "adept-operator")
    granted = {(g, res) for r in operator["rules"] for g in r["apiGroups"] for res in r["resources"]}
    for crd in crds:
        if crd["spec"]["scope"] == "Cluster":
            continue  # clusterkopfpeerings: only with watchAllNamespaces (ClusterRole), checked below
        group, plural = crd["spec"]["group"], crd["spec"]["names"]["plural"]
        assert (group, plural) in granted, f"operator RBAC lacks {plural}.{group}"


def test_operator_can_be_disabled():
    objs = render_objects({"operator": {"enabled": False}})
    assert not find(objs, "Deployment") and not find(objs, "Role", "adept-operator")


def test_cluster_wide_peering_rbac():
    objs = render_objects({"operator": {"replicas": 2, "watchAllNamespaces": True}})
    assert any(r["resources"] == ["clusterkopfpeerings"] for r in rules(objs, "ClusterRole"))
