"""Fine-tuning settings the gateway and the operator must agree on, each given once in the values: the
drivers' CPUs (``training.entrypointNumCpus``, which the gateway's placement check and the operator's Ray
Jobs executor both read as ``training_entrypoint_num_cpus``) and ``serving.args.finetuning`` (retention,
eval-gated promotion's metric and margin)."""

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


def test_the_operator_reads_the_gateways_finetuning_settings(monkeypatch):
    """Retention and eval-gated promotion are decided by the job owner in the gateway (create) and the
    operator (publish, prune): both read serving.args.finetuning."""
    from operators.settings import load_finetuning_config

    wanted = {"promotion_metric": "f1", "promotion_margin": 0.1, "retention_days": 7}
    objs = render_objects(values_for("default", {"serving": {"args": {"finetuning": wanted}}}))
    args = yaml.safe_load(one(objs, "RayService")["spec"]["serveConfigV2"])["applications"][0]["args"]
    assert args["finetuning"] == wanted
    container = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    monkeypatch.setenv("ADEPT_FINETUNING_JSON", env["ADEPT_FINETUNING_JSON"])
    monkeypatch.delenv("ADEPT_OPERATOR_CONFIG", raising=False)
    got = load_finetuning_config()
    assert (got.promotion_metric, got.promotion_margin, got.retention_days) == ("f1", 0.1, 7)
    plain = render_objects(values_for("default"))
    container = one(plain, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "ADEPT_FINETUNING_JSON" not in {e["name"] for e in container["env"]}
