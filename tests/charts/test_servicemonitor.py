"""Optional ServiceMonitor for Ray's metrics (Prometheus Operator)."""

import pytest

from tests.charts.chart_render import find, one, render_objects, values_for

pytestmark = pytest.mark.charts


def test_off_by_default(default_objects):
    assert not find(default_objects, "ServiceMonitor")


def test_service_monitor_selects_the_metrics_service():
    objs = render_objects(values_for("gpu-prod"))
    sm = one(objs, "ServiceMonitor")
    svc = one(objs, "Service", "adept-ray-metrics")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"] == "metrics"
    assert sm["spec"]["namespaceSelector"] == {"matchNames": ["adept"]}
    # Scraping is allowed through the policies.
    pol = one(objs, "NetworkPolicy", "adept-serving")
    assert any(r.get("ports") == [{"port": 8080, "protocol": "TCP"}] for r in pol["spec"]["ingress"])
