"""The operator's KubeRay check through the Kubernetes client, against kmock's API emulator (the one mock).

The CRDs are KubeRay's own (shared/crds/kuberay/v1.5.1 and v1.7.0); the stored RayCluster is the chart's
rendered training cluster, with and without the ``authOptions.secretName`` a 1.5.x API server prunes.
"""

from __future__ import annotations

import copy

import pytest
import yaml

from operators.kuberay import KubeRayTooOld, check_kuberay
from tests.charts.chart_render import one, render_objects, shared_dir, values_for
from tests.integration.operators.conftest import Emulator

pytestmark = pytest.mark.integration
NS = "adept"


def crd(version: str) -> dict:
    path = shared_dir() / "crds" / "kuberay" / f"v{version}" / "ray.io_rayclusters.yaml"
    return yaml.load(path.read_text(), Loader=yaml.CSafeLoader)


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    import kmock

    from adept.kube import Kube

    tmp_path = tmp_path_factory.mktemp("kube")

    emulator = Emulator().start()
    try:
        emulator.handler.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = kmock.ResourceInfo(
            kind="CustomResourceDefinition", namespaced=False, verbs={"get", "list", "create", "delete"}
        )
        emulator.handler.resources["ray.io/v1/rayclusters"] = kmock.ResourceInfo(
            kind="RayCluster", namespaced=True, verbs={"get", "list", "create", "delete"}
        )
        config = tmp_path / "kubeconfig"
        config.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: kmock\n"
            f"clusters: [{{name: kmock, cluster: {{server: '{emulator.url}'}}}}]\n"
            "users: [{name: kmock, user: {token: test}}]\n"
            f"contexts: [{{name: kmock, context: {{cluster: kmock, user: kmock, namespace: {NS}}}}}]\n"
        )
        # An explicit client: KUBECONFIG is read once, when the kubernetes package is imported, and the
        # operator tests of this package point it at their own emulator.
        from kubernetes.config import new_client_from_config

        yield Kube(api_client=new_client_from_config(config_file=str(config)))
    finally:
        emulator.stop()


@pytest.fixture
def kube(emulated):
    """The module's emulator, emptied of CRDs and RayClusters after each test."""
    from kubernetes.client.exceptions import ApiException

    yield emulated
    for call in (
        lambda: emulated.custom.delete_cluster_custom_object(
            "apiextensions.k8s.io", "v1", "customresourcedefinitions", "rayclusters.ray.io"
        ),
        lambda: emulated.custom.delete_namespaced_custom_object(
            "ray.io", "v1", NS, "rayclusters", "adept-training"
        ),
    ):
        try:
            call()
        except ApiException:
            pass


def create_crd(kube, body: dict) -> None:
    kube.custom.create_cluster_custom_object("apiextensions.k8s.io", "v1", "customresourcedefinitions", body)


def training_cluster() -> dict:
    return one(render_objects(values_for("default")), "RayCluster")


def create_cluster(kube, body: dict) -> None:
    body = {**body, "metadata": {**body["metadata"], "namespace": NS}}
    kube.custom.create_namespaced_custom_object("ray.io", "v1", NS, "rayclusters", body)


def test_nothing_to_read_is_not_a_refusal(kube):
    skipped = check_kuberay(kube, NS, "adept-training")
    assert len(skipped) == 2 and all("404" in s for s in skipped), skipped


def test_kuberay_1_7_0_passes(kube):
    create_crd(kube, crd("1.7.0"))
    create_cluster(kube, training_cluster())
    assert check_kuberay(kube, NS, "adept-training") == []


def test_kuberay_1_5_1_crd_is_refused_naming_the_version_needed(kube):
    create_crd(kube, crd("1.5.1"))
    with pytest.raises(
        KubeRayTooOld,
        match=r"rayclusters\.ray\.io CRD has no spec\.authOptions\.secretName: KubeRay >= 1\.6\.0",
    ):
        check_kuberay(kube, NS, None)


def test_a_stored_cluster_without_its_secret_name_is_refused(kube):
    """A namespaced operator cannot read CRDs; the stored RayCluster tells the same story."""
    pruned = copy.deepcopy(training_cluster())
    del pruned["spec"]["authOptions"]["secretName"]
    create_cluster(kube, pruned)
    with pytest.raises(KubeRayTooOld, match="RayCluster adept-training"):
        check_kuberay(kube, NS, "adept-training")
