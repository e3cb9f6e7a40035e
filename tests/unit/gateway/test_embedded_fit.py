"""Embedded mode says up front whether the autoscaled deployments fit this machine's CPUs (no Ray needed)."""

from __future__ import annotations

import pytest

from adept.config.serving import ServingConfig
from adept.errors import ConfigError
from services.embedded import check_replicas_fit


def _config(llm: dict) -> ServingConfig:
    return ServingConfig.model_validate({"deployments": {"llm": llm}})


def test_two_half_cpu_llm_replicas_fit_two_cores():
    cfg = _config({"autoscaling_config": {"max_replicas": 2}, "ray_actor_options": {"num_cpus": 0.5}})
    assert check_replicas_fit(cfg, 2) == []  # 0.1 + 0.25 + 2 x 0.5


def test_more_llm_replicas_than_fit_are_named():
    cfg = _config({"autoscaling_config": {"max_replicas": 4}, "ray_actor_options": {"num_cpus": 0.5}})
    (warning,) = check_replicas_fit(cfg, 2)
    assert "3 of 4 LLM replicas fit" in warning  # (2 - 0.35) // 0.5


def test_fewest_replicas_that_cannot_fit_are_refused():
    cfg = _config(
        {"autoscaling_config": {"min_replicas": 2, "max_replicas": 3}, "ray_actor_options": {"num_cpus": 1}}
    )
    with pytest.raises(ConfigError, match=r"fewest replicas reserve 2\.35 CPUs but Ray has 2"):
        check_replicas_fit(cfg, 2)
