"""NetworkPolicies: ingress and egress for every pod of the release; no metadata service, no "any namespace" peer."""

import pytest

from tests.charts.chart_render import find, one, render_objects, values_for

pytestmark = pytest.mark.charts

METADATA = "169.254.169.254"
# Every cloud metadata endpoint no egress rule may reach, IPv4 and IPv6 (issue 22: on IPv6 clusters the AWS and
# Google Cloud endpoints are not link-local, so "::/0 except fe80::/10" left them open).
METADATA_ENDPOINTS = {
    "169.254.169.254": "AWS, Google Cloud, Azure, Oracle Cloud, DigitalOcean, OpenStack instance metadata",
    "169.254.170.2": "AWS ECS task metadata and credentials",
    "100.100.100.200": "Alibaba Cloud instance metadata",
    "168.63.129.16": "Azure WireServer",
    "192.0.0.192": "Oracle Cloud Classic metadata",
    "fd00:ec2::254": "AWS instance metadata (IPv6, Nitro)",
    "fd00:ec2::23": "AWS ECS task metadata (IPv6)",
    "fd20:ce::254": "Google Cloud metadata (IPv6)",
    "fe80::a9fe:a9fe": "link-local IPv6 form of 169.254.169.254",
    "::ffff:169.254.169.254": "IPv4-mapped IPv6 form of 169.254.169.254",
    "::ffff:100.100.100.200": "IPv4-mapped IPv6 form of Alibaba's",
}


def _peers(rules, direction):
    key = "from" if direction == "ingress" else "to"
    return [p for r in rules for p in r.get(key, [])]


def _admits_metadata(rule, endpoint: str = METADATA) -> bool:
    import ipaddress

    target = ipaddress.ip_address(endpoint)
    for peer in rule.get("to", []):
        block = peer.get("ipBlock")
        if not block:
            continue
        net = ipaddress.ip_network(block["cidr"])
        if target.version == net.version and target in net:
            if not any(target in ipaddress.ip_network(e) for e in block.get("except", [])):
                return True
    return False


def test_policies_present(profile_objects):
    names = {o["metadata"]["name"] for o in find(profile_objects, "NetworkPolicy")}
    assert {"adept-serving", "adept-operator", "adept-jobs"} <= names
    for pol in find(profile_objects, "NetworkPolicy"):
        if pol["metadata"]["name"] != "adept-training-head":  # adds egress to adept-training's rules
            assert "Ingress" in pol["spec"]["policyTypes"], pol["metadata"]["name"]
        assert "Egress" in pol["spec"]["policyTypes"], pol["metadata"]["name"]


def test_no_pod_may_reach_the_metadata_service(profile_objects):
    for pol in find(profile_objects, "NetworkPolicy"):
        for rule in pol["spec"].get("egress", []):
            assert rule.get("to"), f"{pol['metadata']['name']}: an egress rule to anywhere"
            assert not _admits_metadata(rule), f"{pol['metadata']['name']} admits {METADATA}"


def _all_egress_rules(objs):
    for pol in find(objs, "NetworkPolicy"):
        for rule in pol["spec"].get("egress", []):
            yield pol["metadata"]["name"], rule


@pytest.mark.parametrize("endpoint", sorted(METADATA_ENDPOINTS))
def test_no_egress_rule_reaches_a_cloud_metadata_endpoint(profile_objects, endpoint):
    for name, rule in _all_egress_rules(profile_objects):
        assert not _admits_metadata(rule, endpoint), f"{name} admits {endpoint} ({METADATA_ENDPOINTS[endpoint]})"


@pytest.mark.parametrize("endpoint", sorted(METADATA_ENDPOINTS))
def test_a_configured_anywhere_gets_the_same_exceptions(endpoint):
    anywhere = {"cidrs": ["0.0.0.0/0", "::/0"], "ports": [443]}
    objs = render_objects(
        values_for(
            "gpu-prod",
            {
                "networkPolicy": {"kubernetesApi": anywhere, "s3": anywhere},
                "training": {"dataStore": {"cidrs": ["0.0.0.0/0", "::/0"]}},
            },
        )
    )
    rules = list(_all_egress_rules(objs))
    assert any(p.get("ipBlock", {}).get("cidr") == "::/0" for _, r in rules for p in r.get("to", []))
    for name, rule in rules:
        assert not _admits_metadata(rule, endpoint), f"{name} admits {endpoint}"


def test_every_namespace_peer_is_named(profile_objects):
    for pol in find(profile_objects, "NetworkPolicy"):
        for direction in ("ingress", "egress"):
            for peer in _peers(pol["spec"].get(direction, []), direction):
                if "namespaceSelector" in peer:
                    labels = peer["namespaceSelector"].get("matchLabels", {})
                    assert "kubernetes.io/metadata.name" in labels, (pol["metadata"]["name"], peer)


def test_every_pod_may_resolve_names(profile_objects):
    for pol in find(profile_objects, "NetworkPolicy"):
        if pol["metadata"]["name"] == "adept-training-head":
            continue
        dns = [r for r in pol["spec"]["egress"] if {"port": 53, "protocol": "UDP"} in r.get("ports", [])]
        assert dns, pol["metadata"]["name"]
        assert dns[0]["to"][-1]["namespaceSelector"]["matchLabels"] == {
            "kubernetes.io/metadata.name": "kube-system"
        }


def test_only_the_gateway_port_is_open_to_anyone(default_objects):
    pol = one(default_objects, "NetworkPolicy", "adept-serving")
    open_rules = [r for r in pol["spec"]["ingress"] if "from" not in r]
    assert open_rules == [{"ports": [{"port": 8000, "protocol": "TCP"}]}]
    for rule in pol["spec"]["ingress"]:
        if "ports" not in rule:  # all ports: only from the same Ray cluster
            assert rule["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "serving"


def test_the_operator_reaches_the_gateway_even_when_its_peers_are_restricted():
    """gpu-prod admits the gateway port only from ingress-nginx; the operator's adapter unloads still get through."""
    objs = render_objects(values_for("gpu-prod"))
    serving = one(objs, "NetworkPolicy", "adept-serving")
    from_operator = [
        r
        for r in serving["spec"]["ingress"]
        if any(
            p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component") == "operator"
            for p in r.get("from", [])
        )
    ]
    assert from_operator and from_operator[0]["ports"] == [{"port": 8000, "protocol": "TCP"}]
    operator = one(objs, "NetworkPolicy", "adept-operator")
    to_serving = [
        r
        for r in operator["spec"]["egress"]
        if any(
            p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component") == "serving"
            for p in r.get("to", [])
        )
    ]
    assert to_serving and to_serving[0]["ports"] == [{"port": 8000, "protocol": "TCP"}]


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


def test_kuberay_is_admitted_from_its_own_namespace_only():
    objs = render_objects({"networkPolicy": {"kuberayOperatorNamespace": "ray-system"}})
    for name in ("adept-serving", "adept-training"):
        pol = one(objs, "NetworkPolicy", name)
        kuberay = [
            p
            for p in _peers(pol["spec"]["ingress"], "ingress")
            if p.get("podSelector", {}).get("matchLabels") == {"app.kubernetes.io/name": "kuberay-operator"}
        ]
        assert kuberay == [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ray-system"}},
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "kuberay-operator"}},
            }
        ]


def test_training_pods_reach_nothing_but_each_other(default_objects):
    pol = one(default_objects, "NetworkPolicy", "adept-training")
    assert all("from" in r for r in pol["spec"]["ingress"]), "nothing outside may reach the training cluster"
    egress = pol["spec"]["egress"]
    dns, own = egress
    assert own == {"to": [{"podSelector": {"matchLabels": {**pol["spec"]["podSelector"]["matchLabels"]}}}]}
    # Not Milvus, not the gateway, not S3, not the Kubernetes API (tenants' fine-tunes run here).
    assert not any("ipBlock" in p for r in egress for p in r["to"])
    head = one(default_objects, "NetworkPolicy", "adept-training-head")
    assert head["spec"]["podSelector"]["matchLabels"]["adept.io/ray-group"] == "head"
    assert [p["port"] for p in head["spec"]["egress"][0]["ports"]] == [443, 6443]  # the autoscaler


def test_egress_to_s3_and_the_api_server_follows_the_configured_addresses():
    objs = render_objects(
        {
            "adapterStore": {"type": "s3", "s3": {"uri": "s3://b/adapters", "region": "eu-west-1"}},
            "networkPolicy": {
                "s3": {"cidrs": ["52.95.0.0/16"], "ports": [443]},
                "kubernetesApi": {"cidrs": ["10.0.0.1/32"], "ports": [6443]},
            },
        }
    )
    for name in ("adept-serving", "adept-operator"):
        blocks = [
            (p["ipBlock"]["cidr"], tuple(x["port"] for x in r["ports"]))
            for r in one(objs, "NetworkPolicy", name)["spec"]["egress"]
            for p in r["to"]
            if "ipBlock" in p
        ]
        assert ("52.95.0.0/16", (443,)) in blocks and ("10.0.0.1/32", (6443,)) in blocks, name
        assert all(cidr in ("52.95.0.0/16", "10.0.0.1/32") for cidr, _ in blocks), blocks


def test_a_node_local_dns_cache_can_be_allowed():
    objs = render_objects({"networkPolicy": {"dns": {"cidrs": ["169.254.20.10/32"]}}})
    rule = one(objs, "NetworkPolicy", "adept-serving")["spec"]["egress"][0]
    assert rule["to"][0] == {"ipBlock": {"cidr": "169.254.20.10/32"}}


def test_milvus_only_from_serving_pods(default_objects):
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
    # Retrieval runs in serving pods; the Job sets the root password. Not training pods, not the operator.
    assert sorted(components["values"]) == ["milvus-auth", "serving"]
    assert all("namespaceSelector" not in p for p in peers)  # same namespace only
    # Milvus itself reaches its own dependencies in the namespace and DNS, nothing outside.
    assert not any("ipBlock" in p for r in pol["spec"]["egress"] for p in r["to"])


def test_operator_accepts_no_traffic(default_objects):
    assert one(default_objects, "NetworkPolicy", "adept-operator")["spec"]["ingress"] == []


def test_policies_can_be_disabled():
    assert not find(render_objects({"networkPolicy": {"enabled": False}}), "NetworkPolicy")
