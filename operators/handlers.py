"""kopf handlers for Tenant, KnowledgeBase, FineTuneJob and Adapter. Thin and idempotent.

Every handler validates the spec with ``operators.models``, does its work through the kernel
(tenant keys, adapter registry), the retrieval logic layer or the Ray Jobs SDK, and writes
status with ``operators.resources``. A bad spec ends in a ``Failed`` condition and
``kopf.PermanentError`` (no retry loop); an unreachable dependency in ``kopf.TemporaryError``.
"""

from __future__ import annotations

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

from adept.errors import AdeptError, Conflict, InvalidRequest, NotFound, StorageError, Unavailable
from adept.tenancy import new_api_key
from operators import kb_sync
from operators import resources as R
from operators.kube import Kube
from operators.models import GROUP, VERSION, parse_spec
from operators.settings import configure, load_operator_config

# Timer periods are fixed when handlers register, so they come from the environment, not memo.
POLL_INTERVAL = float(os.environ.get("ADEPT_POLL_INTERVAL", "10"))
RESYNC_CHECK_INTERVAL = float(os.environ.get("ADEPT_RESYNC_CHECK_INTERVAL", "30"))
_lazy_lock = threading.Lock()


# --- plumbing --------------------------------------------------------------------------------------
@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    configure(settings)
    memo.config, memo.platform = load_operator_config()
    memo.kube = Kube()
    logger.info("adept operator ready: ray=%s shared=%s", memo.config.ray_address, memo.config.shared_dir)


@kopf.on.cleanup()
def cleanup(memo: kopf.Memo, **_: Any) -> None:
    """Release the Milvus client (a Lite file stays locked while it is open)."""
    kb = getattr(memo, "kb", None)
    if kb is not None:
        kb.close()
        memo.kb = None


def _registry(memo: kopf.Memo) -> Any:
    with _lazy_lock:
        if getattr(memo, "registry", None) is None:
            from adept.adapters import open_adapter_registry

            memo.registry = open_adapter_registry(memo.platform)
        return memo.registry


def _knowledge_base(memo: kopf.Memo) -> Any:
    """One KnowledgeBase per operator process: Milvus Lite allows one client per file."""
    with _lazy_lock:
        if getattr(memo, "kb", None) is None:
            from services.retrieval.knowledge_base import KnowledgeBase

            try:
                memo.kb = KnowledgeBase.from_platform(memo.platform)
            except Exception as e:
                raise kopf.TemporaryError(
                    f"Milvus unreachable: {type(e).__name__}: {e}", delay=memo.config.retry_delay
                ) from None
        return memo.kb


def _serving_base_model(memo: kopf.Memo) -> str:
    from adept.models import canonical_model_id

    return canonical_model_id(memo.platform.model)


def _fail(patch: kopf.Patch, status: dict, meta: dict, reason: str, message: str) -> kopf.PermanentError:
    patch.status.update(
        R.build_phase_status(
            "failed",
            reason,
            message,
            generation=meta.get("generation"),
            old_conditions=status.get("conditions"),
        )
    )
    return kopf.PermanentError(message)


def _progress(patch: kopf.Patch, status: dict, meta: dict, reason: str, message: str) -> None:
    patch.status.update(
        R.build_phase_status(
            "progressing",
            reason,
            message,
            generation=meta.get("generation"),
            old_conditions=status.get("conditions"),
        )
    )


@contextlib.contextmanager
def _outcomes(patch: kopf.Patch, status: dict, meta: dict, memo: kopf.Memo) -> Iterator[None]:
    """Map Adept errors to kopf: bad input -> Failed + PermanentError, outages -> TemporaryError."""
    try:
        yield
    except (kopf.PermanentError, kopf.TemporaryError):
        raise
    except (Unavailable, StorageError, ConnectionError, TimeoutError) as e:
        _progress(patch, status, meta, "Retrying", f"{type(e).__name__}: {e}")
        raise kopf.TemporaryError(str(e), delay=memo.config.retry_delay) from None
    except (InvalidRequest, Conflict, NotFound) as e:
        raise _fail(patch, status, meta, "InvalidSpec", e.message) from None
    except AdeptError as e:
        raise kopf.TemporaryError(e.message, delay=memo.config.retry_delay) from None


def _spec(kind: str, spec: Any, patch: kopf.Patch, status: dict, meta: dict) -> Any:
    try:
        return parse_spec(kind, dict(spec))
    except AdeptError as e:
        raise _fail(patch, status, meta, "InvalidSpec", e.message) from None


def _require_tenant(
    memo: kopf.Memo, namespace: str, tenant: str, patch: Any, status: dict, meta: dict
) -> dict:
    """The Tenant resource ``tenant``; waits (TemporaryError) while it does not exist or is being deleted."""
    obj = memo.kube.get(namespace, "tenants", tenant)
    if obj is None or obj["metadata"].get("deletionTimestamp"):
        why = "does not exist" if obj is None else "is being deleted"
        _progress(
            patch, status, meta, "WaitingForTenant", f"Tenant {tenant!r} {why} in namespace {namespace}"
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
    """Issue the API key Secret once, rotate it when spec.keyRotation changes, report Ready."""
    status, meta = dict(status), dict(meta)
    parsed = _spec("Tenant", spec, patch, status, meta)
    with _outcomes(patch, status, meta, memo):
        _valid_tenant_name(name)
        kube: Kube = memo.kube
        key_secret = kube.get_secret(namespace, R.key_secret_name(name))
        hash_secret = kube.get_secret(namespace, R.hash_secret_name(name))
        wants_rotation = parsed.key_rotation is not None and status.get("keyRotation") != parsed.key_rotation
        # secretName in status: we reconciled before, so a new keyRotation value is a request, not the initial one.
        rotate = key_secret is not None and wants_rotation and status.get("secretName") is not None
        issued_at = status.get("keyRotatedAt")
        if key_secret is None or rotate:
            api_key = new_api_key()  # never logged: it only goes into the Secret
            issued_at = R.now_iso()
            owner = {"apiVersion": body.get("apiVersion"), "kind": "Tenant", "metadata": dict(meta)}
            new_key, new_hash = R.build_key_secrets(
                name, api_key, namespace=namespace, owner=owner, now=issued_at
            )
            for old, new in ((key_secret, new_key), (hash_secret, new_hash)):
                if old is None:
                    kube.create_secret(new)
                else:
                    kube.patch_secret(new)
            key_secret = new_key
        elif hash_secret is None:
            # The key survives, its hash was deleted: rebuild it so gateways can authenticate again.
            api_key = R.decode_secret_value(key_secret, "api-key") or ""
            kube.create_secret(R.build_key_secrets(name, api_key, namespace=namespace)[1])
        prefix = (key_secret["metadata"].get("annotations") or {}).get("adept.dev/key-prefix")
        patch.status.update(
            R.build_phase_status(
                "ready",
                "KeyRotated" if rotate else "Ready",
                f"tenant {name} is active; its API key is in Secret {R.key_secret_name(name)} (key `api-key`)",
                generation=meta.get("generation"),
                old_conditions=status.get("conditions"),
            )
        )
        patch.status.update(
            secretName=R.key_secret_name(name),
            keyPrefix=prefix,
            keyRotation=parsed.key_rotation,
            keyRotatedAt=issued_at,
        )


def _valid_tenant_name(name: str) -> None:
    from adept.config.tenant import check_tenant_name

    try:
        check_tenant_name(name)
    except ValueError as e:
        raise InvalidRequest(f"metadata.name: {e}") from None


@kopf.on.delete(GROUP, VERSION, "tenants")
def delete_tenant(name: str, namespace: str, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    """Delete the tenant's resources, documents, adapters and Secrets; wait until all are gone."""
    kube: Kube = memo.kube
    try:
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
        # Also whatever was created through the API rather than by resources.
        _knowledge_base(memo).delete_tenant(name)
        _registry(memo).delete_tenant(name)
        for secret in (R.key_secret_name(name), R.hash_secret_name(name)):
            kube.delete_secret(namespace, secret)
    except (Unavailable, StorageError) as e:
        raise kopf.TemporaryError(str(e), delay=memo.config.retry_delay) from None
    except Exception as e:
        if isinstance(e, kopf.TemporaryError | kopf.PermanentError):
            raise
        raise kopf.TemporaryError(
            f"cleanup failed: {type(e).__name__}: {e}", delay=memo.config.retry_delay
        ) from None
    logger.info("tenant %s deleted with its documents, adapters and key", name)


# --- KnowledgeBase ---------------------------------------------------------------------------------
@kopf.on.resume(GROUP, VERSION, "knowledgebases")
@kopf.on.create(GROUP, VERSION, "knowledgebases")
@kopf.on.update(GROUP, VERSION, "knowledgebases", field="spec")
def sync_knowledge_base(
    name: str, namespace: str, spec: Any, status: Any, meta: Any, patch: kopf.Patch, memo: kopf.Memo, **_: Any
) -> None:
    """Ingest the sources into the tenant's partition; report documents, chunks and skipped files."""
    status, meta = dict(status), dict(meta)
    parsed = _spec("KnowledgeBase", spec, patch, status, meta)
    with _outcomes(patch, status, meta, memo):
        tenant = _require_tenant(memo, namespace, parsed.tenant, patch, status, meta)
        quotas = (tenant.get("spec") or {}).get("quotas") or {}
        kb = _knowledge_base(memo)
        try:
            result = kb_sync.sync(
                kb,
                parsed.tenant,
                name,
                parsed,
                shared_dir=memo.config.shared_dir,
                max_documents=int(quotas.get("max_documents", 0) or 0),
            )
        except AdeptError:
            raise
        except Exception as e:  # pymilvus raises its own exception types when the server is away
            raise Unavailable(f"ingest failed: {type(e).__name__}: {e}") from None
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
    try:
        removed = kb_sync.remove(_knowledge_base(memo), tenant, name)
    except kopf.TemporaryError:
        raise
    except Exception as e:
        raise kopf.TemporaryError(
            f"cannot delete documents: {type(e).__name__}: {e}", delay=memo.config.retry_delay
        ) from None
    logger.info("knowledge base %s: removed %d documents of tenant %s", name, removed, tenant)


# --- FineTuneJob -----------------------------------------------------------------------------------
def _ray(memo: kopf.Memo, address: str | None) -> Any:
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address or memo.config.ray_address)
    except Exception as e:  # ConnectionError, or RuntimeError when the dashboard does not answer
        raise Unavailable(f"Ray at {address or memo.config.ray_address} unreachable: {e}") from None


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
    submission_id = R.build_submission_id(uid or f"{namespace}/{name}", generation)
    if status.get("jobId") == submission_id:
        return  # this generation is already submitted (operator restart, resume)
    with _outcomes(patch, status, meta, memo):
        job = parsed.job_config(adapter_store_uri=memo.platform.resolved_adapter_store)
        if job.resolved_adapter_store != memo.platform.resolved_adapter_store:
            raise InvalidRequest(
                f"config.output.adapter_store_uri {job.resolved_adapter_store!r} is not this platform's registry "
                f"{memo.platform.resolved_adapter_store!r}; serving would never see the adapter"
            )
        _check_base_model(memo, job.base_model)
        _check_adapter_owner(memo, namespace, parsed.tenant, parsed.adapter)
        _require_tenant(memo, namespace, parsed.tenant, patch, status, meta)
        client = _ray(memo, parsed.ray_address)
        old = status.get("jobId")
        if old and status.get("state") not in R.TERMINAL_STATES:
            with contextlib.suppress(Exception):
                client.stop_job(old)  # the spec changed: the previous generation's run is obsolete
        with tempfile.TemporaryDirectory(prefix="adept-ftj-") as tmp:
            Path(tmp, "finetune.yaml").write_text(
                yaml.safe_dump(job.model_dump(mode="json"), sort_keys=False)
            )
            kwargs = R.build_job_submission(
                name=name,
                namespace=namespace,
                uid=uid or f"{namespace}/{name}",
                generation=generation,
                job_config=job.model_dump(mode="json"),
                config_dir=tmp,
                env=memo.config.job_env,
                entrypoint=memo.config.job_entrypoint,
            )
            try:
                client.submit_job(**kwargs)
                logger.info("submitted Ray job %s", submission_id)
            except Exception as e:
                if "already exists" not in str(e):
                    raise Unavailable(f"Ray job submission failed: {type(e).__name__}: {e}") from None
                logger.info(
                    "Ray job %s was already submitted (operator restarted mid-submit): adopting it",
                    submission_id,
                )
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


def _check_base_model(memo: kopf.Memo, base_model: str) -> None:
    from adept.models import canonical_model_id

    allowed = {_serving_base_model(memo), *(canonical_model_id(m) for m in memo.config.base_models)}
    if canonical_model_id(base_model) not in allowed:
        raise InvalidRequest(
            f"unknown base model {base_model!r}: this platform serves {sorted(allowed)}; an adapter for another "
            "base model could never be served"
        )


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
    except Unavailable as e:
        _progress(patch, status, meta, "RayUnreachable", e.message)
        return  # the timer polls again; the job keeps running without us
    except Exception as e:
        _progress(patch, status, meta, "RayUnreachable", f"{type(e).__name__}: {e}")
        return
    state = str(getattr(info.status, "value", info.status))
    progress = R.parse_progress(logs or "")
    message = ""
    if state == "SUCCEEDED":
        version = progress.get("adapter_version") or _latest_version(memo, spec["tenant"], spec["adapter"])
        if version is None:
            state, message = "FAILED", "the job succeeded but published no adapter version to the registry"
        else:
            progress["adapter_version"] = version
            _upsert_adapter(memo, namespace, name, spec["tenant"], spec["adapter"], version)
            message = f"adapter {spec['tenant']}/{spec['adapter']}@{version} published"
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


def _latest_version(memo: kopf.Memo, tenant: str, adapter: str) -> str | None:
    versions = _registry(memo).versions(tenant, adapter)
    return versions[-1] if versions else None


def _upsert_adapter(
    memo: kopf.Memo, namespace: str, job: str, tenant: str, adapter: str, version: str
) -> None:
    body = R.build_adapter_object(
        tenant=tenant, adapter=adapter, version=version, namespace=namespace, finetunejob=job
    )
    existing = memo.kube.get(namespace, "adapters", body["metadata"]["name"])
    if existing is None:
        try:
            memo.kube.create(namespace, "adapters", body)
            return
        except Conflict:
            pass
    memo.kube.patch(namespace, "adapters", body["metadata"]["name"], {"spec": {"version": version}})


@kopf.on.delete(GROUP, VERSION, "finetunejobs", retries=10)
def delete_finetune_job(spec: Any, status: Any, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    """Stop the Ray job if it still runs (after 10 failed tries the resource is released anyway)."""
    job_id = (status or {}).get("jobId")
    if not job_id or (status or {}).get("state") in R.TERMINAL_STATES:
        return
    try:
        _ray(memo, (spec or {}).get("rayAddress")).stop_job(job_id)
    except Unavailable as e:
        raise kopf.TemporaryError(e.message, delay=memo.config.retry_delay) from None
    except Exception as e:
        if "does not exist" not in str(e):
            raise kopf.TemporaryError(
                f"cannot stop Ray job {job_id}: {e}", delay=memo.config.retry_delay
            ) from None
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
    logger: Any,
    **_: Any,
) -> None:
    """Publish ``source`` once, pin ``activeVersion``, check the base model; report what serving uses."""
    status, meta = dict(status), dict(meta)
    parsed = _spec("Adapter", spec, patch, status, meta)
    with _outcomes(patch, status, meta, memo):
        _require_tenant(memo, namespace, parsed.tenant, patch, status, meta)
        registry = _registry(memo)
        serving = _serving_base_model(memo)
        if parsed.source and status.get("publishedSource") != parsed.source:
            _publish_source(memo, registry, parsed, serving)
            patch.status["publishedSource"] = parsed.source
        versions = registry.versions(parsed.tenant, parsed.name)
        wanted = parsed.active_version or parsed.version
        if not versions or (wanted and wanted not in versions):
            what = f"{parsed.tenant}/{parsed.name}" + (f"@{wanted}" if wanted else "")
            _progress(patch, status, meta, "WaitingForVersion", f"adapter {what} is not in the registry yet")
            raise kopf.TemporaryError(f"{what} not in registry", delay=memo.config.retry_delay) from None
        registry.set_active(parsed.tenant, parsed.name, parsed.active_version)
        active = registry.resolve(parsed.tenant, parsed.name)
        from adept.models import canonical_model_id

        base = canonical_model_id(parsed.base_model or active.manifest.base_model)
        if base != serving:
            raise InvalidRequest(
                f"unknown base model {base!r} for adapter {active.id}: serving runs {serving!r}"
            )
        previous = status.get("activeVersion")
        if previous and previous != active.version:
            _unload(memo, f"{parsed.tenant}/{parsed.name}@{previous}", logger)
        patch.status.update(
            R.build_phase_status(
                "ready",
                "Active",
                f"{active.id} is active",
                generation=meta.get("generation"),
                old_conditions=status.get("conditions"),
            )
        )
        patch.status.update(
            versions=versions, activeVersion=active.version, storageUri=active.uri, baseModel=base
        )


def _publish_source(memo: kopf.Memo, registry: Any, parsed: Any, serving: str) -> None:
    import json

    src = parsed.source
    if "://" in src and not src.startswith("file://"):
        import fsspec

        tmp = tempfile.mkdtemp(prefix="adept-adapter-")
        fs, path = fsspec.core.url_to_fs(src)
        fs.get(path.rstrip("/") + "/", tmp, recursive=True)
        local = Path(tmp)
    else:
        local = kb_sync.resolve_path(memo.config.shared_dir, src.removeprefix("file://"))
    manifest_file = local / "manifest.json"
    manifest = json.loads(manifest_file.read_text()) if manifest_file.is_file() else {}
    if not manifest.get("base_model"):
        cfg = local / "adapter_config.json"
        manifest["base_model"] = (
            parsed.base_model
            or (json.loads(cfg.read_text()).get("base_model_name_or_path") if cfg.is_file() else None)
            or serving
        )
    manifest.update(tenant=parsed.tenant, name=parsed.name)
    manifest.pop("version", None)
    registry.publish(parsed.tenant, parsed.name, local, manifest, expected_base_model=serving)


def _unload(memo: kopf.Memo, adapter_id: str, logger: Any) -> None:
    """Ask the gateway to drop an adapter from its replicas (best effort; LRU eviction covers misses)."""
    url, key = memo.config.gateway_url, memo.config.gateway_admin_key
    if not url:
        return
    import httpx

    try:
        r = httpx.post(
            url.rstrip("/") + "/admin/adapters/unload",
            json={"model": adapter_id},
            headers={"Authorization": f"Bearer {key}"} if key else {},
            timeout=10,
        )
        if r.status_code >= 400:
            logger.warning("gateway refused to unload %s: HTTP %s", adapter_id, r.status_code)
    except httpx.HTTPError as e:
        logger.warning("gateway unreachable to unload %s: %s", adapter_id, type(e).__name__)


@kopf.on.delete(GROUP, VERSION, "adapters")
def delete_adapter(spec: Any, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    """Remove the adapter (all versions) from the registry and from the serving replicas."""
    tenant, name = (spec or {}).get("tenant"), (spec or {}).get("name")
    if not tenant or not name:
        return
    registry = _registry(memo)
    try:
        # Exact ids, listed before the delete: afterwards the gateway could not expand a bare name.
        loaded = [f"{tenant}/{name}@{v}" for v in registry.versions(tenant, name)]
        registry.delete(tenant, name)
    except (NotFound, InvalidRequest):
        loaded = []
    except (StorageError, OSError) as e:
        raise kopf.TemporaryError(
            f"cannot delete {tenant}/{name}: {e}", delay=memo.config.retry_delay
        ) from None
    for adapter_id in loaded:
        _unload(memo, adapter_id, logger)
