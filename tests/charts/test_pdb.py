"""PodDisruptionBudgets for the serving worker groups: ones a node drain can honour."""

import helm_python
import pytest

from tests.charts.chart_render import find, one, render_objects, values_for

pytestmark = pytest.mark.charts


def pdbs(objs):
    return {p["metadata"]["name"]: p for p in find(objs, "PodDisruptionBudget")}


def test_pdbs_use_an_integer_min_available_below_the_group_floor():
    """RayCluster pods have no scale subresource: only an integer minAvailable lets the eviction API decide."""
    objs = render_objects(values_for("gpu-prod"))
    found = pdbs(objs)
    assert set(found) == {"adept-serving-cpu", "adept-serving-gpu"}
    rs = one(objs, "RayService")
    for group in rs["spec"]["rayClusterConfig"]["workerGroupSpecs"]:
        pdb = found["adept-serving-" + group["groupName"].removesuffix("-workers")]
        assert set(pdb["spec"]) == {"minAvailable", "selector"}  # no maxUnavailable, no percentage
        assert isinstance(pdb["spec"]["minAvailable"], int)
        # A drain may evict a worker even when the group sits at its floor.
        assert 0 < pdb["spec"]["minAvailable"] < group["minReplicas"]
        assert (
            pdb["spec"]["selector"]["matchLabels"].items() <= group["template"]["metadata"]["labels"].items()
        )


def test_a_group_whose_floor_is_one_worker_gets_no_pdb(default_objects):
    """Protecting the only pod of a group would block every drain of its node."""
    assert not pdbs(default_objects)
    objs = render_objects({"serving": {"gpuWorkers": {"minReplicas": 3, "replicas": 3}}})
    assert set(pdbs(objs)) == {"adept-serving-gpu"}
    assert pdbs(objs)["adept-serving-gpu"]["spec"]["minAvailable"] == 2


def test_min_available_can_be_set_but_not_to_the_floor():
    values = {
        "serving": {
            "gpuWorkers": {"minReplicas": 4, "replicas": 4},
            "cpuWorkers": {"minReplicas": 2, "replicas": 2},
        }
    }
    values["serving"]["podDisruptionBudget"] = {"minAvailable": 1}
    assert {p["spec"]["minAvailable"] for p in pdbs(render_objects(values)).values()} == {1}
    values["serving"]["podDisruptionBudget"] = {"minAvailable": 2}
    with pytest.raises(
        helm_python.HelmError,
        match=r"minAvailable \(2\) must be below serving\.cpuWorkers\.minReplicas \(2\)",
    ):
        render_objects(values)


def test_no_pdb_for_disabled_groups_or_when_switched_off():
    assert not pdbs(render_objects(values_for("cpu-dev")))
    assert not pdbs(
        render_objects(values_for("gpu-prod", {"serving": {"podDisruptionBudget": {"enabled": False}}}))
    )
