"""ServingConfig validation and the application builder's use of it (no Ray needed to bind)."""

from __future__ import annotations

import pytest

from adept.config.base import validate
from adept.config.serving import DeploymentOptions, ServingConfig
from adept.errors import ConfigError


def test_defaults_fit_a_two_core_machine():
    cfg = ServingConfig()
    cpus = sum(
        getattr(cfg.deployments, d).ray_actor_options.num_cpus for d in ("gateway", "llm", "retrieval")
    )
    assert cpus <= 1.0  # three deployments schedule on ray.init(num_cpus=2) with room to spare
    assert cfg.deployments.llm.to_serve_options()["num_replicas"] == 1


def test_every_field_is_described():
    def walk(model):
        for name, f in model.model_fields.items():
            assert f.description, f"{model.__name__}.{name} has no description"
            ann = f.annotation
            for sub in getattr(ann, "__args__", (ann,)):
                if (
                    isinstance(sub, type)
                    and hasattr(sub, "model_fields")
                    and sub.__module__ == "adept.config.serving"
                ):
                    walk(sub)

    walk(ServingConfig)


def test_all_errors_at_once_with_field_paths():
    with pytest.raises(ConfigError) as e:
        validate(
            ServingConfig,
            {
                "gateway": {"port": 0, "max_request_bytes": 10, "colour": "red"},
                "deployments": {"llm": {"num_replicas": 2, "autoscaling_config": {"min_replicas": 1}}},
            },
        )
    text = str(e.value)
    for needle in ("gateway.port", "gateway.max_request_bytes", "gateway.colour", "deployments.llm"):
        assert needle in text


def test_autoscaling_bounds_and_serve_options():
    opts = DeploymentOptions.model_validate(
        {"autoscaling_config": {"min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 4}}
    )
    serve_opts = opts.to_serve_options()
    assert "num_replicas" not in serve_opts
    assert serve_opts["autoscaling_config"]["max_replicas"] == 3
    assert opts.max_replicas == 3
    with pytest.raises(ValueError):
        DeploymentOptions.model_validate({"autoscaling_config": {"min_replicas": 4, "max_replicas": 2}})


def test_milvus_lite_allows_one_retrieval_replica(tmp_path):
    bad = {"platform": {"data_dir": str(tmp_path)}, "deployments": {"retrieval": {"num_replicas": 2}}}
    with pytest.raises(ValueError, match="Milvus Lite"):
        ServingConfig.model_validate(bad)
    ok = {**bad, "platform": {"data_dir": str(tmp_path), "milvus_uri": "http://milvus:19530"}}
    assert ServingConfig.model_validate(ok).deployments.retrieval.max_replicas == 2


def test_cuda_needs_a_gpu_reservation():
    with pytest.raises(ValueError, match="num_gpus"):
        ServingConfig.model_validate({"platform": {"device": "cuda"}})
    ServingConfig.model_validate(
        {"platform": {"device": "cuda"}, "deployments": {"llm": {"ray_actor_options": {"num_gpus": 1}}}}
    )


def test_build_app_applies_deployment_options(tmp_path, monkeypatch):
    from services.app import build_app

    monkeypatch.delenv("ADEPT_ADMIN_KEY", raising=False)
    app = build_app(
        {
            "platform": {"data_dir": str(tmp_path)},
            "deployments": {
                "llm": {
                    "autoscaling_config": {"min_replicas": 1, "max_replicas": 2},
                    "max_ongoing_requests": 32,
                },
                "gateway": {"num_replicas": 2},
            },
        }
    )
    gateway = app._bound_deployment
    assert gateway.num_replicas == 2
    llm = gateway.init_args[1]._bound_deployment  # (config, llm, retrieval, admin hash)
    assert llm.max_ongoing_requests == 32
    autoscaling = llm._deployment_config.autoscaling_config
    assert autoscaling.max_replicas == 2
    assert autoscaling.target_ongoing_requests == 12  # 0.75 x the default max_batch_size 16
    assert llm._deployment_config.graceful_shutdown_timeout_s == 315  # request_timeout_s 300 + margin
    assert len(gateway.init_args[3]) == 64  # only the admin key's sha256 travels to the replica
    assert (tmp_path / "admin.key").is_file()
    with pytest.raises(ConfigError, match=r"gateway\.port"):
        build_app({"gateway": {"port": "eighty"}})


def test_llm_autoscaling_target_follows_the_engine_batch():
    cfg = ServingConfig.model_validate(
        {
            "llm": {"max_batch_size": 8, "max_queued_requests": 64, "max_queued_per_tenant": 16},
            "deployments": {"llm": {"autoscaling_config": {"min_replicas": 1, "max_replicas": 3}}},
        }
    )
    llm = cfg.deployments.llm.to_serve_options(batch_capacity=8, queue_capacity=64, request_timeout_s=300)
    assert llm["autoscaling_config"]["target_ongoing_requests"] == 6  # 0.75 of the batch, not a constant
    assert llm["autoscaling_config"]["look_back_period_s"] == 30
    # Past one replica, a replica is "full" at two batches: the router then spreads adapters' requests.
    assert llm["max_ongoing_requests"] == 16
    assert llm["graceful_shutdown_timeout_s"] == 315  # the longest request, plus a margin to drain
    bigger = cfg.deployments.llm.to_serve_options(batch_capacity=32, queue_capacity=64)
    assert bigger["autoscaling_config"]["target_ongoing_requests"] == 24
    assert "graceful_shutdown_timeout_s" not in bigger  # Serve's default without a request timeout
    explicit = DeploymentOptions.model_validate(
        {"autoscaling_config": {"max_replicas": 2, "target_ongoing_requests": 5}, "max_ongoing_requests": 40}
    ).to_serve_options(batch_capacity=8)
    assert explicit["autoscaling_config"]["target_ongoing_requests"] == 5
    assert explicit["max_ongoing_requests"] == 40
    # Deployments without a batch get Serve's default target.
    other = DeploymentOptions.model_validate({"autoscaling_config": {"max_replicas": 2}}).to_serve_options()
    assert other["autoscaling_config"]["target_ongoing_requests"] == 2
    assert other["max_ongoing_requests"] == 100


def test_single_llm_replica_queues_in_its_own_fair_queue():
    opts = ServingConfig().deployments.llm.to_serve_options(batch_capacity=16, queue_capacity=256)
    assert opts["num_replicas"] == 1
    assert opts["max_ongoing_requests"] == int((16 + 256) * 1.2)  # Serve's router never queues first


def test_delays_that_would_flap_are_refused():
    with pytest.raises(ValueError, match="flapping"):
        DeploymentOptions.model_validate(
            {"autoscaling_config": {"max_replicas": 2, "upscale_delay_s": 60, "downscale_delay_s": 10}}
        )


def test_a_look_back_window_within_one_metric_push_is_refused():
    """Serve warns (and will refuse) ``look_back_period_s <= metrics_interval_s``; the config says so first."""
    with pytest.raises(
        ValueError, match=r"look_back_period_s \(3\) must exceed Serve's metric push interval"
    ):
        DeploymentOptions.model_validate({"autoscaling_config": {"max_replicas": 2, "look_back_period_s": 3}})


def test_serve_accepts_the_autoscaling_configs_without_a_warning(tmp_path):
    """What ``to_serve_options`` hands Serve validates there silently: the shipped default and the bench's."""
    import warnings

    from ray.serve.config import AutoscalingConfig

    from bench.autoscaling import autoscaling_config

    shipped = DeploymentOptions.model_validate({"autoscaling_config": {"max_replicas": 2}})
    bench = autoscaling_config(tmp_path, "bundled:smollm2-135m-instruct", 8000).deployments.llm
    for opts in (shipped, bench):
        given = opts.to_serve_options(batch_capacity=4)["autoscaling_config"]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            AutoscalingConfig(**given)
