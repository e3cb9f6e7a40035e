"""Files and fine-tuning jobs for tenants: OpenAI's wire models to and from the kernel's ``FineTuning``.

No FastAPI here, and no rule either: every validation, limit and state change is the kernel's
(``adept.finetuning.service``); this module translates requests into ``JobRequest`` and records
into OpenAI's response shapes. Every call acts for one tenant and sees only its files and jobs.
"""

from __future__ import annotations

from adept.errors import InvalidRequest
from adept.finetuning.files import FileRecord
from adept.finetuning.jobs import JobRecord, page_after
from adept.finetuning.service import FineTuning, JobRequest
from adept.tenancy import Tenant
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
        evaluation_file=r.evaluation_file,
        metadata=r.metadata,
        method=MethodWire(
            supervised=SupervisedWire(hyperparameters=hp), adept=AdeptMethodWire(**r.options.model_dump())
        ),
        suffix=r.suffix,
    )


def job_request(req: FineTuningJobCreateRequest) -> JobRequest:
    """The kernel's ``JobRequest`` for an OpenAI request body (``method`` flattened)."""
    method = req.method
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
    hp = nested or req.hyperparameters or HyperparametersRequest()
    ext = method.adept if method and method.adept else None
    return JobRequest(
        model=req.model,
        training_file=req.training_file,
        validation_file=req.validation_file,
        suffix=req.suffix,
        seed=req.seed,
        metadata=req.metadata,
        n_epochs=hp.n_epochs,
        batch_size=hp.batch_size,
        learning_rate_multiplier=hp.learning_rate_multiplier,
        lora_rank=ext.lora_rank if ext else None,
        lora_alpha=ext.lora_alpha if ext else None,
        qlora=bool(ext and ext.qlora),
        max_seq_length=ext.max_seq_length if ext else None,
        integrations=list(req.integrations or []),
        evaluation_file=req.evaluation_file,
    )


class FineTuningService:
    """The files and fine-tuning API over the kernel's ``FineTuning`` owner: wire models in and out.

    Args:
        owner: The kernel ``FineTuning`` (every rule, limit and state change lives there).
    """

    def __init__(self, owner: FineTuning) -> None:
        self.owner = owner

    async def usage(self, tenant: Tenant) -> dict[str, dict[str, int]]:
        return await self.owner.usage(tenant)

    # -- files -------------------------------------------------------------------------------
    async def upload(self, tenant: Tenant, filename: str | None, purpose: str, data: bytes) -> FileObject:
        return file_wire(await self.owner.upload_file(tenant, filename, purpose, data))

    async def list_files(
        self, tenant: Tenant, *, after: str | None, limit: int, order: str, purpose: str | None
    ) -> FileList:
        records = await self.owner.list_files(tenant, purpose)
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
        return file_wire(await self.owner.get_file(tenant, file_id))

    async def file_content(self, tenant: Tenant, file_id: str) -> tuple[FileRecord, bytes]:
        return await self.owner.file_content(tenant, file_id)

    async def delete_file(self, tenant: Tenant, file_id: str) -> FileDeleted:
        return FileDeleted(id=(await self.owner.delete_file(tenant, file_id)).id)

    async def delete_model(self, tenant: Tenant, model: str) -> ModelDeleted:
        await self.owner.delete_model(tenant, model)
        return ModelDeleted(id=model)

    # -- jobs --------------------------------------------------------------------------------
    async def create_job(self, tenant: Tenant, req: FineTuningJobCreateRequest) -> FineTuningJob:
        return job_wire(await self.owner.create(tenant, job_request(req)))

    async def list_jobs(self, tenant: Tenant, *, after: str | None, limit: int) -> FineTuningJobList:
        page, more = page_after(await self.owner.list(tenant), after, limit, "fine-tuning job")
        return FineTuningJobList(data=[job_wire(r) for r in page], has_more=more)

    async def get_job(self, tenant: Tenant, job_id: str) -> FineTuningJob:
        return job_wire(await self.owner.retrieve(tenant, job_id))

    async def cancel_job(self, tenant: Tenant, job_id: str) -> FineTuningJob:
        return job_wire(await self.owner.cancel(tenant, job_id))

    async def list_events(
        self, tenant: Tenant, job_id: str, *, after: str | None, limit: int
    ) -> FineTuningJobEventList:
        page, more = page_after(await self.owner.events(tenant, job_id), after, limit, "event")
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
        page, more = page_after(await self.owner.checkpoints(tenant, job_id), after, limit, "checkpoint")
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
