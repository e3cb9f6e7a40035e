"""The drivers' CPUs of fine-tuning jobs: one value (``training.entrypointNumCpus``) that the gateway (the
job owner's placement check) and the operator (the Ray Jobs executor, and its owner's check) both read as
the platform's ``training_entrypoint_num_cpus``."""

from __future__ import annotations

import pytest
import yaml

from adept.config.base import load_config
from adept.config.platform import PlatformConfig
from tests.charts.chart_render import one, render, render_objects, values_for

pytestmark = pytest.mark.charts


@pytest.mark.parametrize("cpus", [1, 2])
def test_gateway_and_operator_get_the_same_number(cpus, monkeypatch):
    objs = render_objects(values_for("default", {"training": {"entrypointNumCpus": cpus}}))
    args = yaml.safe_load(one(objs, "RayService")["spec"]["serveConfigV2"])["applications"][0]["args"]
    assert PlatformConfig.model_validate(args["platform"]).training_entrypoint_num_cpus == cpus
    container = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    monkeypatch.setenv("ADEPT_TRAINING_ENTRYPOINT_NUM_CPUS", env["ADEPT_TRAINING_ENTRYPOINT_NUM_CPUS"])
    assert load_config(PlatformConfig).training_entrypoint_num_cpus == cpus  # as the operator loads it
    notes = render(values_for("default", {"training": {"entrypointNumCpus": cpus}}))["adept/templates/NOTES.txt"]
    assert f"--entrypoint-num-cpus {cpus} " in notes
