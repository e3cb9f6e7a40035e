"""The operator against a real cluster (kind, minikube, ...): skipped unless `-m e2e` and KUBECONFIG.

Setup (see README, "Kubernetes resources"): apply `charts/adept/crds/`, create a namespace, run
the operator for it (`python -m operators -n $ADEPT_E2E_NAMESPACE --standalone` on the host with
`ADEPT_RAY_ADDRESS` pointing at a reachable Ray dashboard, or the chart), then
`ADEPT_E2E_NAMESPACE=adept-e2e pytest -m e2e tests/e2e/operators`.
"""

from __future__ import annotations

import os
import time
import uuid

import pytest

from adept.tenancy import kubernetes as K
from operators import resources as R

pytestmark = pytest.mark.e2e
NS = os.environ.get("ADEPT_E2E_NAMESPACE", "adept-e2e")


@pytest.fixture(scope="module")
def kube():
    if not os.environ.get("KUBECONFIG") and not os.path.exists(os.path.expanduser("~/.kube/config")):
        pytest.skip("no KUBECONFIG: e2e tests need a real cluster")
    from operators.kube import Kube

    return Kube()


def wait(fn, what: str, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def ready(kube, plural: str, name: str, type_: str = "Ready"):
    obj = kube.get(NS, plural, name)
    return obj if R.condition_status((obj or {}).get("status"), type_) == "True" else None


def test_tenant_knowledge_base_and_cleanup_on_a_real_cluster(kube):
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    kube.create(
        NS,
        "tenants",
        {
            "apiVersion": "adept.dev/v1alpha1",
            "kind": "Tenant",
            "metadata": {"name": name},
            "spec": {"displayName": "e2e"},
        },
    )
    wait(lambda: ready(kube, "tenants", name), f"Tenant {name} Ready")
    assert kube.get_secret(NS, K.key_secret_name(name)) is not None
    kb = {
        "apiVersion": "adept.dev/v1alpha1",
        "kind": "KnowledgeBase",
        "metadata": {"name": f"{name}-kb"},
        "spec": {
            "tenant": name,
            "sources": [{"documents": [{"id": "a", "text": "Crews arrive within 45 minutes."}]}],
        },
    }
    kube.create(NS, "knowledgebases", kb)
    assert (
        wait(lambda: ready(kube, "knowledgebases", f"{name}-kb"), "KnowledgeBase Ready")["status"][
            "documents"
        ]
        == 1
    )

    bad = {
        "apiVersion": "adept.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": f"{name}-bad"},
        "spec": {
            "tenant": name,
            "adapter": "x",
            "config": {"base_model": "acme/unknown-7b", "data": {"path": "d.jsonl"}},
        },
    }
    kube.create(NS, "finetunejobs", bad)
    failed = wait(lambda: ready(kube, "finetunejobs", f"{name}-bad", "Failed"), "FineTuneJob Failed")
    assert (
        "unknown base model"
        in next(c for c in failed["status"]["conditions"] if c["type"] == "Failed")["message"]
    )

    kube.delete(NS, "tenants", name)
    wait(lambda: kube.get(NS, "tenants", name) is None, "Tenant deleted")
    assert kube.get(NS, "knowledgebases", f"{name}-kb") is None
    assert kube.get(NS, "finetunejobs", f"{name}-bad") is None
    assert kube.get_secret(NS, K.key_secret_name(name)) is None
