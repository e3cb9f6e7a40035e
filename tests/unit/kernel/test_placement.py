"""adept.placement: where Ray would put a job's workers and driver, and the defaults a cluster shape implies."""

from __future__ import annotations

import pytest

from adept.config.cluster_shape import ClusterShape, NodeGroupShape, quantity, ray_cpus
from adept.config.platform import PlatformConfig
from adept.config.training import FineTuneJobConfig, WorkersSection
from adept.errors import InvalidRequest
from adept.placement import (
    DoesNotFit,
    check_job_fits,
    default_job_resources,
    fit_job,
    place,
    place_job,
)

HEAD = NodeGroupShape(name="head", cpus=0)
GPU = NodeGroupShape(name="gpu-workers", cpus="8", gpus=1, min_replicas=0, max_replicas=4)
CPU = NodeGroupShape(name="cpu-workers", cpus="2", min_replicas=0, max_replicas=2)


def gpu_workers(n: int, cpu: float = 7) -> WorkersSection:
    return WorkersSection(num_workers=n, use_gpu=True, resources_per_worker={"CPU": cpu, "GPU": 1})


def test_quantities_become_the_cpus_kuberay_advertises():
    assert quantity("500m") == 0.5 and quantity("8") == 8 and quantity(2) == 2 and quantity("1Gi") == 2**30
    assert ray_cpus("500m") == 1 and ray_cpus("2") == 2 and ray_cpus("2.5") == 3
    with pytest.raises(ValueError, match="not a quantity"):
        quantity("lots")


def test_four_gpu_workers_and_the_driver_fit_four_pods_with_the_driver_on_a_worker():
    shape = ClusterShape(head=HEAD, groups=[GPU])
    placed = place_job(shape, gpu_workers(4))
    assert placed.count("gpu-workers") == 4 and placed.where("the job's driver") == "gpu-workers"


def test_full_pod_workers_plus_the_driver_need_a_fifth_pod_and_are_refused():
    shape = ClusterShape(head=HEAD, groups=[GPU])
    with pytest.raises(DoesNotFit) as e:
        check_job_fits(shape, gpu_workers(4, cpu=8))
    assert isinstance(e.value, InvalidRequest) and e.value.status == 400
    assert "the job's driver needs {CPU: 1}" in e.value.message and "gpu-workers: 4 x" in e.value.message


def test_a_head_that_offers_cpus_would_take_the_driver_and_one_that_offers_none_never_does():
    generous = ClusterShape(head=NodeGroupShape(name="head", cpus=2), groups=[GPU])
    assert place_job(generous, gpu_workers(1)).where("the job's driver") == "head"
    assert (
        place_job(ClusterShape(head=HEAD, groups=[GPU]), gpu_workers(1)).where("the job's driver") != "head"
    )


def test_cpu_only_work_prefers_a_cpu_group_over_a_gpu_node():
    shape = ClusterShape(head=HEAD, groups=[GPU, CPU])
    placed = place(shape, [("prep", {"CPU": 1.0})])
    assert placed.where("prep") == "cpu-workers"


def test_no_shape_checks_nothing_and_changes_nothing():
    check_job_fits(None, gpu_workers(100))
    job = FineTuneJobConfig.model_validate({"tenant": "t", "adapter": "a", "data": {"path": "x.jsonl"}})
    assert fit_job(job, None) is job


def test_defaults_follow_the_training_group():
    assert default_job_resources(ClusterShape(head=HEAD, groups=[GPU])) == gpu_workers(1)
    two = NodeGroupShape(name="gpu-workers", cpus=16, gpus=2, max_replicas=2)
    assert default_job_resources(ClusterShape(head=HEAD, groups=[two])) == gpu_workers(2, cpu=7)
    cpu_only = default_job_resources(ClusterShape(head=HEAD, groups=[CPU]))
    assert cpu_only == WorkersSection(num_workers=1, resources_per_worker={"CPU": 1.0})
    check_job_fits(ClusterShape(head=HEAD, groups=[CPU]), cpu_only)


def test_a_job_naming_workers_keeps_them_and_one_naming_none_gets_the_groups():
    shape = ClusterShape(head=HEAD, groups=[GPU])
    bare = FineTuneJobConfig.model_validate({"tenant": "t", "adapter": "a", "data": {"path": "x.jsonl"}})
    assert fit_job(bare, shape).workers == gpu_workers(1)
    own = FineTuneJobConfig.model_validate(
        {
            "tenant": "t",
            "adapter": "a",
            "data": {"path": "x.jsonl"},
            "workers": {"num_workers": 2, "use_gpu": True},
        }
    )
    assert fit_job(own, shape).workers == own.workers
    with pytest.raises(DoesNotFit, match="cannot run on the training cluster"):
        fit_job(own.model_copy(update={"workers": gpu_workers(9)}), shape)


@pytest.fixture
def owner(tmp_path):
    """The kernel's ``FineTuning`` over a platform whose training cluster is one GPU group (as the chart says)."""
    import asyncio

    from adept.config.tenant import TenantSpec
    from adept.finetuning.files import FileStore
    from adept.finetuning.service import FineTuning
    from adept.finetuning.store import SQLiteJobStore
    from adept.platform import Platform

    config = PlatformConfig(
        data_dir=tmp_path / "data",
        model="bundled:test-base",
        training_shape=ClusterShape(head=HEAD, groups=[GPU]),
    )
    kernel = Platform(config)
    asyncio.run(kernel.create_tenant(TenantSpec(name="acme")))

    def make(settings=None, **kw) -> FineTuning:
        from adept.config.finetuning import FineTuningConfig

        store = SQLiteJobStore(config.jobs_db)
        return FineTuning(
            kernel, FileStore(str(tmp_path / "files")), store, settings or FineTuningConfig(), **kw
        )

    yield make
    kernel.close()


def config_job(**extra) -> FineTuneJobConfig:
    return FineTuneJobConfig.model_validate(
        {"tenant": "acme", "adapter": "a", "data": {"path": "x.jsonl"}, **extra}
    )


async def test_api_jobs_get_the_group_unless_the_platform_team_set_workers(owner):
    from adept.config.finetuning import FineTuningConfig
    from adept.finetuning.service import JobRequest

    async def created(ft):
        tenant = await ft.platform.get_tenant("acme")
        line = b'{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n'
        f = await ft.upload_file(tenant, "t.jsonl", "fine-tune", line)
        return await ft.create(tenant, JobRequest(model="bundled:test-base", training_file=f.id))

    assert (await created(owner())).config["workers"] == gpu_workers(1).model_dump()
    mine = FineTuningConfig(workers=WorkersSection(num_workers=2, resources_per_worker={"CPU": 4}))
    assert (await created(owner(mine))).config["workers"]["num_workers"] == 2
    with pytest.raises(DoesNotFit, match="cannot run on the training cluster"):
        await created(owner(FineTuningConfig(workers=gpu_workers(8))))


async def test_configs_made_with_kubectl_or_adept_finetune_get_the_group_and_are_checked(owner):
    """``create_from_config`` (a FineTuneJob, ``adept finetune``): the same default and check as API jobs."""
    ft = owner()
    bare = await ft.create_from_config(config_job())
    assert bare.config["workers"] == gpu_workers(1).model_dump()
    own = await ft.create_from_config(config_job(workers={"num_workers": 2, "use_gpu": True}))
    assert own.config["workers"]["num_workers"] == 2 and own.config["workers"]["use_gpu"] is True
    with pytest.raises(DoesNotFit, match=r"cannot run on the training cluster.*gpu-workers: 4 x") as e:
        await ft.create_from_config(config_job(workers=gpu_workers(5).model_dump()))
    assert e.value.status == 400 and e.value.param == "workers"
    assert {r.id for r in await ft.list("acme")} == {bare.id, own.id}  # nothing stored for the refused one


async def test_the_drivers_cpus_are_the_platforms_one_number(owner):
    """Four 7-CPU workers on four 8-CPU pods leave one CPU each: a 1-CPU driver fits, a 2-CPU one never does.

    The number is the platform's ``training_entrypoint_num_cpus``: the owner places jobs with it (in the
    gateway and the operator alike) and the operator's ``RayJobs`` submits drivers with it."""
    from adept.finetuning.executors import RayJobs

    four = config_job(workers=gpu_workers(4).model_dump())
    first = owner(executor=RayJobs(None))
    assert first.platform.config.training_entrypoint_num_cpus == first.entrypoint_num_cpus == 1
    await first.create_from_config(four)
    greedy_config = first.platform.config.model_copy(update={"training_entrypoint_num_cpus": 2.0})
    first.platform.config = greedy_config
    greedy = owner()
    assert greedy.entrypoint_num_cpus == 2
    with pytest.raises(DoesNotFit, match=r"the job's driver needs \{CPU: 2\}"):
        await greedy.create_from_config(four)


def test_the_platform_config_carries_the_shape_from_env(monkeypatch):
    import json

    from adept.config.base import load_config

    shape = {
        "head": {"name": "head", "cpus": "0"},
        "groups": [{"name": "gpu-workers", "cpus": "8", "gpus": 1, "max_replicas": 4}],
    }
    monkeypatch.setenv("ADEPT_TRAINING_SHAPE", json.dumps(shape))
    cfg = load_config(PlatformConfig)
    assert cfg.training_shape.groups[0].gpus == 1 and cfg.training_shape.head.cpus == 0
