"""Files and fine-tuning jobs for tenants: the logic between the OpenAI API and the platform's stores.

No FastAPI here. Every call acts for one tenant and sees only that tenant's files and jobs;
anything else is "not found" in the same words as something absent. Creating a job checks
what can be checked at once — the base model, the files, the tenant's job quotas (429) and its
``max_adapters`` (the job will publish a new model) — then stores the job, with the training
config it will run, as ``validating_files``; the embedded runner or, in cluster mode, the
operator takes it from there.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any, Protocol

from adept.config.finetuning import FineTuningConfig
from adept.config.training import FineTuneJobConfig
from adept.errors import InvalidRequest, NotFound, PermissionDenied, RateLimited
from adept.finetuning.files import FINE_TUNE, FileRecord, FileStore, file_not_found
from adept.finetuning.jobs import (
    FINE_TUNED_PREFIX,
    AdeptOptions,
    Hyperparameters,
    JobRecord,
    check_suffix,
    fine_tuned_model_name,
    job_checkpoints,
    job_events,
    new_job_id,
    now,
    page_after,
)
from adept.finetuning.store import JobStore
from adept.placement import fitted_job_workers
from adept.platform import Platform
from adept.tenancy import Tenant
from services.gateway.chat import ModelCatalog
from services.gateway.finetuning_protocol import (
    AdeptMethodWire,
    CheckpointMetrics,
    FileDeleted,
    FileList,
    FileObject,
    FineTuningJob,
    FineTuningJobCheckpoint,
    FineTuningJobCheckpointList,
    FineTuningJobCreateRequest,
    FineTuningJobEvent,
    FineTuningJobEventList,
    FineTuningJobList,
    HyperparametersRequest,
    HyperparametersWire,
    JobErrorWire,
    MethodWire,
    ModelDeleted,
    SupervisedWire,
)

DAY_S = 86_400


class TrainingUsage(Protocol):
    """What the job quotas count: a tenant's jobs. The job store answers it (a shared counter could too)."""

    def list(self, tenant: str) -> Sequence[JobRecord]: ...


class JobQuotas:
    """``max_concurrent_finetune_jobs`` and ``max_trained_tokens_per_day``, counted from the jobs themselves.

    Both are read from the job store, which every gateway replica shares (SQLite file, or the
    cluster's ``FineTuneJob`` resources): no per-replica counter to drift.
    """

    def __init__(self, usage: TrainingUsage, *, clock: Any = now) -> None:
        self.usage = usage
        self.clock = clock

    def used(self, tenant: str) -> tuple[int, int]:
        """(unfinished jobs, tokens trained in the last 24 hours): what the two quotas limit."""
        jobs = self.usage.list(tenant)
        return sum(j.active for j in jobs), sum(j.tokens_trained() for j in self._in_window(jobs))

    def _in_window(self, jobs: Sequence[JobRecord]) -> list[JobRecord]:
        t = self.clock()
        return [j for j in jobs if j.active or (j.finished_at or 0) > t - DAY_S]

    def admit(self, tenant: Tenant) -> None:
        """Raise ``RateLimited`` (429 with ``Retry-After``) when the tenant may not start another job."""
        q = tenant.quotas
        jobs = self.usage.list(tenant.name)
        active = [j for j in jobs if j.active]
        if q.max_concurrent_finetune_jobs and len(active) >= q.max_concurrent_finetune_jobs:
            raise RateLimited(
                f"tenant {tenant.name!r} already has {len(active)} unfinished fine-tuning jobs, its "
                f"max_concurrent_finetune_jobs quota; wait for one to finish or cancel one",
                retry_after=60,
                code="concurrent_jobs_limit_exceeded",
            )
        limit = q.max_trained_tokens_per_day
        if not limit:
            return
        t = self.clock()
        counted = self._in_window(jobs)
        used = sum(j.tokens_trained() for j in counted)
        if used >= limit:
            raise RateLimited(
                f"tenant {tenant.name!r} trained on {used} tokens in the last 24 hours, its "
                f"max_trained_tokens_per_day quota of {limit}",
                retry_after=self._retry_after(counted, used, limit, t),
                code="trained_tokens_limit_exceeded",
            )

    @staticmethod
    def _retry_after(jobs: list[JobRecord], used: int, limit: int, t: int) -> float:
        """Seconds until enough finished jobs leave the 24-hour window."""
        for j in sorted((j for j in jobs if j.finished_at), key=lambda j: j.finished_at or 0):
            used -= j.tokens_trained()
            if used < limit:
                return max(1, (j.finished_at or t) + DAY_S - t)
        return DAY_S


def file_wire(r: FileRecord) -> FileObject:
    return FileObject(
        id=r.id,
        bytes=r.bytes,
        created_at=r.created_at,
        filename=r.filename,
        purpose=r.purpose,  # type: ignore[arg-type]
    )


def job_wire(r: JobRecord) -> FineTuningJob:
    hp = HyperparametersWire(**r.hyperparameters.model_dump())
    return FineTuningJob(
        id=r.id,
        created_at=r.created_at,
        error=JobErrorWire(**r.error.model_dump()) if r.error else None,
        fine_tuned_model=r.fine_tuned_model,
        finished_at=r.finished_at,
        hyperparameters=hp,
        model=r.model,
        organization_id=r.tenant,
        seed=r.seed,
        status=r.status,
        trained_tokens=r.trained_tokens,
        training_file=r.training_file,
        validation_file=r.validation_file,
        metadata=r.metadata,
        method=MethodWire(
            supervised=SupervisedWire(hyperparameters=hp), adept=AdeptMethodWire(**r.options.model_dump())
        ),
        suffix=r.suffix,
    )


class FineTuningService:
    """The tenant-facing operations on files and fine-tuning jobs.

    Args:
        files: Where uploads live.
        jobs: Where job records live (SQLite or ``FineTuneJob`` resources).
        catalog: Resolves ``model`` (only the served base model can be fine-tuned).
        platform: The kernel ``Platform`` (``max_adapters``: a job will publish a new model).
        settings: Defaults and limits of jobs.
    """

    def __init__(
        self,
        files: FileStore,
        jobs: JobStore,
        catalog: ModelCatalog,
        platform: Platform,
        settings: FineTuningConfig,
    ) -> None:
        self.files = files
        self.jobs = jobs
        self.catalog = catalog
        self.platform = platform
        self.settings = settings
        self.quotas = JobQuotas(jobs)
        self._create_locks: dict[str, asyncio.Lock] = {}

    async def usage(self, tenant: Tenant) -> dict[str, dict[str, int]]:
        """Use against the fine-tuning quotas (``limit`` 0 = unlimited), for ``/v1/usage``."""
        files, stored = await asyncio.to_thread(self.files.usage, tenant.name)
        jobs, tokens = await asyncio.to_thread(self.quotas.used, tenant.name)
        q = tenant.quotas
        return {
            "files": {"used": files, "limit": q.max_files},
            "file_storage_bytes": {"used": stored, "limit": q.max_file_storage_bytes},
            "finetune_jobs": {"used": jobs, "limit": q.max_concurrent_finetune_jobs},
            "trained_tokens_per_day": {"used": tokens, "limit": q.max_trained_tokens_per_day},
        }

    # -- files -------------------------------------------------------------------------------
    async def upload(self, tenant: Tenant, filename: str | None, purpose: str, data: bytes) -> FileObject:
        record = await asyncio.to_thread(
            self.files.create, tenant.name, filename, purpose, data, quotas=tenant.quotas
        )
        return file_wire(record)

    async def list_files(
        self, tenant: Tenant, *, after: str | None, limit: int, order: str, purpose: str | None
    ) -> FileList:
        records = await asyncio.to_thread(self.files.list, tenant.name, purpose)
        if order == "desc":
            records.reverse()
        page, more = page_after(records, after, limit, "file")
        data = [file_wire(r) for r in page]
        return FileList(
            data=data,
            has_more=more,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
        )

    async def get_file(self, tenant: Tenant, file_id: str) -> FileObject:
        return file_wire(await asyncio.to_thread(self.files.get, tenant.name, file_id))

    async def file_content(self, tenant: Tenant, file_id: str) -> tuple[FileRecord, bytes]:
        record = await asyncio.to_thread(self.files.get, tenant.name, file_id)
        return record, await asyncio.to_thread(self.files.content, tenant.name, file_id)

    async def delete_file(self, tenant: Tenant, file_id: str) -> FileDeleted:
        record = await asyncio.to_thread(self.files.delete, tenant.name, file_id)
        return FileDeleted(id=record.id)

    # -- jobs --------------------------------------------------------------------------------
    async def create_job(self, tenant: Tenant, req: FineTuningJobCreateRequest) -> FineTuningJob:
        training = await self._file(tenant, req.training_file, "training_file")
        validation = (
            await self._file(tenant, req.validation_file, "validation_file") if req.validation_file else None
        )
        base = self._base_model(tenant, req.model)
        suffix = check_suffix(req.suffix)
        hp, options = self._resolve(req, training)
        job_id = new_job_id()
        adapter = fine_tuned_model_name(job_id, suffix)
        seed = req.seed if req.seed is not None else random.randrange(2**31)
        config = self._training_config(tenant.name, adapter, job_id, hp, options, seed, training, validation)
        record = JobRecord(
            id=job_id,
            tenant=tenant.name,
            created_at=now(),
            model=base,
            training_file=training.id,
            validation_file=validation.id if validation else None,
            suffix=suffix,
            seed=seed,
            hyperparameters=hp,
            options=options,
            metadata=req.metadata,
            adapter=adapter,
            config=config,
        )
        lock = self._create_locks.setdefault(tenant.name, asyncio.Lock())
        async with lock:  # quota check and create are one step for this process
            await asyncio.to_thread(self.quotas.admit, tenant)
            # The job will publish a new model: refuse now what publishing would refuse in an hour.
            await self.platform.check_publishable(tenant.name, adapter, base)
            await asyncio.to_thread(self.jobs.create, record)
        return job_wire(record)

    def _base_model(self, tenant: Tenant, model: str) -> str:
        resolved = self.catalog.resolve(tenant.name, model)  # NotFound (model_not_found) for others
        if resolved.model_id:
            raise InvalidRequest(
                f"{model!r} is a fine-tuned model; fine-tune the base model {self.catalog.base_model_id!r} "
                "with all your training data instead",
                param="model",
            )
        return self.catalog.base_model_id

    async def _file(self, tenant: Tenant, file_id: str, param: str) -> FileRecord:
        try:
            record = await asyncio.to_thread(self.files.get, tenant.name, file_id)
        except NotFound:
            err = file_not_found(file_id)
            err.param = param
            raise err from None
        if record.purpose != FINE_TUNE:
            raise InvalidRequest(
                f"file {file_id} has purpose {record.purpose!r}; upload training data with purpose {FINE_TUNE!r}",
                param=param,
            )
        return record

    def _resolve(
        self, req: FineTuningJobCreateRequest, training: FileRecord
    ) -> tuple[Hyperparameters, AdeptOptions]:
        s = self.settings
        method = req.method
        if req.integrations:
            raise InvalidRequest("integrations are not supported", param="integrations")
        if method is not None and (method.type != "supervised" or method.dpo or method.reinforcement):
            raise InvalidRequest(
                f"method {method.type!r} is not supported: Adept fine-tunes with supervised LoRA/QLoRA",
                param="method.type",
            )
        nested = method.supervised.hyperparameters if method and method.supervised else None
        if req.hyperparameters is not None and nested is not None:
            raise InvalidRequest(
                "give hyperparameters once: in method.supervised.hyperparameters (or the deprecated top-level "
                "field), not both",
                param="hyperparameters",
            )
        asked = nested or req.hyperparameters or HyperparametersRequest()
        epochs = s.default_n_epochs if asked.n_epochs in (None, "auto") else int(asked.n_epochs)
        if epochs > s.max_n_epochs:
            raise InvalidRequest(
                f"n_epochs {epochs} exceeds this platform's limit of {s.max_n_epochs}", param="n_epochs"
            )
        # "auto": about one optimizer step per 32 examples, between 1 and 8 sequences.
        batch = (
            max(1, min(8, training.examples // 32))
            if asked.batch_size in (None, "auto")
            else int(asked.batch_size)
        )
        if batch > s.max_batch_size:
            raise InvalidRequest(
                f"batch_size {batch} exceeds this platform's limit of {s.max_batch_size}", param="batch_size"
            )
        lr = (
            1.0 if asked.learning_rate_multiplier in (None, "auto") else float(asked.learning_rate_multiplier)
        )
        if s.base_learning_rate * lr > 1.0:
            raise InvalidRequest(
                f"learning_rate_multiplier {lr} makes the learning rate exceed 1.0",
                param="learning_rate_multiplier",
            )
        ext = method.adept if method and method.adept else None
        rank = (ext.lora_rank if ext else None) or s.default_lora_rank
        if rank > s.max_lora_rank:
            raise InvalidRequest(
                f"lora_rank {rank} exceeds this platform's limit of {s.max_lora_rank}",
                param="method.adept.lora_rank",
            )
        seq = (ext.max_seq_length if ext else None) or s.default_max_seq_length
        if seq > s.max_seq_length_limit:
            raise InvalidRequest(
                f"max_seq_length {seq} exceeds this platform's limit of {s.max_seq_length_limit}",
                param="method.adept.max_seq_length",
            )
        qlora = bool(ext and ext.qlora)
        if qlora and not s.allow_qlora:
            raise InvalidRequest("QLoRA is not enabled on this platform", param="method.adept.qlora")
        alpha = (ext.lora_alpha if ext else None) or 2.0 * rank
        return (
            Hyperparameters(n_epochs=epochs, batch_size=batch, learning_rate_multiplier=lr),
            AdeptOptions(lora_rank=rank, lora_alpha=alpha, qlora=qlora, max_seq_length=seq),
        )

    def _training_config(
        self,
        tenant: str,
        adapter: str,
        job_id: str,
        hp: Hyperparameters,
        options: AdeptOptions,
        seed: int,
        training: FileRecord,
        validation: FileRecord | None,
    ) -> dict[str, Any]:
        """The ``python -m training.finetune`` config the job runs (base model, stores: the platform's)."""
        s = self.settings
        job = FineTuneJobConfig.model_validate(
            {
                "tenant": tenant,
                "adapter": adapter,
                "method": "qlora" if options.qlora else "lora",
                "description": f"fine-tuning job {job_id}",
                "lora": {"rank": options.lora_rank, "alpha": options.lora_alpha},
                "data": {
                    "path": self.files.location(training),
                    "validation_path": self.files.location(validation) if validation else None,
                    "validation_split": 0.0,  # OpenAI: validation metrics only with a validation file
                    "max_seq_length": options.max_seq_length,
                },
                "train": {
                    "epochs": hp.n_epochs,
                    "batch_size": hp.batch_size,
                    "learning_rate": s.base_learning_rate * hp.learning_rate_multiplier,
                    "seed": seed,
                    "log_every_steps": 1,  # every step is an event (and a point of the loss curve)
                    "eval_every_steps": s.eval_every_steps if validation else 0,
                },
                "workers": fitted_job_workers(s, self.platform.config.training_shape),  # adept/placement.py
                "checkpoint": {"every_steps": s.checkpoint_every_steps},
                "output": {"run_name": job_id},
            }
        )
        return job.model_dump(mode="json", exclude_none=True)

    async def delete_model(self, tenant: Tenant, model: str) -> ModelDeleted:
        """Delete a model the tenant's fine-tuning jobs produced (all its versions, or the one named)."""
        resolved = self.catalog.resolve(tenant.name, model)  # NotFound, worded as absent, for others
        if not resolved.model_id:
            raise PermissionDenied("the base model cannot be deleted", param="model")
        name, _, version = model.rsplit("/", 1)[-1].partition("@")
        if not name.startswith(FINE_TUNED_PREFIX):
            raise PermissionDenied(
                f"{name!r} was not made by a fine-tuning job; only those can be deleted through the API "
                "(the platform team manages the others)",
                param="model",
            )
        await self.platform.delete_adapter(tenant.name, name, version or None)
        return ModelDeleted(id=model)

    async def list_jobs(self, tenant: Tenant, *, after: str | None, limit: int) -> FineTuningJobList:
        records = await asyncio.to_thread(self.jobs.list, tenant.name)
        page, more = page_after(records, after, limit, "fine-tuning job")
        return FineTuningJobList(data=[job_wire(r) for r in page], has_more=more)

    async def get_job(self, tenant: Tenant, job_id: str) -> FineTuningJob:
        return job_wire(await asyncio.to_thread(self.jobs.get, tenant.name, job_id))

    async def cancel_job(self, tenant: Tenant, job_id: str) -> FineTuningJob:
        return job_wire(await asyncio.to_thread(self.jobs.cancel, tenant.name, job_id))

    async def list_events(
        self, tenant: Tenant, job_id: str, *, after: str | None, limit: int
    ) -> FineTuningJobEventList:
        record = await asyncio.to_thread(self.jobs.get, tenant.name, job_id)
        page, more = page_after(job_events(record), after, limit, "event")
        data = [
            FineTuningJobEvent(
                id=e.id, created_at=e.created_at, level=e.level, message=e.message, type=e.type, data=e.data
            )
            for e in page
        ]
        return FineTuningJobEventList(data=data, has_more=more)

    async def list_checkpoints(
        self, tenant: Tenant, job_id: str, *, after: str | None, limit: int
    ) -> FineTuningJobCheckpointList:
        record = await asyncio.to_thread(self.jobs.get, tenant.name, job_id)
        page, more = page_after(job_checkpoints(record), after, limit, "checkpoint")
        data = [
            FineTuningJobCheckpoint(
                id=c.id,
                created_at=c.created_at,
                fine_tuned_model_checkpoint=c.fine_tuned_model_checkpoint,
                fine_tuning_job_id=c.fine_tuning_job_id,
                metrics=CheckpointMetrics(**c.metrics),
                step_number=c.step_number,
            )
            for c in page
        ]
        return FineTuningJobCheckpointList(
            data=data,
            has_more=more,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
        )
