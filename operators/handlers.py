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
import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kopf
import yaml

from adept.errors import AdeptError, Conflict, InvalidRequest, NotFound, PermissionDenied, Unavailable
from adept.finetuning.progress import parse_training_log
from adept.kube import GROUP, VERSION, Kube
from adept.placement import fit_job
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
from operators.settings import configure, load_operator_config

# Timer periods are fixed when handlers register, so they come from the environment, not memo.
POLL_INTERVAL = float(os.environ.get("ADEPT_POLL_INTERVAL", "10"))
RESYNC_CHECK_INTERVAL = float(os.environ.get("ADEPT_RESYNC_CHECK_INTERVAL", "30"))
_lazy_lock = threading.Lock()


# --- plumbing --------------------------------------------------------------------------------------
@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    configure(settings)
    memo.config, memo.platform_config = load_operator_config()
    memo.kube = Kube()
    _check_kuberay(memo, logger)
    memo.platforms = {}
    memo.gateway = None
    if memo.config.gateway_url:
        from adept.admin_client import AdminClient

        memo.gateway = AdminClient(memo.config.gateway_url, memo.config.gateway_admin_key or "")
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
def _ray(memo: kopf.Memo, address: str | None) -> Any:
    """A Jobs API client of the training cluster, sending its token (the cluster refuses calls without)."""
    from adept.ray_auth import jobs_client

    token = memo.config.ray_token
    return jobs_client(address or memo.config.ray_address, token.get_secret_value() if token else None)


def _ray_job(client: Any, submission_id: str) -> Any | None:
    """The Ray job with ``submission_id``, or None: found by listing (the SDK's errors carry no type)."""
    try:
        jobs = client.list_jobs()
    except Exception as e:  # the SDK raises RuntimeError/requests errors for any HTTP failure
        raise Unavailable(f"cannot list Ray jobs: {type(e).__name__}: {e}") from None
    return next((j for j in jobs if j.submission_id == submission_id), None)


@kopf.on.resume(GROUP, VERSION, "finetunejobs")
@kopf.on.create(GROUP, VERSION, "finetunejobs")
@kopf.on.update(GROUP, VERSION, "finetunejobs", field="spec")
def submit_finetune_job(
    name: str,
    namespace: str,
    uid: str | None,
    spec: Any,
    status: Any,
    meta: Any,
    patch: kopf.Patch,
    memo: kopf.Memo,
    logger: Any,
    **_: Any,
) -> None:
    """Submit the training job once per generation (deterministic submission id), then let the timer watch it."""
    status, meta = dict(status), dict(meta)
    parsed = _spec("FineTuneJob", spec, patch, status, meta)
    generation = meta.get("generation")
    if parsed.cancel:
        _cancel_finetune_job(parsed, status, meta, patch, memo, logger)
        return
    submission_id = R.build_submission_id(uid or f"{namespace}/{name}", generation)
    if status.get("jobId") == submission_id:
        return  # this generation is already submitted (operator restart, resume)
    with _outcomes(patch, status, meta, memo):
        platform = _platform(memo, namespace)
        job = fit_job(parsed.job_config(), platform.config.training_shape, memo.config.entrypoint_num_cpus)
        job.check_publisher(platform.config)
        store = job.output.adapter_store_uri
        if store and store != platform.config.resolved_adapter_store:
            raise InvalidRequest(
                f"config.output.adapter_store_uri {store!r} is not this platform's registry "
                f"{platform.config.resolved_adapter_store!r}; serving would never see the adapter"
            )
        _check_adapter_owner(memo, namespace, parsed.tenant, parsed.adapter)
        _require_tenant(memo, namespace, parsed.tenant, patch, status, meta)
        from adept.models import canonical_model_id

        # What publishing will enforce (tenant, quota, base model), checked before any GPU is used.
        base = canonical_model_id(job.base_model or platform.config.model)
        _run(platform.check_publishable(parsed.tenant, parsed.adapter, base))
        client = _ray(memo, parsed.ray_address)
        old = status.get("jobId")
        if old and status.get("state") not in R.TERMINAL_STATES and _ray_job(client, old) is not None:
            client.stop_job(old)  # the spec changed: the previous generation's run is obsolete
        if _ray_job(client, submission_id) is not None:
            logger.info(
                "Ray job %s was already submitted (operator restarted mid-submit): adopting it", submission_id
            )
        else:
            _submit(client, memo, name, namespace, uid, generation, job)
            logger.info("submitted Ray job %s", submission_id)
        patch.status.update(
            R.build_finetune_status("PENDING", generation=generation, old_conditions=status.get("conditions"))
        )
        patch.status.update(
            jobId=submission_id,
            startedAt=R.now_iso(),
            step=None,
            loss=None,
            adapterVersion=None,
            finishedAt=None,
        )


def _cancel_finetune_job(
    parsed: Any, status: dict, meta: dict, patch: kopf.Patch, memo: kopf.Memo, logger: Any
) -> None:
    """``spec.cancel``: stop the Ray job if one runs, and end the job STOPPED (never resubmitted)."""
    if status.get("state") in R.TERMINAL_STATES:
        return
    job_id = status.get("jobId")
    with _outcomes(patch, status, meta, memo):
        if job_id:
            client = _ray(memo, parsed.ray_address)
            job = _ray_job(client, job_id)
            if job is not None and str(getattr(job.status, "value", job.status)) not in R.TERMINAL_STATES:
                client.stop_job(job_id)
                logger.info("cancelled: stopped Ray job %s", job_id)
        patch.status.update(
            R.build_finetune_status(
                "STOPPED",
                message="cancelled (spec.cancel)",
                generation=meta.get("generation"),
                old_conditions=status.get("conditions"),
            )
        )


def _submit(
    client: Any, memo: kopf.Memo, name: str, namespace: str, uid: str | None, generation: Any, job: Any
) -> None:
    with tempfile.TemporaryDirectory(prefix="adept-ftj-") as tmp:
        # Unset fields (base model, data dir, adapter store) stay unset: the training pod's platform fills them.
        config = job.model_dump(mode="json", exclude_none=True)
        Path(tmp, "finetune.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        kwargs = R.build_job_submission(
            name=name,
            namespace=namespace,
            uid=uid or f"{namespace}/{name}",
            generation=generation,
            job_config=config,
            config_dir=tmp,
            env=memo.config.job_env,
            entrypoint=memo.config.job_entrypoint,
            entrypoint_num_cpus=memo.config.entrypoint_num_cpus,
        )
        try:
            client.submit_job(**kwargs)
        except Exception as e:  # the SDK's errors carry no type; a racing duplicate is found by listing
            if _ray_job(client, kwargs["submission_id"]) is None:
                raise Unavailable(f"Ray job submission failed: {type(e).__name__}: {e}") from None


def _check_adapter_owner(memo: kopf.Memo, namespace: str, tenant: str, adapter: str) -> None:
    existing = memo.kube.get(namespace, "adapters", R.adapter_object_name(tenant, adapter))
    if existing is not None and (existing.get("spec") or {}).get("tenant") != tenant:
        raise InvalidRequest(
            f"Adapter {existing['metadata']['name']!r} belongs to tenant {existing['spec'].get('tenant')!r}, "
            f"not {tenant!r}"
        )


def _job_active(status: Any, **_: Any) -> bool:
    return bool((status or {}).get("jobId")) and (status or {}).get("state") not in R.TERMINAL_STATES


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
    """Mirror the Ray job's state, step and loss; on success create or update the Adapter resource."""
    status, meta, spec = dict(status), dict(meta), dict(spec)
    job_id = status["jobId"]
    try:
        client = _ray(memo, spec.get("rayAddress"))
        info = client.get_job_info(job_id)
        logs = client.get_job_logs(job_id)
    except Exception as e:  # Unavailable, or the SDK's own errors: the job runs on without us
        reason = e.message if isinstance(e, AdeptError) else f"{type(e).__name__}: {e}"
        _phase(patch, status, meta, "progressing", "RayUnreachable", reason)
        return  # the timer polls again
    state = str(getattr(info.status, "value", info.status))
    if spec.get("cancel") and state not in R.TERMINAL_STATES:
        return  # being cancelled: the cancel handler stops it and writes the final state
    training_log = parse_training_log(logs or "")
    progress = R.parse_progress(logs or "")
    progress.pop("adapter_version", None)  # what the job's own output claims is not what gets served
    message = ""
    if state == "SUCCEEDED":
        try:
            published = _publish_run(memo, namespace, spec)
        except (InvalidRequest, Conflict, NotFound, PermissionDenied) as e:
            published, state = None, "FAILED"
            message = f"the job succeeded but its adapter cannot be published: {e.message}"
        except AdeptError as e:  # the registry or the tenant store is away: publish at the next poll
            _phase(patch, status, meta, "progressing", "Publishing", f"publishing the result: {e.message}")
            return
        if published is not None:
            progress["adapter_version"] = published.version
            _upsert_adapter(memo, namespace, name, spec["tenant"], spec["adapter"], published.version)
            message = f"adapter {published.id} published"
        elif state == "SUCCEEDED":
            message = "the result stays in the run directory (config.output.publish: false)"
    elif state in ("FAILED", "STOPPED"):
        tail = "\n".join((logs or "").strip().splitlines()[-5:])
        message = f"{info.message or state.lower()}" + (f"\nlast log lines:\n{tail}" if tail else "")
    if state != status.get("state") or progress.get("step") != status.get("step"):
        logger.info(
            "Ray job %s: %s %s", job_id, state, {k: v for k, v in progress.items() if k != "adapter_version"}
        )
    patch.status.update(
        R.build_finetune_status(
            state,
            message=message,
            progress=progress,
            generation=meta.get("generation"),
            old_conditions=status.get("conditions"),
        )
    )
    patch.status.update(R.build_training_report(training_log, status.get("history")))


def _publish_run(memo: kopf.Memo, namespace: str, spec: dict) -> Any | None:
    """Publish what the succeeded job left in its run directory (the training pod could not); None if it opted out.

    The run directory is computed here from the spec and this platform's storage, never taken from
    the job's output; ``Platform.publish_run`` checks the run is this FineTuneJob's tenant and
    adapter, applies every publishing rule, and returns the run's version if it is already published.
    """
    job = parse_spec("FineTuneJob", spec).job_config()
    if job.output.publish is False:
        return None
    platform = _platform(memo, namespace)
    run_dir = job.bind(platform.config).resolved_run_dir
    return _run(platform.publish_run(run_dir, job.tenant, job.adapter))


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
def delete_finetune_job(spec: Any, status: Any, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    """Stop the Ray job if it still runs (after 10 failed tries the resource is released anyway)."""
    job_id = (status or {}).get("jobId")
    if not job_id or (status or {}).get("state") in R.TERMINAL_STATES:
        return
    with _cleanup(memo, f"cannot stop Ray job {job_id}"):
        client = _ray(memo, (spec or {}).get("rayAddress"))
        job = _ray_job(client, job_id)
        if job is not None and str(getattr(job.status, "value", job.status)) not in R.TERMINAL_STATES:
            client.stop_job(job_id)
            logger.info("stopped Ray job %s", job_id)


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
        active = _run(platform.activate_adapter(parsed.tenant, parsed.name, parsed.active_version))
        if parsed.base_model:
            from adept.adapters import check_base_model

            check_base_model(active.id, parsed.base_model, active.manifest.base_model)
        _phase(patch, status, meta, "ready", "Active", f"{active.id} is active")
        patch.status.update(
            versions=versions,
            activeVersion=active.version,
            storageUri=active.uri,
            baseModel=active.manifest.base_model,
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
