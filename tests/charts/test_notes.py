"""NOTES.txt: how to get the admin key, create a tenant, call the API and submit a job."""

import pytest

from tests.charts.chart_render import render, values_for

pytestmark = pytest.mark.charts


def notes(values=None):
    return render(values)["adept/templates/NOTES.txt"]


def test_notes_walk_through_first_steps():
    text = notes()
    assert "kubectl -n adept get secret adept-admin" in text
    assert "port-forward svc/adept-serve-svc 8000:8000" in text
    assert "-X POST $ADEPT_URL/admin/tenants" in text
    assert "/v1/chat/completions" in text
    assert "ray job submit --address http://127.0.0.1:8265" in text


def test_notes_use_the_ingress_host():
    assert "ADEPT_URL=https://adept.acme.example" in notes(values_for("gpu-prod"))
