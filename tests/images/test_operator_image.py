"""The operator image starts the chart's operator command and reports ready against a Kubernetes API.

The API server is kmock's in-process emulator (no kube-apiserver can run here), the one the operator's
integration tests use; the operator runs from its own image with the rendered Deployment's command, args,
environment and user, and a kubeconfig in place of the in-cluster service account.
"""

from __future__ import annotations

import httpx
import pytest

from tests.images.conftest import container_env, mounts, pod_volumes
from tests.images.containers import Container, owned_dir, wait_for
from tests.integration.operators.conftest import Emulator

pytestmark = pytest.mark.image


def test_operator_reports_ready(cpu_dev, operator_image, admin_key, scratch):
    dep = cpu_dev[("Deployment", "adept-operator")]
    pod = dep["spec"]["template"]["spec"]
    op = pod["containers"][0]
    emulator = Emulator().start()
    box = Container(operator_image)
    try:
        kube = owned_dir(scratch, "kube")
        (kube / "config").write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: kmock\n"
            f"clusters: [{{name: kmock, cluster: {{server: '{emulator.url}'}}}}]\n"
            "users: [{name: kmock, user: {token: operator}}]\n"
            "contexts: [{name: kmock, context: {cluster: kmock, user: kmock, namespace: adept}}]\n"
        )
        secret_values = {
            ("adept-admin", "admin-key"): admin_key,
            ("adept-ray-training", "auth_token"): "t" * 64,
        }
        env = container_env(op, secret_values) | {"KUBECONFIG": "/kube/config"}
        volumes = mounts(op, pod_volumes(pod, scratch / "operator")) | {str(kube): "/kube"}
        log = scratch / "operator.log"
        proc = box.start([*op["command"], *op["args"]], log=log, env=env, volumes=volumes)
        port = op["ports"][0]["containerPort"]
        path = op["livenessProbe"]["httpGet"]["path"]
        wait_for(
            "the operator's liveness endpoint",
            lambda: (
                proc.poll() is None
                and httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5).status_code == 200
            ),
            timeout=180,
            interval=2,
            log=log,
        )
        text = log.read_text(errors="replace")
        assert proc.poll() is None, text[-4000:]
        assert "torch" not in text  # nothing on the way up reached for the serving stack
        # The image carries no model stack at all (the operator loads no model), but the Ray Jobs SDK
        # its FineTuneJob handlers submit and watch jobs with.
        probe = box.run(
            [
                "python",
                "-c",
                "import importlib.util as u; from ray.job_submission import JobSubmissionClient; "
                "print([m for m in ('torch', 'transformers', 'sentence_transformers') if u.find_spec(m)])",
            ]
        )
        assert probe.stdout.strip() == "[]", (probe.returncode, probe.stdout, probe.stderr)
    finally:
        box.remove()
        emulator.stop()
