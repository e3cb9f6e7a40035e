"""Spec and status models of the four custom resources (``adept.dev/v1alpha1``).

The CRD schemas in ``charts/adept/crds`` are generated from these models (``operators.crdgen``),
and the handlers validate every spec with them too: the API server rejects what the schema can
express, the operator reports the rest (cross-field rules, cross-tenant references) as a
``Failed`` condition. Fields the resources own are camelCase (Kubernetes convention); blocks
embedded from Adept's configuration (``quotas``, ``retrieval``, ``config``) keep the snake_case
keys of the YAML files the CLI reads, so a job file can be pasted into a FineTuneJob unchanged.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from adept.config.adapter import VERSION_RE, check_adapter_name
from adept.config.base import validate
from adept.config.retrieval import RetrievalConfig
from adept.config.tenant import TenantQuotas, TenantSpec, check_tenant_name
from adept.config.training import FineTuneJobConfig
from adept.documents import IngestRecord


class ResourceSpec(BaseModel):
    """User input: unknown keys are errors, fields are camelCase (snake_case names accepted too)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, alias_generator=to_camel)


class ResourceStatus(BaseModel):
    """Written by the operator only; its schema documents what ``kubectl get -o yaml`` shows."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, alias_generator=to_camel)


class TenantOwnedSpec(ResourceSpec):
    """A spec naming the tenant that owns what the resource creates."""

    tenant: str = Field(description="Owning tenant (the name of a Tenant resource in the same namespace).")

    @field_validator("tenant")
    @classmethod
    def _tenant(cls, v: str) -> str:
        return check_tenant_name(v)


# --- Tenant ----------------------------------------------------------------------------------------
class TenantResourceSpec(ResourceSpec):
    """A tenant: its quotas and display name. Its name is ``metadata.name``."""

    display_name: str = Field("", max_length=200, description="Human-readable name shown in the console.")
    quotas: TenantQuotas = Field(
        default_factory=TenantQuotas, description="Rate and size limits (0 = unlimited)."
    )
    key_rotation: int | str | None = Field(
        None,
        description="Change this value (a counter or a date) to issue a new API key; the old key stops "
        "working once the operator has rotated it.",
    )

    def tenant_spec(self, name: str) -> TenantSpec:
        """The kernel's ``TenantSpec`` for this resource (validates ``name`` as a tenant name)."""
        return TenantSpec(name=name, display_name=self.display_name, quotas=self.quotas)


class TenantResourceStatus(ResourceStatus):
    secret_name: str | None = Field(None, description="Secret holding the API key (`api-key`).")
    key_prefix: str | None = Field(
        None, description="First characters of the current key, to tell keys apart."
    )
    key_rotation: int | str | None = Field(None, description="The spec.keyRotation value last acted on.")
    key_rotated_at: str | None = Field(None, description="When the current key was issued (RFC 3339).")


# --- KnowledgeBase ---------------------------------------------------------------------------------
class S3Source(ResourceSpec):
    """Objects under an S3-compatible prefix."""

    uri: str = Field(
        pattern=r"^s3://[^/]+(/.*)?$", description="`s3://bucket/prefix/`: every object below is ingested."
    )
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, Ceph); default: AWS.")
    secret_name: str | None = Field(
        None,
        description="Secret (same namespace) with `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`; default: "
        "the operator's own credentials.",
    )


class KnowledgeBaseSource(ResourceSpec):
    """Exactly one of ``path``, ``s3`` or ``documents``."""

    path: str | None = Field(
        None,
        description="File or directory on the shared volume, relative to its mount (the operator's "
        "`ADEPT_SHARED_DIR`); directories are read recursively.",
    )
    s3: S3Source | None = Field(None, description="An S3-compatible prefix.")
    documents: list[IngestRecord] | None = Field(
        None,
        description="Inline documents (`id`, `title`, `text`, `metadata`), for small or generated content.",
    )

    @field_validator("path")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or ".." in v.split("/")):
            raise ValueError(f"path {v!r} must be a non-empty path inside the shared volume (no '..')")
        return v

    @model_validator(mode="after")
    def _exactly_one(self) -> KnowledgeBaseSource:
        given = [k for k in ("path", "s3", "documents") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"a source sets exactly one of path, s3, documents (got {given or 'none'})")
        return self


class KnowledgeBaseSpec(TenantOwnedSpec):
    """Documents of one tenant, kept in sync with their sources."""

    sources: list[KnowledgeBaseSource] = Field(min_length=1, description="Where the documents come from.")
    retrieval: RetrievalConfig | None = Field(
        None,
        description="Chunking and embedding overrides for these documents (the `retrieval:` config block).",
    )
    resync_period: int = Field(
        0,
        ge=0,
        le=7 * 24 * 3600,
        description="Re-read the sources every N seconds (0: only when the spec changes).",
    )


class SourceError(BaseModel):
    source: str = Field(description="File, object or record that was skipped.")
    reason: str = Field(description="Why.")


class KnowledgeBaseStatus(ResourceStatus):
    documents: int | None = Field(
        None, description="Documents this resource holds in the tenant's knowledge base."
    )
    chunks: int | None = Field(None, description="Chunks stored for them.")
    last_sync: str | None = Field(None, description="When the sources were last read (RFC 3339).")
    errors: list[SourceError] | None = Field(None, description="Files or records skipped at the last sync.")


# --- FineTuneJob -----------------------------------------------------------------------------------
class FineTuneJobSpec(TenantOwnedSpec):
    """A fine-tuning run on the training Ray cluster that yields a new version of an Adapter."""

    adapter: str = Field(description="Adapter name within the tenant; each successful run adds a version.")
    config: dict[str, Any] = Field(
        description="The training job config (`python -m training.finetune --config` YAML) without "
        "`tenant`/`adapter`, which come from the fields above."
    )
    ray_address: str | None = Field(
        None,
        description="Ray dashboard address (`http://host:8265`); default: the operator's `ADEPT_RAY_ADDRESS`.",
    )
    cancel: bool = Field(
        False,
        description="Set to true to stop the run: the Ray job is stopped and the job ends `STOPPED` (never resubmitted).",
    )

    # crdgen replaces the free-form `config` schema with the training config's own, minus these keys.
    embedded_configs: ClassVar[dict[str, tuple[type[BaseModel], tuple[str, ...]]]] = {
        "config": (FineTuneJobConfig, ("tenant", "adapter"))
    }

    @field_validator("adapter")
    @classmethod
    def _adapter(cls, v: str) -> str:
        return check_adapter_name(v)

    def job_config(self, **defaults: Any) -> FineTuneJobConfig:
        """The full training config: ``config`` plus tenant/adapter (and ``defaults`` for unset output keys).

        Raises:
            ConfigError: listing every problem (a cross-tenant ``config.tenant`` included).
        """
        data = dict(self.config)
        problems = [
            f"config.{k}: {data[k]!r} differs from spec.{k} {v!r} (leave it out; spec.{k} applies)"
            for k, v in (("tenant", self.tenant), ("adapter", self.adapter))
            if k in data and data[k] != v
        ]
        if problems:
            from adept.errors import ConfigError

            raise ConfigError("FineTuneJob spec is invalid:", problems)
        output = {**defaults, **dict(data.get("output") or {})}
        data.update(tenant=self.tenant, adapter=self.adapter, output=output)
        return validate(FineTuneJobConfig, data, source="FineTuneJob spec.config")


class TrainingStep(BaseModel):
    """One reported training step (status.history)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, alias_generator=to_camel)

    step: int = Field(description="Optimizer step.")
    at: str | None = Field(None, description="When the operator saw it (RFC 3339).")
    total_steps: int | None = Field(None, description="Steps the run will take.")
    loss: float | None = Field(None, description="Training loss.")
    eval_loss: float | None = Field(None, description="Validation loss, at steps that evaluate.")
    tokens: int | None = Field(None, description="Training tokens seen so far.")
    checkpoint: str | None = Field(None, description="The checkpoint written at this step, if one was.")


class TrainingError(BaseModel):
    """Why the run failed, as training reported it (status.error)."""

    code: str = Field(description="Machine-readable reason (`invalid_dataset`, `quota_exceeded`, ...).")
    message: str = Field(description="What went wrong.")
    param: str | None = Field(None, description="The setting at fault, when there is one.")


class FineTuneJobStatus(ResourceStatus):
    """The mirror of the job's record (the kernel's ``FineTuning``; the record is the truth)."""

    job_record: str | None = Field(None, description="The job's id (`GET /v1/fine_tuning/jobs/<id>`).")
    job_id: str | None = Field(None, description="Ray job submission id of the current attempt.")
    state: str | None = Field(
        None,
        description="Job state: PENDING (validating, queued), RUNNING, SUCCEEDED, FAILED, STOPPED (cancelled).",
    )
    step: int | None = Field(None, description="Last reported optimizer step.")
    loss: float | None = Field(None, description="Last reported training loss.")
    adapter_version: str | None = Field(None, description="Adapter version the run published (`v<N>`).")
    started_at: str | None = Field(None, description="When the job was submitted (RFC 3339).")
    finished_at: str | None = Field(None, description="When the job reached a terminal state.")
    history: list[TrainingStep] | None = Field(
        None, description="Every reported step with its losses (the last 1000), oldest first."
    )
    trained_tokens: int | None = Field(None, description="Tokens trained on, once the run succeeded.")
    error: TrainingError | None = Field(None, description="Why the run failed, as training reported it.")
    evaluation: dict[str, Any] | None = Field(
        None,
        description="Eval-gated promotion of the published version (jobs naming `config.evaluation_file`): the "
        "metric, its score and the active version's, every metric's mean, promoted or kept inactive, and why.",
    )


# --- Adapter ---------------------------------------------------------------------------------------
class AdapterSpec(TenantOwnedSpec):
    """A tenant's adapter in the registry, and which of its versions serving uses."""

    name: str = Field(description="Adapter name within the tenant (`model: <tenant>/<name>` in requests).")
    version: str | None = Field(
        None, description="Latest version known to exist (`v<N>`), set by the FineTuneJob that produced it."
    )
    source: str | None = Field(
        None,
        description="Storage location of PEFT files (`adapter_config.json`, `adapter_model.safetensors`, "
        "optional `manifest.json`): a directory on the shared volume or an fsspec URI; published once as "
        "a new version.",
    )
    active_version: str | None = Field(
        None, description="Pin serving to this version (`v<N>`); default: the latest version."
    )
    base_model: str | None = Field(
        None, description="Base model the adapter was trained on; default: read from its manifest."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_adapter_name(v)

    @field_validator("version", "active_version")
    @classmethod
    def _version(cls, v: str | None) -> str | None:
        if v is not None and not VERSION_RE.fullmatch(v):
            raise ValueError(f"invalid version {v!r}: use v<N>, e.g. v3")
        return v


class AdapterStatus(ResourceStatus):
    versions: list[str] | None = Field(None, description="Versions in the registry, oldest first.")
    active_version: str | None = Field(None, description="Version serving uses now.")
    storage_uri: str | None = Field(None, description="Registry location of the active version.")
    base_model: str | None = Field(None, description="Base model of the active version.")
    published_source: str | None = Field(None, description="spec.source value already published.")
    pinned_version: str | None = Field(
        None,
        description="spec.activeVersion value already applied; without one, the registry's choice "
        "(the latest, or what eval-gated promotion kept) is left alone.",
    )
    evaluations: dict[str, dict[str, Any]] | None = Field(
        None,
        description="Per version, how it measured when eval-gated promotion considered it (metric, score, "
        "the version it was compared against and its score, promoted, reason); from its manifest.",
    )


# --- the four kinds --------------------------------------------------------------------------------
class Kind(BaseModel):
    """What crdgen and the handlers need to know about one custom resource."""

    kind: str
    plural: str
    short_names: list[str]
    spec: type[ResourceSpec]
    status: type[ResourceStatus]
    columns: list[tuple[str, str, str]]  # (name, type, jsonPath)


_READY = ("Ready", "string", '.status.conditions[?(@.type=="Ready")].status')
_REASON = ("Reason", "string", '.status.conditions[?(@.type=="Ready")].reason')
_AGE = ("Age", "date", ".metadata.creationTimestamp")

KINDS: dict[str, Kind] = {
    k.kind: k
    for k in [
        Kind(
            kind="Tenant",
            plural="tenants",
            short_names=["adtn"],
            spec=TenantResourceSpec,
            status=TenantResourceStatus,
            columns=[
                ("Display", "string", ".spec.displayName"),
                ("Key", "string", ".status.keyPrefix"),
                _READY,
                _REASON,
                _AGE,
            ],
        ),
        Kind(
            kind="KnowledgeBase",
            plural="knowledgebases",
            short_names=["kb"],
            spec=KnowledgeBaseSpec,
            status=KnowledgeBaseStatus,
            columns=[
                ("Tenant", "string", ".spec.tenant"),
                ("Documents", "integer", ".status.documents"),
                ("Chunks", "integer", ".status.chunks"),
                ("Last Sync", "date", ".status.lastSync"),
                _READY,
                _AGE,
            ],
        ),
        Kind(
            kind="FineTuneJob",
            plural="finetunejobs",
            short_names=["ftj"],
            spec=FineTuneJobSpec,
            status=FineTuneJobStatus,
            columns=[
                ("Tenant", "string", ".spec.tenant"),
                ("Adapter", "string", ".spec.adapter"),
                ("State", "string", ".status.state"),
                ("Step", "integer", ".status.step"),
                ("Loss", "number", ".status.loss"),
                ("Version", "string", ".status.adapterVersion"),
                _READY,
                _AGE,
            ],
        ),
        Kind(
            kind="Adapter",
            plural="adapters",
            short_names=["adpt"],
            spec=AdapterSpec,
            status=AdapterStatus,
            columns=[
                ("Tenant", "string", ".spec.tenant"),
                ("Adapter", "string", ".spec.name"),
                ("Active", "string", ".status.activeVersion"),
                _READY,
                _REASON,
                _AGE,
            ],
        ),
    ]
}

ConditionType = Literal["Ready", "Progressing", "Failed"]


def parse_spec(kind: str, spec: Any) -> Any:
    """Validate a resource's ``spec`` as its model; ``ConfigError`` lists every problem at once."""
    return validate(KINDS[kind].spec, spec or {}, source=f"{kind} spec")
