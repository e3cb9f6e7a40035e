"""The CPU image runs what `helm install -f values-cpu-dev.yaml` puts in the RayService head pod.

From the rendered chart (Helm's own engine, not re-typed): the head's init container, the head container's
environment, volumes and user, the `ray start` command KubeRay builds from its group (tests/images/kuberay.py),
KubeRay's probes, and `serveConfigV2`, deployed the way KubeRay deploys it. Then a platform team's first
steps: a tenant through the admin API, a document into its knowledge base, a streamed RAG answer with a
citation, and `ray job submit` of the shipped CPU fine-tune config until the adapter is published and answers.

Stand-ins, and why: the Milvus chart's server is `milvus-lite server` from the same image, reached under the
chart's Service name `adept-milvus` (a hosts entry: there is no cluster DNS); the KubeRay autoscaler sidecar
is not run (it needs a Kubernetes API), so the job fits on the head's spare CPU (see the job test).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.charts.chart_render import REPO_ROOT
from tests.images import kuberay
from tests.images.conftest import container_env, mounts, pod_volumes
from tests.images.containers import Container, owned_dir, wait_for

pytestmark = pytest.mark.image

GATEWAY = "http://127.0.0.1:8000"
DASHBOARD = f"http://127.0.0.1:{kuberay.DASHBOARD_PORT}"
DOC = REPO_ROOT / "adept" / "demo" / "corpus" / "outage-restoration.md"
RAY_CLI = Path(sys.executable).parent / "ray"  # the platform team's own `ray` (the Jobs API is plain HTTP)


@pytest.fixture(scope="module")
def ray_token() -> str:
    """What the chart's generated Ray token Secret (`adept-ray-serving`) would hold."""
    return secrets.token_hex(32)


@pytest.fixture(scope="module")
def head(cpu_dev, cpu_image, admin_key, scratch, ray_token) -> Any:
    rs = cpu_dev[("RayService", "adept")]
    cluster = rs["spec"]["rayClusterConfig"]
    pod = cluster["headGroupSpec"]["template"]["spec"]
    ray = pod["containers"][0]
    assert pod["securityContext"]["runAsUser"] == 1000 and pod["securityContext"]["runAsGroup"] == 100
    secrets = {
        ("adept-admin", "admin-key"): admin_key,
        ("adept-admin", "admin-key-sha256"): hashlib.sha256(admin_key.encode()).hexdigest(),
        ("adept-ray-serving", "auth_token"): ray_token,
        ("adept-milvus-root", "password"): "milvus-root-smoke",
    }
    volumes = pod_volumes(pod, scratch / "head")
    milvus_host = httpx.URL(
        yaml.safe_load(rs["spec"]["serveConfigV2"])["applications"][0]["args"]["platform"]["milvus_uri"]
    )
    box = Container(cpu_image, hosts={milvus_host.host: "127.0.0.1"})
    logs = scratch / "logs"
    logs.mkdir(exist_ok=True)
    try:
        # The Milvus stand-in, on the port the chart's milvus_uri names.
        milvus_dir = owned_dir(scratch, "milvus")
        box.start(
            [
                "milvus-lite",
                "server",
                "--data-dir",
                "/milvus/milvus.db",
                "--host",
                "127.0.0.1",
                "--port",
                str(milvus_host.port),
            ],
            log=logs / "milvus.log",
            volumes={str(milvus_dir): "/milvus"},
        )

        # The init container, exactly as rendered: bundled models, so it must pass at once.
        (init,) = pod["initContainers"]
        started = time.monotonic()
        done = box.run(
            init["command"], env=container_env(init, secrets), volumes=mounts(init, volumes), timeout=120
        )
        assert done.returncode == 0 and "ready:" in done.stdout, done.stdout + done.stderr
        init_s = time.monotonic() - started

        # The head container: KubeRay's command and env on top of the chart's env, volumes and user.
        command, start = kuberay.head_container_command(cluster)
        env = container_env(ray, secrets) | kuberay.head_env(
            start, "adept-raycluster-smoke", "adept-head-smoke"
        )
        proc = box.start(command, log=logs / "head.log", env=env, volumes=mounts(ray, volumes))
        probe = kuberay.head_probe_command()
        wait_for(
            "the head's KubeRay probes",
            lambda: box.run(probe, timeout=30).returncode == 0 or proc.poll() is not None,
            timeout=300,
            interval=3,
            log=logs / "head.log",
        )
        assert proc.poll() is None, (logs / "head.log").read_text()[-4000:]

        # The token auth KubeRay's authOptions turns on: a call without the token is refused.
        assert httpx.get(kuberay.serve_deploy_url(), timeout=30).status_code == 401
        auth = {"Authorization": f"Bearer {ray_token}"}
        # serveConfigV2 goes in as KubeRay sends it: YAML -> JSON, PUT to the dashboard (with the token).
        serve_config = yaml.safe_load(rs["spec"]["serveConfigV2"])
        # One stand-in: no Kubernetes API here, so tenants live in the data dir's SQLite store instead of
        # Tenant resources (the Kubernetes store is tested against kmock in tests/integration/operators).
        assert serve_config["applications"][0]["args"]["platform"]["tenant_store"] == "kubernetes"
        serve_config["applications"][0]["args"]["platform"]["tenant_store"] = "sqlite"
        wait_for(
            "the Serve REST API",
            lambda: (
                httpx.put(kuberay.serve_deploy_url(), json=serve_config, headers=auth, timeout=30).status_code
                == 200
            ),
            timeout=180,
            interval=3,
        )

        def app_running() -> bool:
            apps = httpx.get(kuberay.serve_deploy_url(), headers=auth, timeout=30).json()["applications"]
            app = apps.get(serve_config["applications"][0]["name"]) or {}
            assert app.get("status") not in ("DEPLOY_FAILED", "UNHEALTHY"), json.dumps(app)[:4000]
            return app.get("status") == "RUNNING"

        wait_for("the Serve application to run", app_running, timeout=900, interval=5, log=logs / "head.log")
        wait_for(
            "the gateway's /healthz",
            lambda: httpx.get(f"{GATEWAY}/healthz", timeout=30).status_code == 200,
            timeout=300,
        )
        yield {"box": box, "proc": proc, "probe": probe, "init_s": init_s, "start": start, "logs": logs}
    finally:
        box.remove()
    # Every Ray process went with the pod: its fixed ports are free again for what runs next.
    wait_for("the head's ports to close", lambda: not listening(6379, 8265, 8000, 8080, 52365), timeout=60)


def listening(*ports: int) -> list[int]:
    """The ports that still accept connections on loopback."""
    out = []
    for port in ports:
        with socket.socket() as s:
            s.settimeout(1)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                out.append(port)
    return out


@pytest.fixture(scope="module")
def tenant(head, admin_key) -> dict[str, str]:
    """The tenant the shipped fine-tune config names (`demo`), created through the admin API."""
    r = httpx.post(
        f"{GATEWAY}/admin/tenants",
        headers={"Authorization": f"Bearer {admin_key}"},
        json={"name": "demo", "display_name": "Demo Utilities"},
        timeout=60,
    )
    assert r.status_code in (200, 201), r.text
    return {"name": "demo", "key": r.json()["api_key"]}


def test_head_starts_as_kuberay_starts_it(head, cpu_dev, ray_token):
    """KubeRay's generated command carries the chart's params, and its probes pass with the image's tools."""
    start = head["start"]
    for flag in (
        "--head",
        "--block",
        "--num-cpus=2",
        "--dashboard-host=0.0.0.0",
        "--metrics-export-port=8080",
        "--no-monitor",
        "--dashboard-agent-listen-port=52365",
        "--resources='{\"adept_cpu_replicas\":1000}'",
        "--memory=4294967296",
    ):
        assert f" {flag} " in f" {start} ", start
    assert head["box"].run(head["probe"], timeout=30).returncode == 0
    # The head advertises the custom resource that the chart's CPU-only replicas need (and hold).
    # `ray status` is a GCS client: the head runs with token auth (the chart's authOptions and env), so a
    # client without the cluster's token is refused, one with it gets through.
    refused = head["box"].run(["ray", "status"], env={"RAY_ADDRESS": "127.0.0.1:6379"}, timeout=120)
    assert refused.returncode != 0 and "InvalidAuthToken" in refused.stdout + refused.stderr
    env = {"RAY_ADDRESS": "127.0.0.1:6379", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": ray_token}
    status = head["box"].run(["ray", "status"], env=env, timeout=120)
    assert "adept_cpu_replicas" in status.stdout, status.stdout + status.stderr


def test_tenant_ingest_and_streamed_rag_answer_with_a_citation(tenant):
    auth = {"Authorization": f"Bearer {tenant['key']}"}
    with DOC.open("rb") as fh:
        r = httpx.post(
            f"{GATEWAY}/v1/kb/documents", headers=auth, files={"files": (DOC.name, fh)}, timeout=300
        )
    assert r.status_code == 200, r.text
    (doc,) = r.json()["documents"]
    assert doc["id"] == "outage-restoration" and doc["chunks"] > 0

    base = httpx.get(f"{GATEWAY}/v1/models", headers=auth, timeout=60).json()["data"][0]["id"]
    body = {
        "model": base,
        "stream": True,
        "rag": {"top_k": 3},
        "max_tokens": 48,
        "messages": [{"role": "user", "content": "How are outages restored, and who is restored first?"}],
    }
    chunks = []
    with httpx.stream("POST", f"{GATEWAY}/v1/chat/completions", headers=auth, json=body, timeout=600) as resp:
        assert resp.status_code == 200, resp.read()
        for line in resp.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[len("data: ") :]))
    assert len(chunks) > 2  # streamed, not one blob
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text.strip()
    final = next(c for c in chunks if c["choices"] and c["choices"][0].get("finish_reason"))
    assert any(cit["document_id"] == "outage-restoration" for cit in final["citations"]), final


def test_ray_job_submit_publishes_an_adapter_that_answers(head, tenant, admin_key, ray_token):
    """`ray job submit` of training/configs/cpu-quick.yaml to the head, as a platform team would.

    On a cluster the chart's CPU worker group (or the training RayCluster) takes the job; here the head
    is the only node and the Serve replicas hold 1.75 of its 2 CPUs, so the job asks for 0.25 CPU per
    worker on the command line (the config's documented override syntax).
    """
    job_id = f"smoke-finetune-{int(time.time())}"
    submit = subprocess.run(
        [
            str(RAY_CLI),
            "job",
            "submit",
            "--address",
            DASHBOARD,
            "--submission-id",
            job_id,
            "--working-dir",
            str(REPO_ROOT),
            "--no-wait",
            "--",
            "python",
            "-m",
            "training.finetune",
            "--config",
            "training/configs/cpu-quick.yaml",
            "workers.resources_per_worker.CPU=0.25",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=REPO_ROOT,
        # As the chart's NOTES say: the Ray CLI sends the cluster's token only with RAY_AUTH_MODE=token.
        env={**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": ray_token},
    )
    assert submit.returncode == 0, submit.stdout + submit.stderr
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(DASHBOARD, headers={"Authorization": f"Bearer {ray_token}"})

    def finished() -> JobStatus | None:
        status = client.get_job_status(job_id)
        return status if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED) else None

    status = wait_for("the fine-tune job", finished, timeout=1800, interval=10)
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, logs[-6000:]
    assert "demo/gridhelp@v1" in logs, logs[-3000:]

    admin = httpx.get(
        f"{GATEWAY}/admin/adapters/demo", headers={"Authorization": f"Bearer {admin_key}"}, timeout=60
    )
    assert admin.status_code == 200 and "gridhelp" in admin.text, admin.text
    r = httpx.post(
        f"{GATEWAY}/v1/chat/completions",
        headers={"Authorization": f"Bearer {tenant['key']}"},
        json={
            "model": "gridhelp",
            "max_tokens": 32,
            "messages": [{"role": "user", "content": "My power is out."}],
        },
        timeout=600,
    )
    assert r.status_code == 200, r.text
    answer = r.json()
    assert "gridhelp" in answer["model"] and answer["choices"][0]["message"]["content"].strip(), answer
    # The head is still healthy by KubeRay's measure after all of it.
    assert head["box"].run(head["probe"], timeout=30).returncode == 0
