"""Ingress routes tenants to the Serve HTTP endpoint (the gateway)."""

import pytest

from tests.charts.chart_render import find, one, render_objects, values_for

pytestmark = pytest.mark.charts


def test_no_ingress_by_default(default_objects):
    assert not find(default_objects, "Ingress")


def test_ingress_targets_the_serve_service():
    ing = one(render_objects(values_for("gpu-prod")), "Ingress")
    assert ing["spec"]["ingressClassName"] == "nginx"
    rule = ing["spec"]["rules"][0]
    assert rule["host"] == "adept.acme.example"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "adept-serve-svc", "port": {"number": 8000}}
    assert ing["spec"]["tls"][0]["secretName"] == "adept-tls"
