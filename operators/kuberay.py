"""The KubeRay the chart's Ray clusters run on must know ``authOptions.secretName`` (KubeRay >= 1.6.0).

The chart gives each Ray cluster its own token Secret through ``spec.authOptions.secretName``. KubeRay 1.5.x
has no such field: the API server prunes it, KubeRay generates a token of its own and sets ``RAY_AUTH_TOKEN``
after the chart's (the last one wins), so the token that ``ray job submit`` and this operator send is refused
and every FineTuneJob fails far from the cause. The operator checks this at start-up and refuses to run with a
message that names the version needed:

- the ``rayclusters.ray.io`` CRD, where the operator may read it (a cluster-wide install; a namespaced Role
  cannot read CRDs, and that is not an error);
- the training RayCluster itself (``ADEPT_TRAINING_CLUSTER``, set by the chart): on 1.5.x the stored object
  has lost ``authOptions.secretName``, whatever the CRD read allowed.
"""

from __future__ import annotations

from typing import Any

from adept.errors import InvalidRequest

MIN_KUBERAY = "1.6.0"
CRD_NAME = "rayclusters.ray.io"


class KubeRayTooOld(InvalidRequest):
    """The cluster's KubeRay cannot run the chart's Ray clusters with their own token."""


def _too_old(where: str) -> KubeRayTooOld:
    return KubeRayTooOld(
        f"{where} has no spec.authOptions.secretName: KubeRay >= {MIN_KUBERAY} is required (the chart pins "
        "1.7.0). An older KubeRay drops the field and generates its own Ray token, so every Ray job submission "
        "with the chart's token would be refused. Upgrade KubeRay (its CRDs first: `kubectl apply "
        "--server-side -f` the kuberay-operator chart's crds/), or install with `kuberay-operator.enabled=true`."
    )


def crd_has_secret_name(crd: dict[str, Any]) -> bool | None:
    """Whether the ``v1`` schema of a RayCluster CRD has ``spec.authOptions.secretName``; None: no v1 schema."""
    for version in (crd.get("spec") or {}).get("versions") or []:
        if version.get("name") != "v1":
            continue
        props = ((version.get("schema") or {}).get("openAPIV3Schema") or {}).get("properties") or {}
        if "spec" not in props:
            return None
        spec = props["spec"].get("properties") or {}
        auth = (spec.get("authOptions") or {}).get("properties") or {}
        return "secretName" in auth
    return None


def check_raycluster_crd(crd: dict[str, Any]) -> None:
    """Raise ``KubeRayTooOld`` for a RayCluster CRD whose v1 schema lacks ``authOptions.secretName``."""
    if crd_has_secret_name(crd) is False:
        raise _too_old(f"the {CRD_NAME} CRD")


def check_training_cluster(obj: dict[str, Any]) -> None:
    """Raise ``KubeRayTooOld`` when a stored RayCluster lost the ``authOptions.secretName`` the chart renders."""
    auth = (obj.get("spec") or {}).get("authOptions") or {}
    if auth.get("mode") == "token" and not auth.get("secretName"):
        name = (obj.get("metadata") or {}).get("name", "?")
        raise _too_old(f"RayCluster {name} (as stored by the API server)")


def check_kuberay(kube: Any, namespace: str | None, training_cluster: str | None) -> list[str]:
    """Run both checks through a ``adept.kube.Kube``; return what could not be checked (for the log).

    Raises:
        KubeRayTooOld: the CRD or the stored training cluster lacks ``authOptions.secretName``.
    """
    from kubernetes.client.exceptions import ApiException

    skipped = []
    try:
        crd = kube.custom.get_cluster_custom_object(
            "apiextensions.k8s.io", "v1", "customresourcedefinitions", CRD_NAME
        )
    except ApiException as e:
        if e.status not in (403, 404):
            raise
        skipped.append(f"CRD {CRD_NAME}: HTTP {e.status}")
    else:
        check_raycluster_crd(crd if isinstance(crd, dict) else {})
    if training_cluster and namespace:
        try:
            obj = kube.custom.get_namespaced_custom_object(
                "ray.io", "v1", namespace, "rayclusters", training_cluster
            )
        except ApiException as e:
            if e.status not in (403, 404):
                raise
            skipped.append(f"RayCluster {namespace}/{training_cluster}: HTTP {e.status}")
        else:
            check_training_cluster(obj)
    return skipped
