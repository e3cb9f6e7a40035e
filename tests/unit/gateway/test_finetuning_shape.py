"""Tenants' API fine-tuning jobs on a cluster: they train on the training group's GPUs (the chart's
``platform.training_shape``), and a platform setting that could never be placed is refused at creation.

The gateway only translates: both rules are the kernel owner's (``FineTuning.create`` → ``_check_plan``,
``adept.placement``); this checks them through the OpenAI SDK, on the gateway's real app.
"""

from __future__ import annotations

import openai
import pytest

from adept.config.cluster_shape import ClusterShape
from adept.config.finetuning import FineTuningConfig
from adept.config.training import WorkersSection
from adept.finetuning.service import FineTuning
from services.gateway.finetuning import FineTuningService
from tests.unit.console.conftest import platform  # noqa: F401  (the gateway's app with real stores)
from tests.unit.gateway.test_finetuning_api import client, ft, upload  # noqa: F401

SHAPE = ClusterShape.model_validate(
    {
        "head": {"name": "head", "cpus": "0"},
        "groups": [{"name": "gpu-workers", "cpus": "8", "gpus": 1, "min_replicas": 0, "max_replicas": 4}],
    }
)


@pytest.fixture
def on_cluster(ft):  # noqa: F811
    ctx = ft["ctx"]
    ctx.platform.config = ctx.platform.config.model_copy(update={"training_shape": SHAPE})
    return ft


async def test_a_tenant_job_trains_on_the_training_groups_gpus(on_cluster) -> None:
    acme = client(on_cluster, "acme")
    f = await upload(acme)
    job = await acme.fine_tuning.jobs.create(model="bundled:test-base", training_file=f.id)
    record = on_cluster["jobs"].get("acme", job.id)
    assert record.config["workers"] == {
        "num_workers": 1,
        "use_gpu": True,
        "resources_per_worker": {"CPU": 7.0, "GPU": 1.0},
    }


async def test_platform_workers_the_cluster_cannot_hold_are_refused_at_creation(on_cluster) -> None:
    ctx, owner = on_cluster["ctx"], on_cluster["owner"]
    big = FineTuningConfig(
        workers=WorkersSection(num_workers=8, use_gpu=True, resources_per_worker={"CPU": 7})
    )
    ctx.finetuning = FineTuningService(
        FineTuning(owner.platform, owner.files, owner.jobs, big, models=owner.models)
    )
    acme = client(on_cluster, "acme")
    f = await upload(acme)
    with pytest.raises(openai.BadRequestError) as e:
        await acme.fine_tuning.jobs.create(model="bundled:test-base", training_file=f.id)
    assert "cannot run on the training cluster" in e.value.body["message"]
    assert e.value.body["param"] == "workers"
    assert (await acme.fine_tuning.jobs.list()).data == []
