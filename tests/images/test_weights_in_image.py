"""The chart's weights Job and a Ray pod's init container, run from the CPU image as rendered.

The model hub is the loopback emulator of tests/integration/models (the real hub is unreachable here),
named through the chart's own `modelCache.download.endpoint`; the cache is one host directory standing
in for the model-cache PVC that the Job and the pods share.
"""

from __future__ import annotations

import time

import pytest

from tests.images.conftest import container_env, mounts, pod_volumes, rendered
from tests.images.containers import Container, wait_for
from tests.integration.models.hub_server import HubServer, Repo

pytestmark = pytest.mark.image


def test_the_job_fills_the_cache_and_releases_the_waiting_pod(tiny_phi3, cpu_image, admin_key, scratch):
    with HubServer({"acme/tiny-phi3": Repo.from_dir(tiny_phi3, skip=("adept_model.json",))}) as hub:
        values = {
            "model": {"name": "acme/tiny-phi3", "embedding": "bundled:all-minilm-l6-v2"},
            "modelCache": {"download": {"endpoint": hub.url}},
        }
        chart = rendered(values)
        (job,) = [  # the weights Job (the other one sets the bundled Milvus's password)
            obj
            for (kind, _), obj in chart.items()
            if kind == "Job" and obj["metadata"]["labels"]["app.kubernetes.io/component"] == "weights"
        ]
        job_pod = job["spec"]["template"]["spec"]
        head_pod = chart[("RayService", "adept")]["spec"]["rayClusterConfig"]["headGroupSpec"]["template"][
            "spec"
        ]
        # One cache volume for both, as the model-cache PVC is.
        cache = pod_volumes(job_pod, scratch / "weights")
        head_volumes = pod_volumes(head_pod, scratch / "weights-head") | {"models": cache["models"]}
        box = Container(cpu_image)
        try:
            (init,) = head_pod["initContainers"]
            log = scratch / "init.log"
            waiting = box.start(
                init["command"], log=log, env=container_env(init, {}), volumes=mounts(init, head_volumes)
            )
            wait_for(
                "the init container to report what it waits for",
                lambda: "waiting" in log.read_text(),
                timeout=120,
                log=log,
            )
            assert (
                waiting.poll() is None and job["metadata"]["name"] in log.read_text()
            )  # its hint names the Job

            (download,) = job_pod["containers"]
            started = time.monotonic()
            done = box.run(
                download["command"],
                env=container_env(download, {}),
                volumes=mounts(download, cache),
                timeout=600,
            )
            assert done.returncode == 0, done.stdout + done.stderr
            assert (
                "ready: acme/tiny-phi3" in done.stdout and "100%" in done.stderr
            )  # progress in the Job's log
            fetched = len(hub.fetched())
            assert fetched >= 3

            wait_for(
                "the init container to let the pod start", lambda: waiting.poll() == 0, timeout=60, log=log
            )
            assert "ready: acme/tiny-phi3, bundled:all-minilm-l6-v2" in log.read_text()

            # The Job again (a new revision of the release, a retry): nothing is fetched twice.
            again = box.run(
                download["command"],
                env=container_env(download, {}),
                volumes=mounts(download, cache),
                timeout=600,
            )
            assert again.returncode == 0 and len(hub.fetched()) == fetched, again.stderr
            print(f"weights Job in the image: {time.monotonic() - started:.1f} s for both runs")
        finally:
            box.remove()
