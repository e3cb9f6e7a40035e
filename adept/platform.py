"""The platform's operations, each implemented once: tenants, adapters, the served model's name.

``Platform`` is built from a ``PlatformConfig`` — which picks the stores: tenants in SQLite or as
Kubernetes resources, adapters in a directory or an object store — plus what only a running
process can supply: its knowledge base (documents), its LLM replicas (loaded adapter copies)
and other per-tenant state (quota counters, jobs, files). The CLI, the admin API, the console
API, the operator and training call these methods; none of them re-implements one, so a rule
(quotas, the base-model policy, what deleting a tenant removes) holds on every path.

Methods are coroutines: the gateway awaits them on its event loop (store I/O runs in a worker
thread); the CLI, the operator and training call them with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from adept.adapters import AdapterRegistry, AdapterVersion, open_adapter_registry, parse_adapter_id
from adept.config.adapter import AdapterEvaluation, AdapterManifest, check_adapter_name
from adept.config.tenant import TenantSpec
from adept.errors import InvalidRequest, NotFound, PermissionDenied
from adept.tenancy import Tenant, TenantStore, open_tenant_store, valid_tenant_name
from adept.training_runs import (
    JOB_STATE_FILE,
    RESULT_DIR,
    RESULT_EXTRAS,
    TrainingRuns,
    find_run_version,
    local_dir,
    read_run,
)

__all__ = ["JOB_STATE_FILE", "Platform", "TenantDeletion", "TrainingRuns"]

if TYPE_CHECKING:
    from adept.config.platform import PlatformConfig

log = logging.getLogger(__name__)


class TenantDocuments(Protocol):
    """The knowledge base, as far as tenant deletion needs it."""

    async def delete_tenant(self, tenant: str) -> Any: ...


class AdapterReplicas(Protocol):
    """The LLM replicas, as far as adapter lifecycle needs them: drop a loaded copy."""

    async def unload(self, adapter_id: str) -> Any: ...


class TenantState(Protocol):
    """Any other per-tenant state (jobs, uploaded files, quota counters): dropped with the tenant."""

    async def purge_tenant(self, tenant: str) -> Any: ...


# A check of an adapter's PEFT config (``adapter_config.json`` as a dict) that raises
# InvalidRequest when the serving engine could not load it (rank limits, unsupported variants).
AdapterCheck = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class TenantDeletion:
    """What deleting a tenant removed."""

    name: str
    adapters_deleted: int
    adapter_versions_unloaded: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "deleted": True, "adapters_deleted": self.adapters_deleted}


def manifest_from_dir(src: Path) -> dict[str, Any]:
    """Start a manifest from the directory's own ``manifest.json`` (training writes one), else from nothing.

    Identity fields (tenant, name, version) are the registry's to assign and are dropped.
    """
    path = Path(src) / "manifest.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        raise InvalidRequest(f"{path}: not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise InvalidRequest(f"{path}: expected a JSON object")
    return {k: v for k, v in data.items() if k not in ("tenant", "name", "version")}


# ``await evaluate("tenant/name@vN")`` → ``{metric: mean over the evaluation set}``.
Evaluate = Callable[[str], Awaitable[dict[str, float]]]


async def _measure(evaluate: Evaluate, model_id: str, metric: str) -> dict[str, float]:
    metrics = await evaluate(model_id)
    if metrics.get(metric) is None:
        raise InvalidRequest(
            f"the evaluation of {model_id} did not measure {metric!r} (it measured: "
            f"{', '.join(sorted(metrics)) or 'nothing'}); choose a metric the evaluation file supports"
        )
    return {k: float(v) for k, v in metrics.items() if v is not None}


def _check_adapter_name(name: str) -> str:
    try:
        return check_adapter_name(name)
    except ValueError as e:
        raise InvalidRequest(str(e), param="name") from None


class Platform:
    """Tenants and adapters of one installation.

    Args:
        config: The installation's ``PlatformConfig``.
        tenants: Tenant store; default: the one ``config.tenant_store`` names.
        registry: Adapter registry; default: ``config``'s adapter store.
        documents: The knowledge base, or None where this process has none (then deleting a
            tenant cannot remove its documents and says so).
        replicas: The LLM replicas, or None where nothing is loaded (CLI, training).
        state: Other per-tenant state, purged in this order before documents and adapters
            (jobs first, so none publishes while its tenant goes).
        adapter_checks: Extra checks every published adapter must pass, after the platform's own
            (plain LoRA of rank at most ``config.max_lora_rank``: what every serving engine loads).
    """

    def __init__(
        self,
        config: PlatformConfig,
        *,
        tenants: TenantStore | None = None,
        registry: AdapterRegistry | None = None,
        documents: TenantDocuments | None = None,
        replicas: AdapterReplicas | None = None,
        state: Sequence[TenantState] = (),
        adapter_checks: Sequence[AdapterCheck] = (),
    ) -> None:
        self.config = config
        self.tenants = tenants if tenants is not None else open_tenant_store(config)
        self.registry = registry if registry is not None else open_adapter_registry(config)
        self.documents = documents
        self.replicas = replicas
        self.state = list(state)
        self.adapter_checks = list(adapter_checks)
        self.training_runs = TrainingRuns(config.data_dir / "training")
        self._publish_locks: dict[str, asyncio.Lock] = {}

    @cached_property
    def base_model_id(self) -> str:
        """The served base model's id, as adapter manifests record it."""
        from adept.models import canonical_model_id

        return canonical_model_id(self.config.model)

    def close(self) -> None:
        self.tenants.close()

    # -- tenants -----------------------------------------------------------------------------------
    async def create_tenant(self, spec: TenantSpec) -> tuple[Tenant, str]:
        """Create a tenant; returns it with its API key (shown once, only its hash is stored)."""
        return await asyncio.to_thread(self.tenants.create, spec)

    async def get_tenant(self, name: str) -> Tenant:
        return await asyncio.to_thread(self.tenants.get, name)

    async def list_tenants(self) -> list[Tenant]:
        return await asyncio.to_thread(self.tenants.list)

    async def update_tenant(self, spec: TenantSpec) -> Tenant:
        return await asyncio.to_thread(self.tenants.update, spec)

    async def rotate_key(self, name: str) -> str:
        """A new key for ``name``; the old one stops working at once."""
        return await asyncio.to_thread(self.tenants.rotate_key, name)

    async def delete_tenant(self, name: str) -> TenantDeletion:
        """Delete a tenant and everything it owns: jobs, files, documents, adapters, loaded copies, key.

        The key goes last: a deletion that fails half-way leaves the tenant in place, so
        repeating the call finishes it, and a tenant created later with the same name
        inherits nothing.
        """
        await self.get_tenant(name)  # NotFound before touching anything
        deletion = await self.purge_tenant(name)
        await asyncio.to_thread(self.tenants.delete, name)
        log.info("deleted tenant %s (%d adapters)", name, deletion.adapters_deleted)
        return deletion

    async def purge_tenant(self, name: str) -> TenantDeletion:
        """Remove everything ``name`` owns but its record (idempotent).

        ``delete_tenant`` uses it; so does the operator, whose ``Tenant`` resource is already
        on its way out when its finalizer runs.
        """
        name = valid_tenant_name(name)
        if self.documents is None:
            raise InvalidRequest(
                f"cannot delete tenant {name!r} here: this process has no access to the knowledge base; "
                "delete it through the running platform (admin API or `adept tenant delete` against it)"
            )
        for holder in [*self.state, self.training_runs]:
            await holder.purge_tenant(name)
        await self.documents.delete_tenant(name)
        versions = await asyncio.to_thread(self.registry.list, name)
        await asyncio.to_thread(self.registry.delete_tenant, name)
        # After the delete: a request racing it can no longer resolve and reload an adapter.
        await self._unload([v.id for v in versions])
        return TenantDeletion(name, len({v.name for v in versions}), len(versions))

    # -- adapters ----------------------------------------------------------------------------------
    async def publish_adapter(
        self,
        tenant: str,
        name: str,
        src: str | Path,
        manifest: AdapterManifest | dict[str, Any] | None = None,
        *,
        extra_files: dict[str, str | Path] | None = None,
        description: str | None = None,
        base_model: str | None = None,
        activate: bool = False,
        inactive: bool = False,
        source: str | None = None,
    ) -> AdapterVersion:
        """Publish the PEFT adapter in ``src`` as the next version of ``tenant/name``.

        Enforced here for every caller: the tenant exists, its ``max_adapters`` quota, the
        adapter loads on the serving engine (``adapter_checks``), and it was trained on the
        base model this platform serves.

        Args:
            manifest: What is known about the adapter (base model, method, metrics); default:
                ``src/manifest.json``, else what ``adapter_config.json`` says.
            extra_files: Files published in the same atomic step (loss curve, metrics).
            description: Stored in the manifest.
            base_model: The base model it was trained on, where neither the manifest nor
                ``adapter_config.json`` records it.
            activate: Pin the new version (default: the latest version serves).
            inactive: Publish it without letting it serve: the version serving now is pinned first
                (eval-gated promotion: ``promote`` then decides whether the new one goes live).
            source: Names what is published (the operator: an Adapter resource and its source). A
                version already published from the same source is returned instead: a caller that
                repeats itself (a handler run twice, a retry after a crash) publishes once.

        Raises:
            NotFound: no such tenant. PermissionDenied: over ``max_adapters``.
            InvalidRequest: not a PEFT directory, or the engine cannot serve it.
            Conflict: trained on another base model.
        """
        record = await self.get_tenant(tenant)
        name = _check_adapter_name(name)
        src = Path(src).expanduser()
        if not src.is_dir():
            raise InvalidRequest(f"adapter directory not found: {src}", param="path")
        data = manifest_from_dir(src) if manifest is None else manifest
        if isinstance(data, AdapterManifest):
            data = data.model_dump()
        if description:
            data = {**data, "description": description}
        if base_model and not data.get("base_model"):
            data = {**data, "base_model": base_model}
        await asyncio.to_thread(self._check_adapter, src)
        lock = self._publish_locks.setdefault(record.name, asyncio.Lock())
        if source:
            data = {**data, "source": source}
        async with lock:  # the quota check and the publish are one step for this process
            if source:
                versions = await asyncio.to_thread(self.registry.list, record.name)
                done = next((v for v in versions if v.name == name and v.manifest.source == source), None)
                if done is not None:
                    return done
            await self._check_quota(record, name)
            if inactive and not activate:
                await self._pin_served(record.name, name)
            version = await asyncio.to_thread(
                self.registry.publish,
                record.name,
                name,
                src,
                data,
                expected_base_model=self.base_model_id,
                extra_files=extra_files,
            )
        if activate:
            await self.activate_adapter(record.name, name, version.version)
        return version

    async def publish_run(
        self, run_dir: str | Path, tenant: str, name: str, *, inactive: bool = False
    ) -> AdapterVersion:
        """Publish the adapter a training run left in ``<run_dir>/result``, once per run.

        The hand-off between training and publishing (``adept.training_runs``): the job that
        trained it (one machine) or the operator when the FineTuneJob succeeds (a cluster, where
        training holds no platform credentials) calls this; every rule of ``publish_adapter``
        applies. A version already published from this run is returned, not published again.

        With ``inactive`` (a job with an evaluation file), the version serving now keeps serving
        until ``promote`` decides.

        Raises:
            NotFound: no run, or a run without a result. InvalidRequest: the run belongs to
                another tenant or adapter. And whatever ``publish_adapter`` raises.
        """
        with local_dir(str(run_dir), what="training run") as local:
            run = await asyncio.to_thread(read_run, local)
            if (run.tenant, run.adapter) != (tenant, name):
                raise InvalidRequest(
                    f"training run {run_dir} is {run.tenant}/{run.adapter}'s, not {tenant}/{name}'s"
                )
            done = await asyncio.to_thread(find_run_version, self.registry, tenant, name, run.run_id)
            if done is not None:
                return done
            result = local / RESULT_DIR
            # The state names the result only once it is complete (training writes it last).
            if run.data.get("result") != RESULT_DIR or not result.is_dir():
                raise NotFound(f"training run {run_dir} has no result yet")
            extras = {f: result / f for f in RESULT_EXTRAS if (result / f).is_file()}
            return await self.publish_adapter(tenant, name, result, extra_files=extras, inactive=inactive)

    async def check_publishable(self, tenant: str, name: str, base_model: str) -> None:
        """Would an adapter ``tenant/name`` trained on ``base_model`` be published? Raises what publishing would.

        Training calls this before it starts, so a job that could never be published fails in
        seconds rather than after hours; ``publish_adapter`` still enforces every rule at the end.
        """
        from adept.adapters import check_base_model

        record = await self.get_tenant(tenant)
        name = _check_adapter_name(name)
        check_base_model(f"{record.name}/{name}", base_model, self.base_model_id)
        await self._check_quota(record, name)

    async def _check_quota(self, record: Tenant, name: str) -> None:
        limit = record.quotas.max_adapters
        if not limit:
            return
        names = {v.name for v in await asyncio.to_thread(self.registry.list, record.name)}
        if name not in names and len(names) >= limit:
            raise PermissionDenied(
                f"tenant {record.name!r} already has {len(names)} adapters, its max_adapters quota",
                code="quota_exceeded",
            )

    def _check_adapter(self, src: Path) -> None:
        from adept.adapter_compat import ensure_adapter_compatible, serving_limits

        if not (src / "adapter_config.json").is_file():
            return  # the registry names every missing PEFT file
        try:
            peft_config = json.loads((src / "adapter_config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise InvalidRequest(f"{src}: unreadable adapter_config.json: {e}") from None
        if not isinstance(peft_config, dict):
            raise InvalidRequest(f"{src}/adapter_config.json: expected a JSON object")
        ensure_adapter_compatible(peft_config, serving_limits(self.config))
        for check in self.adapter_checks:
            check(peft_config)

    async def list_adapters(self, tenant: str) -> list[AdapterVersion]:
        """Every version of every adapter of ``tenant`` (manifests only: nothing is downloaded)."""
        await self.get_tenant(tenant)
        return await asyncio.to_thread(self.registry.list, tenant)

    async def served_versions(self, tenant: str) -> dict[str, str]:
        """``{adapter name: the version requests for it get}`` (pinned, else latest)."""
        out = {}
        for name in sorted({v.name for v in await asyncio.to_thread(self.registry.list, tenant)}):
            if (version := await self._served_version(tenant, name)) is not None:
                out[name] = version
        return out

    async def resolve_adapter(self, tenant: str, name: str, version: str | None = None) -> AdapterVersion:
        """``tenant/name[@version]``: pinned, else latest (cached; nothing is downloaded)."""
        return await asyncio.to_thread(self.registry.resolve, tenant, name, version, fetch=False)

    async def activate_adapter(self, tenant: str, name: str, version: str | None) -> AdapterVersion:
        """Pin ``version`` (None: follow the latest); the replicas drop the version that served before."""
        before = await self._served_version(tenant, name)
        await asyncio.to_thread(self.registry.set_active, tenant, name, version)
        now = await self.resolve_adapter(tenant, name)
        if before is not None and before != now.version:
            await self._unload([f"{tenant}/{name}@{before}"])
        return now

    async def _pin_served(self, tenant: str, name: str) -> None:
        """Pin whatever serves now (latest, if nothing is pinned), so a new version does not take over."""
        served = await self._served_version(tenant, name)
        if served is not None and await asyncio.to_thread(self.registry.active_version, tenant, name) is None:
            await asyncio.to_thread(self.registry.set_active, tenant, name, served)

    async def promote(
        self,
        tenant: str,
        name: str,
        version: str,
        evaluate: Evaluate,
        *,
        metric: str,
        margin: float,
        evaluation_file: str | None = None,
    ) -> AdapterEvaluation:
        """Make ``version`` live only if it measures not worse than the live version by more than ``margin``.

        Both versions are measured now, by the same ``evaluate`` (injected: the caller owns the
        evaluation set and the platform that answers it), so they are compared under the same
        conditions. The outcome (scores, the version compared against, the reason) is stored in
        the new version's manifest and returned; the job owner puts it in the job's events and
        the ``Adapter`` status. The first version of an adapter has nothing to lose against and
        goes live. A version kept inactive stays published: ``activate_adapter`` makes it live by hand.

        Args:
            evaluate: ``await evaluate("tenant/name@vN")`` → ``{metric: mean, ...}`` on the evaluation set.
            metric: The metric compared (higher is better).
            margin: How much lower than the live version's score the new one may be and still go live.

        Raises:
            NotFound: no such version. InvalidRequest: ``evaluate`` did not measure ``metric``.
        """
        await self.get_tenant(tenant)
        candidate = await self.resolve_adapter(tenant, name, version)
        served = await self._served_version(tenant, name)
        against = served if served != candidate.version else None
        ours = await _measure(evaluate, candidate.id, metric)
        theirs = await _measure(evaluate, f"{tenant}/{name}@{against}", metric) if against else None
        score, their_score = ours[metric], (theirs or {}).get(metric)
        if their_score is None and served == candidate.version and served is not None:
            others = await asyncio.to_thread(self.registry.versions, tenant, name)
            first = len(others) == 1
            promoted = True
            reason = (
                f"{candidate.id} is the first version: {metric} {score:.3f}"
                if first
                else f"{candidate.id} already serves (it was not published inactive): {metric} {score:.3f}, "
                "nothing compared"
            )
        elif their_score is None:
            promoted, reason = True, f"{candidate.id} is the first version to measure: {metric} {score:.3f}"
        elif score >= their_score - margin:
            promoted = True
            reason = (
                f"{candidate.id} went live: {metric} {score:.3f} against {their_score:.3f} for {against} "
                f"(not worse by more than the margin {margin:g})"
            )
        else:
            promoted = False
            reason = (
                f"{candidate.id} stays inactive: {metric} {score:.3f} is worse than {their_score:.3f} for "
                f"{against} by more than the margin {margin:g}; activate it by hand to serve it anyway"
            )
        record = AdapterEvaluation(
            metric=metric,
            score=score,
            metrics=ours,
            against=against,
            against_score=their_score,
            margin=margin,
            promoted=promoted,
            reason=reason,
            evaluation_file=evaluation_file,
        )
        await asyncio.to_thread(self.registry.record_evaluation, tenant, name, candidate.version, record)
        if promoted:
            await self.activate_adapter(tenant, name, candidate.version)
        log.info("%s", reason)
        return record

    async def _served_version(self, tenant: str, name: str) -> str | None:
        try:
            return (await self.resolve_adapter(tenant, name)).version
        except NotFound:
            return None

    async def delete_adapter(self, tenant: str, name: str, version: str | None = None) -> list[str]:
        """Delete every version of ``tenant/name`` (or one) and drop them from the replicas; returns their ids."""
        versions = [v for v in await asyncio.to_thread(self.registry.list, tenant) if v.name == name]
        ids = [v.id for v in versions if version in (None, v.version)]
        await asyncio.to_thread(self.registry.delete, tenant, name, version)
        # Unload after deleting: a request racing the delete can no longer resolve and reload it.
        await self._unload(ids)
        return ids

    async def unload_adapter(self, adapter_id: str) -> list[str]:
        """Drop ``tenant/name[@vN]`` from the replicas (the registry is untouched); returns the ids dropped.

        Without a version, every published version of the adapter is unloaded.
        """
        tenant, name, version = parse_adapter_id(adapter_id)
        if version:
            ids = [f"{tenant}/{name}@{version}"]
        else:
            ids = [v.id for v in await asyncio.to_thread(self.registry.list, tenant) if v.name == name]
        await self._unload(ids)
        return ids

    async def _unload(self, adapter_ids: list[str]) -> None:
        if self.replicas is not None and adapter_ids:
            await asyncio.gather(*(self.replicas.unload(a) for a in adapter_ids))
