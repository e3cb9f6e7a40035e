"""NetworkPolicy: only the gateway is reachable from outside; Milvus only from Ray pods and the operator."""

import pytest

from tests.charts.chart_render import find, one, render_objects, values_for

pytestmark = pytest.mark.charts


def test_policies_present(profile_objects):
    names = {o["metadata"]["name"] for o in find(profile_objects, "NetworkPolicy")}
    assert {"adept-serving", "adept-operator", "adept-milvus"} <= names


def test_only_the_gateway_port_is_open_to_anyone(default_objects):
    pol = one(default_objects, "NetworkPolicy", "adept-serving")
    open_rules = [r for r in pol["spec"]["ingress"] if "from" not in r]
    assert open_rules == [{"ports": [{"port": 8000, "protocol": "TCP"}]}]
    for rule in pol["spec"]["ingress"]:
        if "ports" not in rule:  # all ports: only from the same Ray cluster
            assert rule["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "serving"


def test_gateway_peers_can_be_restricted():
    pol = one(render_objects(values_for("gpu-prod")), "NetworkPolicy", "adept-serving")
    gw = next(
        r
        for r in pol["spec"]["ingress"]
        if r.get("ports") == [{"port": 8000, "protocol": "TCP"}]
        and "from" in r
        and "namespaceSelector" in r["from"][0]
        and "podSelector" not in r["from"][0]
    )
    assert gw["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "ingress-nginx"
    }


def test_training_job_api_only_from_operators(default_objects):
    pol = one(default_objects, "NetworkPolicy", "adept-training")
    assert all("from" in r for r in pol["spec"]["ingress"]), "nothing outside may reach the training cluster"


def test_milvus_only_from_ray_pods_and_the_operator(default_objects):
    pol = one(default_objects, "NetworkPolicy", "adept-milvus")
    assert pol["spec"]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "milvus",
        "app.kubernetes.io/instance": "adept",
    }
    peers = pol["spec"]["ingress"][0]["from"]
    components = next(
        e
        for p in peers
        for e in p["podSelector"].get("matchExpressions", [])
        if e["key"] == "app.kubernetes.io/component"
    )
    assert sorted(components["values"]) == ["operator", "serving", "training"]
    assert all("namespaceSelector" not in p for p in peers)  # same namespace only


def test_operator_accepts_no_traffic(default_objects):
    assert one(default_objects, "NetworkPolicy", "adept-operator")["spec"]["ingress"] == []


def test_policies_can_be_disabled():
    assert not find(render_objects({"networkPolicy": {"enabled": False}}), "NetworkPolicy")
