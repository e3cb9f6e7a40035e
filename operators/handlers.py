"""kopf handlers for Tenant, KnowledgeBase, FineTuneJob and Adapter. Thin and idempotent.

Every handler validates the spec with ``operators.models`` and does its work through the kernel:
``adept.platform.Platform`` (over the namespace's Kubernetes tenant store and the adapter
registry) for tenants and adapters, the gateway's admin API (``adept.admin_client``) for what the
running platform holds (documents, loaded adapters), the Ray Jobs SDK for training. Status is
built by ``operators.resources``. A bad spec ends in a ``Failed`` condition and
``kopf.PermanentError`` (no retry loop); an unreachable dependency in ``kopf.TemporaryError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kopf

from adept.errors import AdeptError, Conflict, InvalidRequest, NotFound, PermissionDenied, Unavailable
from adept.kube import GROUP, VERSION, Kube
from adept.tenancy.kubernetes import (
    HASH_ANNOTATION,
    ISSUED_ANNOTATION,
    PREFIX_ANNOTATION,
    KubernetesTenantStore,
    key_secret_name,
)
from operators import kb_sync
from operators import resources as R
from operators.models import parse_spec
from operators.settings import configure, load_finetuning_config, load_operator_config

# Timer periods are fixed when handlers register, so they come from the environment, not memo.
POLL_INTERVAL = float(os.environ.get("ADEPT_POLL_INTERVAL", "10"))
RESYNC_CHECK_INTERVAL = float(os.environ.get("ADEPT_RESYNC_CHECK_INTERVAL", "30"))
_lazy_lock = threading.Lock()


# --- plumbing --------------------------------------------------------------------------------------
@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    configure(settings)
    memo.config, memo.platform_config = load_operator_config()
    memo.finetuning = load_finetuning_config()
    memo.kube = Kube()
    _check_kuberay(memo, logger)
    memo.platforms = {}
    memo.gateway = None
    memo.evaluator = None  # without a gateway, a FineTuneJob's evaluated version is published unmeasured
    if memo.config.gateway_url:
        from adept.admin_client import AdminClient

        memo.gateway = AdminClient(memo.config.gateway_url, memo.config.gateway_admin_key or "")
        memo.evaluator = GatewayEvaluator(memo.gateway)
    logger.info("adept operator ready: ray=%s gateway=%s", memo.config.ray_address, memo.config.gateway_url)


def _check_kuberay(memo: kopf.Memo, logger: Any) -> None:
    """Refuse to start on a KubeRay without ``authOptions.secretName`` (operators.kuberay); the message says why."""
    from operators.kuberay import KubeRayTooOld, check_kuberay

    try:
        skipped = check_kuberay(memo.kube, os.environ.get("POD_NAMESPACE"), memo.config.training_cluster)
    except KubeRayTooOld as e:
        logger.error("%s", e)
        raise kopf.PermanentError(str(e)) from None
    for what in skipped:
        logger.info("KubeRay check skipped: %s", what)


@kopf.on.cleanup()
def cleanup(memo: kopf.Memo, **_: Any) -> None:
    for platform in getattr(memo, "platforms", {}).values():
        platform.close()
    if getattr(memo, "gateway", None) is not None:
        memo.gateway.close()


class _GatewayReplicas:
    """``adept.platform.AdapterReplicas`` through the gateway's admin API (best effort: LRU covers misses)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def unload(self, adapter_id: str) -> None:
        await asyncio.to_thread(self.client.unload_adapter, adapter_id)


class GatewayEvaluator:
    """``adept.finetuning.promotion.Evaluator`` through the gateway's admin API: the gateway asks the
    questions as the tenant, with the model that serves, and scores them (``tools.eval.serve_app``
    gives it the scoring); the job owner here compares and records (``Platform.promote``)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def __call__(self, tenant: str, eval_set: Any) -> Any:
        lines = "".join(item.model_dump_json(exclude_defaults=True) + "\n" for item in eval_set.items)

        async def evaluate(model_id: str) -> dict[str, float]:
            return await asyncio.to_thread(self.client.evaluate, tenant, model_id, lines)

        return evaluate


def _platform(memo: kopf.Memo, namespace: str) -> Any:
    """The kernel ``Platform`` for the tenants of ``namespace`` (one per namespace, made on first use)."""
    from adept.platform import Platform

    with _lazy_lock:
        platform = memo.platforms.get(namespace)
        if platform is None:
            cfg = memo.platform_config.model_copy(
                update={"tenant_store": "kubernetes", "kubernetes_namespace": namespace}
            )
            platform = Platform(
                cfg,
                tenants=KubernetesTenantStore(namespace, kube=memo.kube),
                replicas=_GatewayReplicas(memo.gateway) if memo.gateway is not None else None,
            )
            memo.platforms[namespace] = platform
        return platform


def _gateway(memo: kopf.Memo) -> Any:
    if memo.gateway is None:
        raise Unavailable(
            "no gateway configured (ADEPT_GATEWAY_URL): documents live in the running platform and are "
            "changed through its admin API"
        )
    return memo.gateway


def _run(coro: Any) -> Any:
    """A kernel coroutine from a (threaded, synchronous) handler."""
    return asyncio.run(coro)


def _phase(patch: kopf.Patch, status: dict, meta: dict, phase: str, reason: str, message: str) -> None:
    patch.status.update(
        R.build_phase_status(
            phase, reason, message, generation=meta.get("generation"), old_conditions=status.get("conditions")
        )
    )


@contextlib.contextmanager
def _outcomes(patch: kopf.Patch, status: dict, meta: dict, memo: kopf.Memo) -> Iterator[None]:
    """The one map from failures to kopf: bad input -> Failed + PermanentError, outages -> TemporaryError."""
    try:
        yield
    except (kopf.PermanentError, kopf.TemporaryError):
        raise
    except (InvalidRequest, Conflict, NotFound, PermissionDenied) as e:
        _phase(patch, status, meta, "failed", "InvalidSpec", e.message)
        raise kopf.PermanentError(e.message) from None
    except AdeptError as e:  # Unavailable, StorageError, ...: retrying may help
        _phase(patch, status, meta, "progressing", "Retrying", e.message)
        raise kopf.TemporaryError(e.message, delay=memo.config.retry_delay) from None
    except (ConnectionError, TimeoutError) as e:
        _phase(patch, status, meta, "progressing", "Retrying", f"{type(e).__name__}: {e}")
        raise kopf.TemporaryError(str(e), delay=memo.config.retry_delay) from None


@contextlib.contextmanager
def _cleanup(memo: kopf.Memo, what: str) -> Iterator[None]:
    """Finalizers: every failure is worth another try (the resource stays until cleanup succeeds)."""
    try:
        yield
    except (kopf.PermanentError, kopf.TemporaryError):
        raise
    except (AdeptError, OSError) as e:
        message = e.message if isinstance(e, AdeptError) else f"{type(e).__name__}: {e}"
        raise kopf.TemporaryError(f"{what}: {message}", delay=memo.config.retry_delay) from None


def _spec(kind: str, spec: Any, patch: kopf.Patch, status: dict, meta: dict) -> Any:
    try:
        return parse_spec(kind, dict(spec))
    except AdeptError as e:
        _phase(patch, status, meta, "failed", "InvalidSpec", e.message)
        raise kopf.PermanentError(e.message) from None


def _require_tenant(
    memo: kopf.Memo, namespace: str, tenant: str, patch: Any, status: dict, meta: dict
) -> dict:
    """The Tenant resource ``tenant``; waits (TemporaryError) while it does not exist or is being deleted."""
    obj = memo.kube.get(namespace, "tenants", tenant)
    if obj is None or obj["metadata"].get("deletionTimestamp"):
        why = "does not exist" if obj is None else "is being deleted"
        _phase(
            patch, status, meta, "progressing", "WaitingForTenant", f"Tenant {tenant!r} {why} in {namespace}"
        )
        raise kopf.TemporaryError(f"Tenant {tenant!r} {why}", delay=memo.config.retry_delay) from None
    return obj


# --- Tenant ----------------------------------------------------------------------------------------
@kopf.on.resume(GROUP, VERSION, "tenants")
@kopf.on.create(GROUP, VERSION, "tenants")
@kopf.on.update(GROUP, VERSION, "tenants", field="spec")
def reconcile_tenant(
    name: str,
    namespace: str,
    spec: Any,
    status: Any,
    meta: Any,
    body: Any,
    patch: kopf.Patch,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """Issue the API key once (into its Secret, its hash onto the Tenant), rotate it when spec.keyRotation changes."""
    status, meta = dict(status), dict(meta)
    parsed = _spec("Tenant", spec, patch, status, meta)
    with _outcomes(patch, status, meta, memo):
        parsed.tenant_spec(name)  # metadata.name must be a valid tenant name
        store = _platform(memo, namespace).tenants
        owner = {"apiVersion": body.get("apiVersion"), "kind": "Tenant", "metadata": dict(meta)}
        wants_rotation = parsed.key_rotation is not None and status.get("keyRotation") != parsed.key_rotation
        # keyRotatedAt in status: we reconciled before, so a new keyRotation value is a request, not the initial one.
        rotate = wants_rotation and status.get("keyRotatedAt") is not None
        if rotate:
            store.issue_key(name, owner=owner)  # never logged: it only goes into the Secret
        key = store.ensure_key(name, owner=owner)
        in_secret = store.has_key_secret(name)
        where = (
            f"its API key is in Secret {key_secret_name(name)} (key `api-key`)"
            if in_secret
            else "its API key was shown once by the admin API (bump spec.keyRotation for one in a Secret)"
        )
        _phase(
            patch,
            status,
            meta,
            "ready",
            "KeyRotated" if rotate else "Ready",
            f"tenant {name} is active; {where}",
        )
        patch.status.update(
            secretName=key_secret_name(name) if in_secret else None,
            keyPrefix=key.get(PREFIX_ANNOTATION),
            keyRotation=parsed.key_rotation,
            keyRotatedAt=key.get(ISSUED_ANNOTATION),
        )


@kopf.on.delete(GROUP, VERSION, "tenants")
def delete_tenant(name: str, namespace: str, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    """Delete the tenant's resources, then everything it owns in the platform, then its key."""
    kube: Kube = memo.kube
    with _cleanup(memo, f"cleanup of tenant {name}"):
        remaining = []
        for plural in ("knowledgebases", "finetunejobs", "adapters"):
            for obj in kube.list(namespace, plural):
                if (obj.get("spec") or {}).get("tenant") == name:
                    remaining.append(f"{plural}/{obj['metadata']['name']}")
                    if not obj["metadata"].get("deletionTimestamp"):
                        kube.delete(namespace, plural, obj["metadata"]["name"])
        if remaining:
            # Their own finalizers clean up (stop jobs, drop documents); the tenant goes last.
            raise kopf.TemporaryError(
                f"waiting for {len(remaining)} resources: {', '.join(remaining[:5])}", delay=2
            )
        # Also whatever was created through the API rather than by resources: the platform's purge.
        _gateway(memo).purge_tenant(name)
        _platform(memo, namespace).tenants.revoke_keys(name)
    logger.info("tenant %s deleted with its documents, adapters and key", name)


def _key_moved(meta: Any, status: Any, **_: Any) -> bool:
    """The Tenant's key is no longer the one its status reports: it was set through the admin API."""
    notes, status = meta.get("annotations") or {}, status or {}
    if not notes.get(HASH_ANNOTATION) or meta.get("deletionTimestamp") or status.get("keyRotatedAt") is None:
        return False  # no key yet, going away, or never reconciled: reconcile_tenant's business
    return (notes.get(PREFIX_ANNOTATION), notes.get(ISSUED_ANNOTATION)) != (
        status.get("keyPrefix"),
        status.get("keyRotatedAt"),
    )


# kopf's change handlers see spec changes only (annotations are not in its diff), so watch events;
# the filter reads nothing from the API, so ordinary events cost nothing.
@kopf.on.event(GROUP, VERSION, "tenants", when=_key_moved)
def key_changed(
    event: Any, name: str, namespace: str, patch: kopf.Patch, memo: kopf.Memo, logger: Any, **_: Any
) -> None:
    """A key rotated through the admin API: an operator-issued key Secret now holds a dead key; drop it."""
    if event.get("type") == "DELETED":
        return
    store = _platform(memo, namespace).tenants
    try:
        key = store.ensure_key(name)
        in_secret = store.has_key_secret(name)
    except AdeptError as e:  # an event handler is not retried: the next event is
        logger.warning("checking the key Secret of tenant %s: %s", name, e.message)
        return
    patch.status.update(
        secretName=key_secret_name(name) if in_secret else None,
        keyPrefix=key.get(PREFIX_ANNOTATION),
        keyRotatedAt=key.get(ISSUED_ANNOTATION),
    )


# --- KnowledgeBase ---------------------------------------------------------------------------------
def _s3_credentials(memo: kopf.Memo, namespace: str, secret_name: str) -> dict[str, str]:
    from adept.tenancy.kubernetes import decode_secret_value

    secret = memo.kube.get_secret(namespace, secret_name)
    if secret is None:
        raise NotFound(f"Secret {secret_name!r} (S3 credentials) not found in {namespace}")
    return {
        "key": decode_secret_value(secret, "AWS_ACCESS_KEY_ID") or "",
        "secret": decode_secret_value(secret, "AWS_SECRET_ACCESS_KEY") or "",
    }


@kopf.on.resume(GROUP, VERSION, "knowledgebases")
@kopf.on.create(GROUP, VERSION, "knowledgebases")
@kopf.on.update(GROUP, VERSION, "knowledgebases", field="spec")
def sync_knowledge_base(
    name: str, namespace: str, spec: Any, status: Any, meta: Any, patch: kopf.Patch, memo: kopf.Memo, **_: Any
) -> None:
    """Ingest the sources into the tenant's knowledge base; report documents, chunks and skipped files."""
    status, meta = dict(status), dict(meta)
    parsed = _spec("KnowledgeBase", spec, patch, status, meta)
    with _outcomes(patch, status, meta, memo):
        _require_tenant(memo, namespace, parsed.tenant, patch, status, meta)
        result = kb_sync.sync(
            _gateway(memo),
            parsed.tenant,
            name,
            parsed,
            shared_dir=memo.config.shared_dir,
            s3_credentials=lambda secret: _s3_credentials(memo, namespace, secret),
        )
        patch.status.update(
            R.build_kb_status(
                documents=result.documents,
                chunks=result.chunks,
                errors=result.errors,
                generation=meta.get("generation"),
                old_conditions=status.get("conditions"),
            )
        )


def _resync_due(spec: Any, status: Any, **_: Any) -> bool:
    period = int((spec or {}).get("resyncPeriod") or 0)
    last = (status or {}).get("lastSync")
    if not period or not last:
        return False
    then = datetime.strptime(last, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return (datetime.now(UTC) - then).total_seconds() >= period


@kopf.timer(GROUP, VERSION, "knowledgebases", interval=RESYNC_CHECK_INTERVAL, when=_resync_due)
def resync_knowledge_base(**kwargs: Any) -> None:
    """Periodic resync (``spec.resyncPeriod``): the same reconcile, so sources changed on disk come in."""
    sync_knowledge_base(**kwargs)


@kopf.on.delete(GROUP, VERSION, "knowledgebases")
def delete_knowledge_base(name: str, spec: Any, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    tenant = (spec or {}).get("tenant")
    if not tenant:
        return
    with _cleanup(memo, f"cannot delete the documents of {name}"):
        removed = kb_sync.remove(_gateway(memo), tenant, name)
    logger.info("knowledge base %s: removed %d documents of tenant %s", name, removed, tenant)


# --- FineTuneJob -----------------------------------------------------------------------------------
# A FineTuneJob is a job of the kernel's ``FineTuning`` owner (its record rides in the resource,
# ``adept.finetuning.kube_store``); these handlers only decide when the owner's driver looks at it,
# with the Ray Jobs executor, and mirror the record into ``status`` for kubectl.
def _ray(memo: kopf.Memo, address: str | None) -> Any:
    """A Jobs API client of the training cluster, sending its token (the cluster refuses calls without)."""
    from adept.ray_auth import jobs_client

    token = memo.config.ray_token
    return jobs_client(address or memo.config.ray_address, token.get_secret_value() if token else None)


def _executor(memo: kopf.Memo, ray_address: str | None) -> Any:
    """The Ray Jobs executor of the training cluster (its drivers reserve the platform's
    ``training_entrypoint_num_cpus``, the number the job owner places jobs with)."""
    from adept.finetuning.executors import RayJobs

    return RayJobs(
        _ray(memo, ray_address),
        entrypoint=memo.config.job_entrypoint,
        env=memo.config.job_env,
        config_file="finetune.yaml",
        entrypoint_num_cpus=memo.platform_config.training_entrypoint_num_cpus,
    )


def _finetuning(memo: kopf.Memo, namespace: str, ray_address: str | None = None) -> Any:
    """The kernel's ``FineTuning`` for ``namespace``: FineTuneJob resources, runs on Ray Jobs, the
    platform's fine-tuning settings (retention, promotion) and its evaluator (eval-gated promotion)."""
    from adept.finetuning.files import open_file_store
    from adept.finetuning.kube_store import KubernetesJobStore
    from adept.finetuning.service import FineTuning

    platform = _platform(memo, namespace)
    store = KubernetesJobStore(namespace, kube=memo.kube)
    return FineTuning(
        platform,
        open_file_store(platform.config),
        store,
        memo.finetuning,
        executor=_executor(memo, ray_address),
        evaluator=memo.evaluator,
    )


def _record(memo: kopf.Memo, namespace: str, name: str) -> Any:
    from adept.finetuning.kube_store import PLURAL, record_of

    obj = memo.kube.get(namespace, PLURAL, name)
    return (obj, record_of(obj)) if obj is not None else (None, None)


def _mirror(patch: kopf.Patch, status: dict, meta: dict, record: Any) -> None:
    patch.status.update(
        R.build_job_status(record, generation=meta.get("generation"), old_conditions=status.get("conditions"))
    )


@kopf.on.resume(GROUP, VERSION, "finetunejobs")
@kopf.on.create(GROUP, VERSION, "finetunejobs")
@kopf.on.update(GROUP, VERSION, "finetunejobs", field="spec")
def reconcile_finetune_job(
    name: str,
    namespace: str,
    spec: Any,
    status: Any,
    meta: Any,
    patch: kopf.Patch,
    memo: kopf.Memo,
    logger: Any,
    **_: Any,
) -> None:
    """Adopt a FineTuneJob made with kubectl as a job of the kernel (every check of a job, once); cancel
    one whose ``spec.cancel`` is set. The timer below drives it."""
    status, meta = dict(status), dict(meta)
    parsed = _spec("FineTuneJob", spec, patch, status, meta)
    with _outcomes(patch, status, meta, memo):
        owner = _finetuning(memo, namespace, parsed.ray_address)
        obj, record = _record(memo, namespace, name)
        if obj is None:
            return  # deleted meanwhile
        if record is None:  # made with kubectl: the platform team's job, checked as every job is
            # (the owner gives one naming no workers the training group's GPUs and refuses one that
            # cannot fit the training cluster: FineTuning.create_from_config)
            platform = owner.platform
            job = parsed.job_config()
            job.check_publisher(platform.config)
            store = job.output.adapter_store_uri
            if store and store != platform.config.resolved_adapter_store:
                raise InvalidRequest(
                    f"config.output.adapter_store_uri {store!r} is not this platform's registry "
                    f"{platform.config.resolved_adapter_store!r}; serving would never see the adapter"
                )
            _check_adapter_owner(memo, namespace, parsed.tenant, parsed.adapter)
            _require_tenant(memo, namespace, parsed.tenant, patch, status, meta)
            record = _run(owner.create_from_config(job, adopt=obj))
            logger.info("FineTuneJob %s is job %s of tenant %s", name, record.id, record.tenant)
        if parsed.cancel and (record.active or record.status == "cancelled"):
            record = owner.cancel_job(record.id)  # stops its Ray job
            logger.info("cancelled: stopped the Ray job of %s", name)
        _mirror(patch, status, meta, record)


def _job_active(status: Any, **_: Any) -> bool:
    return (status or {}).get("state") not in R.TERMINAL_STATES


@kopf.timer(GROUP, VERSION, "finetunejobs", interval=POLL_INTERVAL, when=_job_active)
def poll_finetune_job(
    name: str,
    namespace: str,
    spec: Any,
    status: Any,
    meta: Any,
    patch: kopf.Patch,
    memo: kopf.Memo,
    logger: Any,
    **_: Any,
) -> None:
    """One step of the kernel's driver for this job (queue, start on Ray, read its events, publish),
    then mirror the record; a published adapter gets its Adapter resource."""
    from adept.finetuning.runner import JobRunner

    status, meta, spec = dict(status), dict(meta), dict(spec)
    _, record = _record(memo, namespace, name)
    if record is None:
        return  # not adopted yet (the create handler is retrying) or deleted
    owner = _finetuning(memo, namespace, spec.get("rayAddress"))
    try:
        record = JobRunner(owner).step(record)
    except AdeptError as e:  # Ray or the API server away: the job runs on without us
        _phase(patch, status, meta, "progressing", "RayUnreachable", e.message)
        return  # the timer polls again
    if record.status != "running" or record.history != []:
        logger.info("FineTuneJob %s: %s", name, record.status)
    if record.status == "succeeded" and record.adapter_version:
        _upsert_adapter(memo, namespace, name, record.tenant, record.adapter, record.adapter_version)
    _mirror(patch, status, meta, record)


def _check_adapter_owner(memo: kopf.Memo, namespace: str, tenant: str, adapter: str) -> None:
    existing = memo.kube.get(namespace, "adapters", R.adapter_object_name(tenant, adapter))
    if existing is not None and (existing.get("spec") or {}).get("tenant") != tenant:
        raise InvalidRequest(
            f"Adapter {existing['metadata']['name']!r} belongs to tenant {existing['spec'].get('tenant')!r}, "
            f"not {tenant!r}"
        )


@kopf.timer(
    GROUP,
    VERSION,
    "finetunejobs",
    interval=max(POLL_INTERVAL, 600.0),
    when=lambda **kw: not _job_active(**kw),
)
def prune_finetune_jobs(namespace: str, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    """Retention: finished jobs past ``retention_days`` go, resource and run directory (the kernel's prune)."""
    gone = _finetuning(memo, namespace).prune()
    if gone:
        logger.info("pruned %d finished FineTuneJobs", len(gone))


def _upsert_adapter(
    memo: kopf.Memo, namespace: str, job: str, tenant: str, adapter: str, version: str
) -> None:
    body = R.build_adapter_object(
        tenant=tenant, adapter=adapter, version=version, namespace=namespace, finetunejob=job
    )
    if memo.kube.get(namespace, "adapters", body["metadata"]["name"]) is None:
        with contextlib.suppress(Conflict):  # created concurrently: patch it below
            memo.kube.create(namespace, "adapters", body)
            return
    memo.kube.patch(namespace, "adapters", body["metadata"]["name"], {"spec": {"version": version}})


@kopf.on.delete(GROUP, VERSION, "finetunejobs", retries=10)
def delete_finetune_job(name: str, namespace: str, spec: Any, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    """Stop the Ray job if it still runs (after 10 failed tries the resource is released anyway)."""
    _, record = _record(memo, namespace, name)
    if record is None or not record.run.ref:
        return
    with _cleanup(memo, f"cannot stop Ray job {record.run.ref}"):
        if _finetuning(memo, namespace, (spec or {}).get("rayAddress")).executor.stop(record):
            logger.info("stopped Ray job %s", record.run.ref)


# --- Adapter ---------------------------------------------------------------------------------------
@kopf.on.resume(GROUP, VERSION, "adapters")
@kopf.on.create(GROUP, VERSION, "adapters")
@kopf.on.update(GROUP, VERSION, "adapters", field="spec")
def reconcile_adapter(
    namespace: str,
    spec: Any,
    status: Any,
    meta: Any,
    patch: kopf.Patch,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """Publish ``source`` once, pin ``activeVersion``; report what serving uses."""
    status, meta = dict(status), dict(meta)
    parsed = _spec("Adapter", spec, patch, status, meta)
    with _outcomes(patch, status, meta, memo):
        _require_tenant(memo, namespace, parsed.tenant, patch, status, meta)
        platform = _platform(memo, namespace)
        if parsed.source and status.get("publishedSource") != parsed.source:
            with _adapter_source(memo, parsed.source) as local:
                # Keyed by resource and source: a handler run twice (a restart, an event race) publishes once.
                source = f"Adapter {namespace}/{meta['name']}: {parsed.source}"
                _run(
                    platform.publish_adapter(
                        parsed.tenant, parsed.name, local, base_model=parsed.base_model, source=source
                    )
                )
            patch.status["publishedSource"] = parsed.source
        versions = platform.registry.versions(parsed.tenant, parsed.name)
        wanted = parsed.active_version or parsed.version
        if not versions or (wanted and wanted not in versions):
            what = f"{parsed.tenant}/{parsed.name}" + (f"@{wanted}" if wanted else "")
            _phase(
                patch,
                status,
                meta,
                "progressing",
                "WaitingForVersion",
                f"adapter {what} is not in the registry yet",
            )
            raise kopf.TemporaryError(f"{what} not in registry", delay=memo.config.retry_delay) from None
        # Pinning drops the previously served version from the replicas (the platform does that).
        # Only a spec.activeVersion that is set, or changed since it was applied, pins or unpins:
        # otherwise what serves is the registry's (eval-gated promotion may have kept the latest
        # version inactive, and an unpin here would make it live).
        pinned = parsed.active_version
        if pinned or status.get("pinnedVersion") not in (None, pinned):
            active = _run(platform.activate_adapter(parsed.tenant, parsed.name, pinned))
            patch.status["pinnedVersion"] = pinned
        else:
            active = _run(platform.resolve_adapter(parsed.tenant, parsed.name))
        if parsed.base_model:
            from adept.adapters import check_base_model

            check_base_model(active.id, parsed.base_model, active.manifest.base_model)
        _phase(patch, status, meta, "ready", "Active", f"{active.id} is active")
        evaluations = {
            v.version: v.manifest.evaluation.model_dump(mode="json")
            for v in platform.registry.list(parsed.tenant)
            if v.name == parsed.name and v.manifest.evaluation is not None
        }
        patch.status.update(
            versions=versions,
            activeVersion=active.version,
            storageUri=active.uri,
            baseModel=active.manifest.base_model,
            **({"evaluations": evaluations} if evaluations else {}),
        )


@contextlib.contextmanager
def _adapter_source(memo: kopf.Memo, src: str) -> Iterator[Path]:
    """``spec.source`` as a local directory: on the shared volume, or downloaded from an fsspec URI."""
    if "://" not in src or src.startswith("file://"):
        yield kb_sync.resolve_path(memo.config.shared_dir, src.removeprefix("file://"))
        return
    from adept.training_runs import local_dir

    with local_dir(src, what="adapter source") as local:
        yield local


@kopf.on.delete(GROUP, VERSION, "adapters")
def delete_adapter(spec: Any, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    """Remove the adapter (all versions) from the registry and from the serving replicas."""
    tenant, name = (spec or {}).get("tenant"), (spec or {}).get("name")
    if not tenant or not name:
        return
    with _cleanup(memo, f"cannot delete {tenant}/{name}"), contextlib.suppress(NotFound, InvalidRequest):
        _run(_platform(memo, namespace).delete_adapter(tenant, name))
