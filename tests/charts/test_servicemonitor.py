"""Optional ServiceMonitor for Ray's metrics, rendered only where the Prometheus Operator's API is served."""

import pytest

from tests.charts.chart_render import find, objects, one, render, render_objects, values_for

pytestmark = pytest.mark.charts

PROMETHEUS_OPERATOR = ["monitoring.coreos.com/v1", "monitoring.coreos.com/v1/ServiceMonitor"]


def test_off_by_default(default_objects):
    assert not find(default_objects, "ServiceMonitor")


def test_service_monitor_selects_the_metrics_service():
    objs = objects(render(values_for("gpu-prod"), api_versions=PROMETHEUS_OPERATOR))
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


def test_without_the_prometheus_operator_install_succeeds_and_the_notes_say_why():
    """A cluster without monitoring.coreos.com/v1 would reject the kind: it is skipped, not failed."""
    rendered = render(values_for("gpu-prod"))
    objs = objects(rendered)
    assert not find(objs, "ServiceMonitor")
    one(objs, "Service", "adept-ray-metrics")  # still scrapeable by any Prometheus
    assert "the ServiceMonitor was skipped" in rendered["adept/templates/NOTES.txt"]
    with_api = render(values_for("gpu-prod"), api_versions=PROMETHEUS_OPERATOR)
    assert "ServiceMonitor was skipped" not in with_api["adept/templates/NOTES.txt"]
    assert not find(render_objects(values_for("default")), "Service", "adept-ray-metrics")
