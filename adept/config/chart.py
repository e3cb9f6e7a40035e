"""The Helm chart's values as pydantic models, and the generated ``values.schema.json``.

``charts/adept/values.yaml`` is written by hand (its ``# --`` comments document every key); these
models say what each key may hold, reusing the platform and serving configs where a value maps to
them (dtype, device, Serve deployment options, the Serve application's ``args``). ``make sync``
turns them into ``values.schema.json`` so that Helm rejects a typo or a wrong type at install time,
and regenerates the values table in the chart's README (``adept.config.chart_docs``).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from adept.config.base import StrictModel
from adept.config.platform import PlatformConfig
from adept.config.serving import DeploymentOptions

CHART_DIR = Path("charts") / "adept"
SCHEMA_FILE = CHART_DIR / "values.schema.json"

Quantity = str | int | float
K8sObject = dict[str, Any]  # passed through to Kubernetes as is (affinity, securityContext, ...)
# The platform's own Literal types, so the chart accepts exactly what PlatformConfig does.
Dtype = PlatformConfig.model_fields["dtype"].annotation
Device = PlatformConfig.model_fields["device"].annotation


class ResourceList(BaseModel):
    """Kubernetes resource quantities; cpu and memory are required so no container runs unbounded."""

    model_config = ConfigDict(extra="allow")

    cpu: Quantity = Field(description="CPU, e.g. `2` or `500m`.")
    memory: Quantity = Field(description="Memory, e.g. `8Gi`.")


class Resources(StrictModel):
    """Container ``resources`` with both requests and limits."""

    requests: ResourceList = Field(description="What the scheduler reserves.")
    limits: ResourceList = Field(description="Hard caps (Ray reads its CPU count from the CPU limit).")


class ImageRefValues(StrictModel):
    repository: str = Field(min_length=1, description="Image repository.")
    tag: str = Field("", description="Image tag; empty = derived from the chart's appVersion.")


class ImageValues(ImageRefValues):
    pullPolicy: Literal["Always", "IfNotPresent", "Never"] = Field("IfNotPresent", description="Pull policy.")


class ModelValues(StrictModel):
    name: str = Field(min_length=1, description=PlatformConfig.model_fields["model"].description)
    dtype: Dtype = Field(  # type: ignore[valid-type]
        "bfloat16", description=PlatformConfig.model_fields["dtype"].description
    )
    device: Device = Field(  # type: ignore[valid-type]
        "cuda", description=PlatformConfig.model_fields["device"].description
    )
    embedding: str = Field(
        min_length=1, description=PlatformConfig.model_fields["embedding_model"].description
    )


class AuthValues(StrictModel):
    existingSecret: str = Field("", description="Existing Secret with the admin key and its sha256.")
    secretKey: str = Field("admin-key", min_length=1, description="Key in the Secret.")
    hashKey: str = Field("admin-key-sha256", min_length=1, description="Key holding the admin key's sha256.")


class RayClusterAuthValues(StrictModel):
    existingSecret: str = Field(
        "", description="Existing Secret (key `auth_token`) with the cluster's Ray token."
    )


class RayAuthValues(StrictModel):
    """Ray token auth: on for both Ray clusters, each with a token of its own."""

    serving: RayClusterAuthValues = Field(default_factory=RayClusterAuthValues, description="RayService.")
    training: RayClusterAuthValues = Field(default_factory=RayClusterAuthValues, description="RayCluster.")


class MilvusAuthValues(StrictModel):
    existingSecret: str = Field("", description="Existing Secret with the bundled Milvus's root password.")
    passwordKey: str = Field("password", min_length=1, description="Key of the password in that Secret.")


class MilvusTlsValues(StrictModel):
    caSecret: str = Field("", description="Secret with the CA of Milvus's server certificate (TLS on).")
    caKey: str = Field("ca.crt", min_length=1, description="Key of the CA (PEM) in that Secret.")
    serverName: str = Field("", description="Name in the server certificate, if not the host's.")


class VolumeValues(StrictModel):
    existingClaim: str = Field("", description="Existing PVC to use instead of creating one.")
    storageClassName: str = Field("", description="StorageClass of the created PVC.")
    accessModes: list[Literal["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"]] = Field(
        min_length=1, description="Access modes of the created PVC."
    )
    size: str = Field(pattern=r"^[0-9]+(\.[0-9]+)?([KMGTPE]i?)?$", description="PVC size, e.g. `50Gi`.")
    mountPath: str = Field(pattern=r"^/", description="Mount path in the pods.")


class PersistenceValues(VolumeValues):
    enabled: bool = Field(True, description="Mount a PVC as the data dir (else an emptyDir).")


class S3Values(StrictModel):
    uri: str = Field("", pattern=r"^(s3://.+)?$", description="`s3://bucket/prefix` for adapters.")
    endpointUrl: str = Field("", description="S3-compatible endpoint; empty = AWS.")
    region: str = Field("", description="Bucket region.")
    existingSecret: str = Field("", description="Secret with the access keys.")
    accessKeyIdKey: str = Field("AWS_ACCESS_KEY_ID", description="Key of the access key id.")
    secretAccessKeyKey: str = Field("AWS_SECRET_ACCESS_KEY", description="Key of the secret key.")


class AdapterStoreValues(StrictModel):
    type: Literal["pvc", "s3"] = Field("pvc", description="Adapter storage backend.")
    s3: S3Values = Field(default_factory=S3Values, description="S3 settings (`type=s3`).")

    @model_validator(mode="after")
    def _s3_uri(self) -> AdapterStoreValues:
        if self.type == "s3" and not self.s3.uri:
            raise ValueError("adapterStore.type is 's3' but adapterStore.s3.uri is empty")
        return self


class DownloadValues(StrictModel):
    """How hub models reach the cache: the weights Job (pvc) or the Ray pods' init containers (emptyDir)."""

    enabled: bool = Field(True, description="Download hub models (off: the cache is pre-filled).")
    endpoint: str = Field("", pattern=r"^(https?://.+)?$", description="HF_ENDPOINT (a hub mirror).")
    tokenSecret: str = Field("", description="Secret with a Hugging Face token.")
    tokenKey: str = Field("HF_TOKEN", min_length=1, description="Key of the token in that Secret.")
    backoffLimit: int = Field(6, ge=0, le=100, description="Retries of the weights Job.")
    resources: Resources = Field(description="Resources of the downloading container.")


class ModelCacheValues(VolumeValues):
    type: Literal["pvc", "emptyDir"] = Field("pvc", description="Cache volume kind.")
    sizeLimit: str = Field("40Gi", description="emptyDir size limit.")
    download: DownloadValues = Field(description="Filling the cache from the hub.")


class ExternalMilvusValues(StrictModel):
    uri: str = Field("", pattern=r"^(https?://.+)?$", description="URI of your own Milvus.")
    existingSecret: str = Field("", description="Secret with a Milvus token.")
    tokenKey: str = Field("token", description="Key of the token in that Secret.")


class Scheduling(StrictModel):
    """Where a pod may run and what it gets."""

    rayStartParams: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="`ray start` parameters."
    )
    resources: Resources = Field(description="Container resources.")
    nodeSelector: dict[str, str] = Field(default_factory=dict, description="Node selector.")
    tolerations: list[K8sObject] = Field(default_factory=list, description="Tolerations.")
    affinity: K8sObject = Field(default_factory=dict, description="Affinity.")


class WorkerGroupValues(Scheduling):
    enabled: bool = Field(True, description="Create this worker group.")
    replicas: int = Field(ge=0, description="Initial workers.")
    minReplicas: int = Field(ge=0, description="Fewest workers.")
    maxReplicas: int = Field(ge=0, description="Most workers.")

    @model_validator(mode="after")
    def _bounds(self) -> WorkerGroupValues:
        if not self.minReplicas <= self.replicas <= self.maxReplicas:
            raise ValueError(
                f"need minReplicas <= replicas <= maxReplicas, got {self.minReplicas}, {self.replicas}, "
                f"{self.maxReplicas}"
            )
        return self


class GpuWorkerGroupValues(WorkerGroupValues):
    image: str = Field("", description="Image override (CUDA build).")
    gpusPerWorker: int = Field(1, ge=1, le=16, description="`nvidia.com/gpu` per worker pod.")


class AutoscalerValues(StrictModel):
    idleTimeoutSeconds: int = Field(ge=0, description="Idle seconds before a worker is removed.")
    upscalingMode: Literal["Default", "Aggressive", "Conservative"] = Field(
        "Default", description="Upscaling."
    )
    resources: Resources = Field(description="Autoscaler sidecar resources.")


class ServeDeploymentValues(DeploymentOptions):
    """A Serve deployment's options (ServingConfig's ``DeploymentOptions``) plus its name in the application."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9_-]+$", description="Deployment name in the Serve application (serveConfigV2)."
    )


class ServeDeploymentsValues(StrictModel):
    gateway: ServeDeploymentValues = Field(description="HTTP ingress.")
    llm: ServeDeploymentValues = Field(description="Base model + tenant adapters.")
    retrieval: ServeDeploymentValues = Field(description="Embeddings and Milvus.")


class PdbValues(StrictModel):
    enabled: bool = Field(True, description="Create PodDisruptionBudgets (groups with minReplicas > 1).")
    minAvailable: int | None = Field(
        None, ge=0, description="Workers a drain leaves running; empty = minReplicas - 1 (below minReplicas)."
    )


class ServingValues(StrictModel):
    upgradeStrategy: Literal["NewCluster", "None"] = Field(
        "NewCluster", description="RayService upgrade type."
    )
    rayClusterDeletionDelaySeconds: int = Field(60, ge=0, description="Old cluster drain time.")
    args: dict[str, Any] = Field(
        default_factory=dict, description="Extra Serve application args (ServingConfig)."
    )
    deployments: ServeDeploymentsValues = Field(description="Serve deployments' options.")
    autoscaler: AutoscalerValues = Field(description="KubeRay autoscaler.")
    head: Scheduling = Field(description="Head group.")
    cpuWorkers: WorkerGroupValues = Field(description="CPU worker group.")
    gpuWorkers: GpuWorkerGroupValues = Field(description="GPU worker group.")
    podDisruptionBudget: PdbValues = Field(default_factory=PdbValues, description="PDBs.")

    @model_validator(mode="after")
    def _pdb_below_floor(self) -> ServingValues:
        pdb = self.podDisruptionBudget
        if pdb.enabled and pdb.minAvailable is not None:
            for name, group in (("cpuWorkers", self.cpuWorkers), ("gpuWorkers", self.gpuWorkers)):
                if group.enabled and pdb.minAvailable >= group.minReplicas:
                    raise ValueError(
                        f"podDisruptionBudget.minAvailable ({pdb.minAvailable}) must be below "
                        f"{name}.minReplicas ({group.minReplicas}), or a drain could never evict a worker"
                    )
        return self


class JobServiceValues(StrictModel):
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field("ClusterIP", description="Service type.")
    port: int = Field(8265, ge=1, le=65535, description="Job API port.")


class TrainingDataStoreValues(StrictModel):
    """Object storage that training jobs read their data from (``data.path: s3://...``), read-only."""

    uri: str = Field("", pattern=r"^(s3://.+)?$", description="`s3://bucket/prefix` of the training data.")
    endpointUrl: str = Field("", description="S3-compatible endpoint; empty = AWS.")
    region: str = Field("", description="Bucket region.")
    existingSecret: str = Field("", description="Secret with read-only access keys scoped to `uri`.")
    accessKeyIdKey: str = Field("AWS_ACCESS_KEY_ID", description="Key of the access key id.")
    secretAccessKeyKey: str = Field("AWS_SECRET_ACCESS_KEY", description="Key of the secret key.")
    cidrs: list[str] = Field(default_factory=list, description="Addresses of the endpoint (egress).")
    ports: list[int] = Field(
        default_factory=lambda: [443], min_length=1, description="Ports of the endpoint."
    )

    @model_validator(mode="after")
    def _secret(self) -> TrainingDataStoreValues:
        import ipaddress

        if self.uri and not self.existingSecret:
            raise ValueError(
                "training.dataStore.uri needs training.dataStore.existingSecret (read-only keys scoped to it)"
            )
        for cidr in self.cidrs:
            ipaddress.ip_network(cidr, strict=False)
        return self


class TrainingValues(StrictModel):
    enabled: bool = Field(True, description="Create the training RayCluster.")
    autoscaler: AutoscalerValues = Field(description="KubeRay autoscaler.")
    head: Scheduling = Field(description="Head group.")
    gpuWorkers: GpuWorkerGroupValues = Field(description="GPU worker group.")
    cpuWorkers: WorkerGroupValues = Field(description="CPU worker group.")
    jobService: JobServiceValues = Field(default_factory=JobServiceValues, description="Job API Service.")
    entrypointNumCpus: float = Field(
        1.0,
        ge=0,
        le=64,
        description="CPUs each fine-tuning job's driver reserves on the training cluster (`--entrypoint-num-cpus`): "
        "given to the gateway and the operator as `training_entrypoint_num_cpus`, one number for both.",
    )
    dataStore: TrainingDataStoreValues = Field(
        default_factory=TrainingDataStoreValues, description="Training data in object storage."
    )


class OperatorValues(StrictModel):
    enabled: bool = Field(True, description="Run the operator.")
    replicas: int = Field(1, ge=1, le=5, description="Operator replicas (kopf peering above 1).")
    apiGroup: str = Field(
        "adept.dev", pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", description="API group of our CRDs."
    )
    watchAllNamespaces: bool = Field(False, description="Watch all namespaces.")
    logLevel: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    resources: Resources = Field(description="Operator resources.")
    nodeSelector: dict[str, str] = Field(default_factory=dict, description="Node selector.")
    tolerations: list[K8sObject] = Field(default_factory=list, description="Tolerations.")
    affinity: K8sObject = Field(default_factory=dict, description="Affinity.")


class IngressPath(StrictModel):
    path: str = Field(pattern=r"^/", description="URL path.")
    pathType: Literal["Prefix", "Exact", "ImplementationSpecific"] = Field("Prefix", description="Path type.")


class IngressHost(StrictModel):
    host: str = Field(description="Host name.")
    paths: list[IngressPath] = Field(min_length=1, description="Paths.")


class IngressValues(StrictModel):
    enabled: bool = Field(False, description="Create an Ingress.")
    className: str = Field("", description="IngressClass.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations.")
    hosts: list[IngressHost] = Field(default_factory=list, description="Hosts.")
    tls: list[K8sObject] = Field(default_factory=list, description="TLS.")


class EgressTarget(StrictModel):
    """A destination outside the cluster's pods: addresses and ports (no addresses: anywhere but link-local)."""

    cidrs: list[str] = Field(default_factory=list, description="Allowed address ranges (CIDR).")
    ports: list[int] = Field(min_length=1, description="Allowed TCP ports.")

    @model_validator(mode="after")
    def _cidrs(self) -> EgressTarget:
        import ipaddress

        for cidr in self.cidrs:
            ipaddress.ip_network(cidr, strict=False)  # ValueError names the bad one
        return self


class DnsValues(StrictModel):
    namespace: str = Field("kube-system", min_length=1, description="Namespace of the cluster DNS.")
    podLabels: dict[str, str] = Field(
        default_factory=lambda: {"k8s-app": "kube-dns"}, description="Labels of the DNS pods."
    )
    cidrs: list[str] = Field(
        default_factory=list,
        description="Addresses of a node-local DNS cache (e.g. 169.254.20.10/32), which is link-local and so "
        "otherwise denied.",
    )

    @model_validator(mode="after")
    def _cidrs(self) -> DnsValues:
        import ipaddress

        for cidr in self.cidrs:
            ipaddress.ip_network(cidr, strict=False)
        return self


class ExtraEgressValues(StrictModel):
    serving: list[K8sObject] = Field(default_factory=list, description="Extra egress rules of serving pods.")
    training: list[K8sObject] = Field(
        default_factory=list, description="Extra egress rules of training pods."
    )
    operator: list[K8sObject] = Field(default_factory=list, description="Extra egress rules of the operator.")


class NetworkPolicyValues(StrictModel):
    enabled: bool = Field(True, description="Create NetworkPolicies.")
    gatewayFrom: list[K8sObject] = Field(default_factory=list, description="Peers allowed to the gateway.")
    kuberayOperatorNamespace: str = Field(
        "", description="KubeRay operator namespace (empty: the release's)."
    )
    monitoringNamespace: str = Field("", description="Prometheus namespace (empty: the release's).")
    dns: DnsValues = Field(default_factory=DnsValues, description="Cluster DNS.")
    kubernetesApi: EgressTarget = Field(
        default_factory=lambda: EgressTarget(ports=[443, 6443]), description="Kubernetes API server."
    )
    s3: EgressTarget = Field(default_factory=lambda: EgressTarget(ports=[443]), description="S3 endpoint.")
    externalMilvus: EgressTarget = Field(
        default_factory=lambda: EgressTarget(ports=[19530]), description="Your own Milvus."
    )
    extraEgress: ExtraEgressValues = Field(default_factory=ExtraEgressValues, description="More egress.")


class ServiceMonitorValues(StrictModel):
    enabled: bool = Field(False, description="Create a ServiceMonitor.")
    interval: str = Field("30s", pattern=r"^[0-9]+(ms|s|m|h)$", description="Scrape interval.")
    labels: dict[str, str] = Field(default_factory=dict, description="Extra labels.")


class MetricsValues(StrictModel):
    port: int = Field(8080, ge=1, le=65535, description="Ray metrics port.")
    serviceMonitor: ServiceMonitorValues = Field(default_factory=ServiceMonitorValues, description="SM.")


class SubchartToggle(BaseModel):
    """A dependency chart's values: ``enabled`` is ours (the ``condition``); the rest goes to the subchart."""

    model_config = ConfigDict(extra="allow")

    enabled: bool = Field(True, description="Install this dependency.")


class ChartValues(StrictModel):
    """Everything ``charts/adept/values.yaml`` may contain."""

    nameOverride: str = Field("", description="Chart name override.")
    fullnameOverride: str = Field("", description="Full name override.")
    image: ImageValues = Field(description="Adept CPU image.")
    cudaImage: ImageRefValues = Field(description="Adept CUDA image (GPU workers).")
    operatorImage: ImageRefValues = Field(description="Operator image.")
    imagePullSecrets: list[K8sObject] = Field(default_factory=list, description="Pull secrets.")
    rayVersion: str = Field(pattern=r"^[0-9]+\.[0-9]+\.[0-9]+", description="Ray version in the image.")
    podSecurityContext: K8sObject = Field(default_factory=dict, description="Pod securityContext.")
    rayContainerSecurityContext: K8sObject = Field(
        default_factory=dict, description="Ray container securityContext."
    )
    model: ModelValues = Field(description="Models.")
    auth: AuthValues = Field(default_factory=AuthValues, description="Admin key.")
    rayAuth: RayAuthValues = Field(default_factory=RayAuthValues, description="Ray token auth.")
    milvusAuth: MilvusAuthValues = Field(default_factory=MilvusAuthValues, description="Bundled Milvus auth.")
    milvusTls: MilvusTlsValues = Field(default_factory=MilvusTlsValues, description="TLS to Milvus.")
    persistence: PersistenceValues = Field(description="Data volume.")
    adapterStore: AdapterStoreValues = Field(
        default_factory=AdapterStoreValues, description="Adapter storage."
    )
    modelCache: ModelCacheValues = Field(description="Model cache volume.")
    externalMilvus: ExternalMilvusValues = Field(
        default_factory=ExternalMilvusValues, description="Own Milvus."
    )
    serving: ServingValues = Field(description="RayService.")
    training: TrainingValues = Field(description="Training RayCluster.")
    operator: OperatorValues = Field(description="Adept operator.")
    ingress: IngressValues = Field(default_factory=IngressValues, description="Ingress.")
    networkPolicy: NetworkPolicyValues = Field(default_factory=NetworkPolicyValues, description="Policies.")
    metrics: MetricsValues = Field(default_factory=MetricsValues, description="Metrics.")
    kuberay_operator: SubchartToggle = Field(
        default_factory=SubchartToggle, alias="kuberay-operator", description="KubeRay operator chart values."
    )
    milvus: SubchartToggle = Field(default_factory=SubchartToggle, description="Milvus chart values.")
    # Helm injects `global` into every chart's values.
    global_: K8sObject = Field(default_factory=dict, alias="global", description="Helm global values.")


def serving_args_schema() -> dict[str, Any]:
    """JSON schema of the Serve application's args (``ServingConfig``), imported only when asked for."""
    from adept.config.serving import ServingConfig

    return ServingConfig.model_json_schema()


def _tidy(node: Any) -> Any:
    """Drop pydantic's titles and path formats (Helm's validator knows no `path` format)."""
    if isinstance(node, dict):
        out = {k: _tidy(v) for k, v in node.items() if k != "title"}
        if out.get("format") == "path":
            del out["format"]
        return out
    if isinstance(node, list):
        return [_tidy(v) for v in node]
    return node


def values_schema() -> dict[str, Any]:
    """The chart's ``values.schema.json`` as a dict.

    Values that pass through to Kubernetes or to subcharts stay open; everything else is closed, so an
    unknown key is an error. ``serving.args`` gets ServingConfig's schema (all its fields have defaults,
    so partial args validate; the chart fills ``platform`` in).
    """
    schema = ChartValues.model_json_schema(by_alias=True)
    defs = schema.setdefault("$defs", {})
    args = serving_args_schema()
    for name, sub in args.pop("$defs", {}).items():
        if name in defs and defs[name] != sub:
            raise RuntimeError(f"schema name clash between ChartValues and ServingConfig: {name}")
        defs[name] = sub
    defs["ServingConfig"] = args
    props = defs["ServingValues"]["properties"]
    props["args"] = {"$ref": "#/$defs/ServingConfig", "description": props["args"]["description"]}
    out = {"$schema": "https://json-schema.org/draft/2020-12/schema", **_tidy(copy.deepcopy(schema))}
    return out


def render_values_schema() -> str:
    return json.dumps(values_schema(), indent=2, sort_keys=True) + "\n"


def write_values_schema(repo_root: Path) -> list[Path]:
    """Regenerate the chart's generated files under ``repo_root``: ``values.schema.json`` and README's values table.

    Called by ``python -m adept.codegen`` (``make sync``).
    """
    from adept.config.chart_docs import write_values_docs

    path = Path(repo_root) / SCHEMA_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_values_schema(), encoding="utf-8")
    return [path, *write_values_docs(repo_root)]
