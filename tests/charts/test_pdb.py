"""PodDisruptionBudgets for the serving worker groups."""

import pytest

from tests.charts.chart_render import find, one, render_objects, values_for

pytestmark = pytest.mark.charts


def test_pdbs_match_the_worker_pods(default_objects):
    pdbs = {p["metadata"]["name"]: p for p in find(default_objects, "PodDisruptionBudget")}
    assert set(pdbs) == {"adept-serving-cpu", "adept-serving-gpu"}
    rs = one(default_objects, "RayService")
    for group in rs["spec"]["rayClusterConfig"]["workerGroupSpecs"]:
        name = "adept-serving-" + group["groupName"].removesuffix("-workers")
        sel = pdbs[name]["spec"]["selector"]["matchLabels"]
        assert sel.items() <= group["template"]["metadata"]["labels"].items()
        assert pdbs[name]["spec"]["maxUnavailable"] == 1


def test_no_pdb_for_disabled_groups():
    assert not find(render_objects(values_for("cpu-dev")), "PodDisruptionBudget")
