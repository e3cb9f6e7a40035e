"""``FineTuning``: the one owner of fine-tuning jobs and the files they train on.

Every entry point is a thin caller: the OpenAI routes (``services/gateway/finetuning*.py``), the
console, ``adept finetune`` and the operator's ``FineTuneJob`` reconciler. Each operation is
implemented here once:

- ``create``: every validation and limit, in one order (tenant → files → base model → suffix →
  hyper-parameters → workers (the training cluster's GPU group when the job names none) →
  ``_check_plan`` (the slot for further checks of a planned job: it places the workers and the
  driver on the training cluster's shape, ``adept.placement``) → ``max_adapters`` and base-model
  policy → the tenant's job limits, counted where the store makes them hold for every gateway
  replica: its write transaction, or a reservation on the tenant's ``Tenant`` resource); ``create_from_config`` (a FineTuneJob, ``adept finetune``) takes the
  same workers default and the same ``_check_plan``;
- ``list``, ``retrieve``, ``cancel``, ``events``, ``checkpoints``;
- the state machine's moves after create (``queue``, ``started``, ``observe``, ``finish``,
  ``requeue``), which the executors' driver (``adept.finetuning.runner``) calls with
  what an executor saw: nothing else writes a job's state.

Methods are coroutines where they touch the tenant store or the registry (the gateway awaits
them); the driver's moves are plain functions (it runs in a thread of its own).

What the owner calls, one responsibility each: ``plan`` (a request → resolved hyper-parameters and
the training config), ``limits`` (counting the job limits), ``promotion`` (eval-gated promotion of
a published version), the stores (``store``, ``kube_store``, ``files``) and the records (``jobs``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from adept.config.finetuning import FineTuningConfig
from adept.config.training import FineTuneJobConfig, WorkersSection
from adept.errors import AdeptError, InvalidRequest, NotFound, PermissionDenied
from adept.finetuning.files import (
    EVALS,
    FINE_TUNE,
    FileRecord,
    FileStore,
    file_limits,
    file_not_found,
    new_file_id,
)
from adept.finetuning.jobs import (
    FINE_TUNED_PREFIX,
    AdeptOptions,
    Hyperparameters,
    JobCheckpoint,
    JobError,
    JobEvent,
    JobRecord,
    Note,
    Resume,
    StepRecord,
    adapter_of_fine_tuned_model,
    advance,
    check_suffix,
    fine_tuned_model_name,
    job_checkpoints,
    job_events,
    new_job_id,
    now,
    openai_model_name,
)
from adept.finetuning.limits import DAY_S, check_job_limits, usage_report
from adept.finetuning.plan import (
    JobPlan,
    JobRequest,
    resolve_hyperparameters,
    starting_shape,
    training_config,
)
from adept.finetuning.promotion import (
    Evaluate,
    Evaluator,
    check_evaluation,
    promote_version,
    read_evaluation_file,
)
from adept.finetuning.store import JobStore
from adept.placement import check_job_fits, job_workers

if TYPE_CHECKING:
    from adept.config.platform import PlatformConfig
    from adept.platform import Platform
    from adept.tenancy import Tenant

log = logging.getLogger(__name__)

# Training reports dataset problems with these codes; OpenAI calls them invalid training files.
_DATASET_CODES = frozenset({"invalid_dataset", "invalid_jsonl"})


__all__ = ["DAY_S", "Evaluate", "Evaluator", "FineTuning", "JobPlan", "JobRequest", "Outcome", "apply_events"]


class ModelResolver(Protocol):
    """Resolves a ``model`` a tenant names: ``model_id`` is "" for the base model, else the adapter id."""

    def resolve(self, tenant: str, model: str) -> Any: ...


@dataclass(frozen=True)
class Outcome:
    """How a run ended, as its events say (``adept.finetuning.events``)."""

    result: dict[str, Any] | None = None  # the "result" event: the run's summary
    error: dict[str, Any] | None = None  # the "error" event: code, message, param


class FineTuning:
    """Fine-tuning jobs and files of one installation.

    Args:
        platform: The kernel ``Platform`` (tenants, registry, publishing).
        files: Where uploads live.
        jobs: Where job records live (SQLite, or ``FineTuneJob`` resources).
        settings: Defaults and limits of jobs.
        models: Resolves ``model`` names (default: the base model and the tenant's adapters, via
            the platform's registry).
        executor: Where runs go (``adept.finetuning.executors``): the driver starts them with it;
            cancel, tenant deletion and pruning stop them with it. None where this process cannot
            reach runs (a gateway on a cluster: the operator stops them).
        evaluator: Measures versions for eval-gated promotion (jobs with an ``evaluation_file``);
            injected by whoever can run the model (the tools layer). Without one, such a job's
            version is published inactive, and its events say it was not measured.
        entrypoint_num_cpus: CPUs each job's driver reserves on the training cluster, counted when a
            job is placed on its shape (``platform.config.training_shape``); default: the platform's
            ``training_entrypoint_num_cpus``, which the operator's ``RayJobs`` submits its drivers with.
    """

    def __init__(
        self,
        platform: Platform,
        files: FileStore,
        jobs: JobStore,
        settings: FineTuningConfig,
        *,
        models: ModelResolver | None = None,
        executor: Any = None,
        evaluator: Evaluator | None = None,
        entrypoint_num_cpus: float | None = None,
        clock: Any = now,
    ) -> None:
        self.platform = platform
        self.files = files
        self.jobs = jobs
        self.settings = settings
        self.models = models
        self.executor = executor
        self.evaluator = evaluator
        if entrypoint_num_cpus is None:  # the platform's one number (the operator's executor submits with it)
            entrypoint_num_cpus = platform.config.training_entrypoint_num_cpus
        self.entrypoint_num_cpus = entrypoint_num_cpus
        self.clock = clock

    # -- files -------------------------------------------------------------------------------------
    async def upload_file(
        self, tenant: Tenant, filename: str | None, purpose: str, data: bytes
    ) -> FileRecord:
        """Validate and store an upload, counted against ``max_files`` / ``max_file_storage_bytes`` once
        for every replica (the count lives in the job store, when it keeps one)."""
        admit = file_limits(tenant.name, tenant.quotas, len(data))
        ledger = getattr(self.jobs, "reserve_file", None)
        if ledger is None:  # a store without a ledger (FineTuneJob resources): the file store counts
            return await asyncio.to_thread(
                self.files.create, tenant.name, filename, purpose, data, admit=admit
            )
        file_id = new_file_id()
        checked = await asyncio.to_thread(self.files.check, filename, purpose, data)
        await asyncio.to_thread(ledger, tenant.name, file_id, len(data), admit)
        try:
            return await asyncio.to_thread(self.files.store, tenant.name, file_id, checked, data)
        except BaseException:
            await asyncio.to_thread(self.jobs.release_file, file_id, tenant.name)  # type: ignore[attr-defined]
            raise

    async def list_files(self, tenant: Tenant, purpose: str | None = None) -> list[FileRecord]:
        return await asyncio.to_thread(self.files.list, tenant.name, purpose)

    async def get_file(self, tenant: Tenant, file_id: str) -> FileRecord:
        return await asyncio.to_thread(self.files.get, tenant.name, file_id)

    async def file_content(self, tenant: Tenant | str, file_id: str) -> tuple[FileRecord, bytes]:
        record = await asyncio.to_thread(self.files.get, _name(tenant), file_id)
        return record, await asyncio.to_thread(self.files.content, _name(tenant), file_id)

    async def delete_file(self, tenant: Tenant, file_id: str) -> FileRecord:
        record = await asyncio.to_thread(self.files.delete, tenant.name, file_id)
        if hasattr(self.jobs, "release_file"):
            await asyncio.to_thread(self.jobs.release_file, file_id, tenant.name)  # type: ignore[attr-defined]
        return record

    async def usage(self, tenant: Tenant) -> dict[str, dict[str, int]]:
        """Use against the fine-tuning limits (``limit`` 0 = unlimited), for ``/v1/usage`` and the console."""
        files, stored = await asyncio.to_thread(self.files.usage, tenant.name)
        jobs = await asyncio.to_thread(self.jobs.list, tenant.name)
        return usage_report(tenant.quotas, files, stored, jobs, self.clock())

    # -- jobs: create ------------------------------------------------------------------------------
    async def create(self, tenant: Tenant | str, req: JobRequest) -> JobRecord:
        """Check everything once, then store the job ``validating_files``; the driver takes it from there.

        Raises:
            NotFound: no such tenant, file or model. InvalidRequest: a bad field (named in ``param``).
            PermissionDenied: over ``max_adapters``. RateLimited: over a job limit (named in the message).
        """
        t = tenant if not isinstance(tenant, str) else await self.platform.get_tenant(tenant)
        training = await self._file(t, req.training_file, "training_file")
        validation = (
            await self._file(t, req.validation_file, "validation_file") if req.validation_file else None
        )
        evaluation = None
        if req.evaluation_file:
            await self._file(t, req.evaluation_file, "evaluation_file", purpose=EVALS)
            evaluation = await self._evaluation(t.name, req.evaluation_file)
        base, start_from = await self._base_model(t, req.model)
        suffix = check_suffix(req.suffix)
        hp, options = resolve_hyperparameters(self.settings, req, training)
        job_id = new_job_id()
        adapter = fine_tuned_model_name(job_id, suffix)
        seed = req.seed if req.seed is not None else random.randrange(2**31)
        workers = self._workers(self.settings.workers, "workers" in self.settings.model_fields_set)
        config = training_config(
            self.settings,
            self.files,
            workers,
            t.name,
            adapter,
            job_id,
            hp,
            options,
            seed,
            training,
            validation,
        )
        if start_from is not None:
            config["lora"].update(starting_shape(start_from.path))
            shape = {"lora_rank": config["lora"]["rank"], "lora_alpha": config["lora"]["alpha"]}
            options = options.model_copy(update=shape)
        plan = JobPlan(t, training, validation, base, hp, options, config, evaluation)
        self._check_plan(plan)
        # The job will publish a new model: refuse now what publishing would refuse in an hour.
        await self.platform.check_publishable(t.name, adapter, base)
        created = self.clock()
        record = JobRecord(
            id=job_id,
            tenant=t.name,
            created_at=created,
            model=base,
            training_file=training.id,
            validation_file=validation.id if validation else None,
            evaluation_file=evaluation[0] if evaluation else None,
            suffix=suffix,
            seed=seed,
            hyperparameters=hp,
            options=options,
            metadata=req.metadata,
            adapter=adapter,
            config=plan.config,
            finetuned_from=start_from.id if start_from is not None else None,
            notes=[
                Note(
                    at=created,
                    key=f"integration{i}",
                    level="warn",
                    message=f"Integration {item.get('type', '?')!r} is not supported by this platform; "
                    "the job runs without it",
                )
                for i, item in enumerate(req.integrations)
            ],
        )
        await asyncio.to_thread(self.jobs.create, record, lambda jobs: self._admit(t, jobs))
        return record

    async def create_from_config(
        self, job: FineTuneJobConfig, *, adopt: dict[str, Any] | None = None
    ) -> JobRecord:
        """A job for a training config someone wrote (``adept finetune``; a ``FineTuneJob`` made with
        kubectl, whose resource ``adopt`` names): the same record, state machine and limits as an API
        job; it publishes ``job.adapter``."""
        from adept.models import canonical_model_id

        t = await self.platform.get_tenant(job.tenant)
        base = canonical_model_id(job.base_model) if job.base_model else self.platform.base_model_id
        job_id = adopt["metadata"]["name"] if adopt is not None else new_job_id()
        # A config that names no workers trains on the training cluster's GPU group (its shape).
        workers = self._workers(job.workers, "workers" in job.model_fields_set)
        if workers is not job.workers:
            job = job.model_copy(update={"workers": workers})
        config = job.model_dump(mode="json", exclude_none=True)
        config.setdefault("output", {}).setdefault("run_name", job_id)
        hp = Hyperparameters(
            n_epochs=job.train.epochs,
            batch_size=job.train.batch_size,
            learning_rate_multiplier=job.train.learning_rate / self.settings.base_learning_rate,
        )
        options = AdeptOptions(
            lora_rank=job.lora.rank,
            lora_alpha=job.lora.alpha,
            qlora=job.method == "qlora",
            max_seq_length=job.data.max_seq_length,
        )
        evaluation = await self._evaluation(t.name, job.evaluation_file) if job.evaluation_file else None
        self._check_plan(JobPlan(t, None, None, base, hp, options, config, evaluation))
        await self.platform.check_publishable(t.name, job.adapter, base)
        record = JobRecord(
            id=job_id,
            tenant=t.name,
            created_at=self.clock(),
            model=base,
            training_file=job.data.path,
            validation_file=job.data.validation_path,
            seed=job.train.seed,
            hyperparameters=hp,
            options=options,
            adapter=job.adapter,
            config=config,
            evaluation_file=job.evaluation_file,
        )
        admit = lambda jobs: self._admit(t, jobs)  # noqa: E731
        if adopt is not None:
            await asyncio.to_thread(self.jobs.adopt, adopt, record, admit)  # type: ignore[attr-defined]
        else:
            await asyncio.to_thread(self.jobs.create, record, admit)
        return record

    def _check_plan(self, plan: JobPlan) -> None:
        """Checks of a planned job beyond its fields: THE place for more of them, for every job (API,
        FineTuneJob, ``adept finetune``).

        The cluster's shape: ``plan.config["workers"]`` and the job's driver
        (``entrypoint_num_cpus``) must fit the training cluster's groups at their largest
        (``adept.placement``; no shape known, embedded mode: nothing to check), or the job would wait
        for nodes forever; and the evaluation file (every bad line at once; it can measure the
        promotion metric). Each raises ``InvalidRequest`` naming the field. Runs before anything is stored.
        """
        workers = plan.config.get("workers") or {}
        if int(workers.get("num_workers", 1)) < 1:
            raise InvalidRequest("a job needs at least one training worker", param="workers")
        if plan.evaluation is not None:
            ref, data = plan.evaluation
            check_evaluation(data, ref, self.settings)
        check_job_fits(
            self.platform.config.training_shape,
            WorkersSection.model_validate(workers),
            entrypoint_num_cpus=self.entrypoint_num_cpus,
        )

    def _workers(self, configured: WorkersSection, explicitly_set: bool) -> WorkersSection:
        """A job's workers: what it (or the platform team, in the fine-tuning settings) names, else one
        worker per GPU of the training cluster's GPU group (``adept.placement.default_job_resources``)."""
        return job_workers(
            configured, explicitly_set, self.platform.config.training_shape, self.entrypoint_num_cpus
        )

    def _admit(self, tenant: Tenant, jobs: list[JobRecord]) -> None:
        """The job limits (``adept.finetuning.limits``), called by the store where they hold for every replica."""
        check_job_limits(tenant, jobs, self.clock())

    async def _base_model(self, tenant: Tenant, model: str) -> tuple[str, Any]:
        """The base model a job trains, and the tenant's adapter version it starts from (or None)."""
        base = self.platform.base_model_id
        name = adapter_of_fine_tuned_model(tenant.name, model)
        if name is None and self.models is not None:
            try:
                resolved = self.models.resolve(tenant.name, model)
            except NotFound as e:
                e.param = "model"
                raise
            if not resolved.model_id:
                return base, None
            name = resolved.model_id
        elif name is None:
            if model in (base, self.platform.config.model):
                return base, None
            name = model
        adapter, _, version = name.split("/", 1)[-1].partition("@")
        try:
            start = await self.platform.resolve_adapter(tenant.name, adapter, version or None)
        except (NotFound, InvalidRequest):
            raise NotFound(
                f"The model {model!r} does not exist or you do not have access to it.",
                code="model_not_found",
                param="model",
            ) from None
        return base, start

    async def _file(
        self, tenant: Tenant, file_id: str, param: str, *, purpose: str = FINE_TUNE
    ) -> FileRecord:
        try:
            record = await asyncio.to_thread(self.files.get, tenant.name, file_id)
        except NotFound:
            err = file_not_found(file_id)
            err.param = param
            raise err from None
        if record.purpose != purpose:
            what = "an evaluation set" if purpose == EVALS else "training data"
            raise InvalidRequest(
                f"file {file_id} has purpose {record.purpose!r}; upload {what} with purpose {purpose!r}",
                param=param,
            )
        return record

    async def _evaluation(self, tenant: str, ref: str) -> tuple[str, bytes]:
        """A job's evaluation file and its content (``adept.finetuning.promotion.read_evaluation_file``)."""
        return ref, await asyncio.to_thread(read_evaluation_file, self.files, tenant, ref)

    # -- jobs: read and cancel ---------------------------------------------------------------------
    async def list(self, tenant: Tenant | str) -> list[JobRecord]:
        """The tenant's jobs, newest first."""
        return await asyncio.to_thread(self.jobs.list, _name(tenant))

    async def retrieve(self, tenant: Tenant | str, job_id: str) -> JobRecord:
        return await asyncio.to_thread(self.jobs.get, _name(tenant), job_id)

    async def events(self, tenant: Tenant | str, job_id: str) -> list[JobEvent]:
        return job_events(await self.retrieve(tenant, job_id))

    async def checkpoints(self, tenant: Tenant | str, job_id: str) -> list[JobCheckpoint]:
        return job_checkpoints(await self.retrieve(tenant, job_id))

    async def cancel(self, tenant: Tenant | str, job_id: str) -> JobRecord:
        """Cancel an unfinished job (InvalidRequest for a finished one); its run is stopped at once where
        this process has the executor (embedded), else by the driver that runs it (the operator)."""
        await self.retrieve(tenant, job_id)  # NotFound, worded as absent, for anyone else's
        return await asyncio.to_thread(self.cancel_job, job_id)

    def cancel_job(self, job_id: str) -> JobRecord:
        """Cancel job ``job_id`` whoever owns it (the operator, for ``spec.cancel``); stop its run here
        if this process holds the executor. A job already cancelled is only stopped again."""

        def change(r: JobRecord) -> None:
            if r.status != "cancelled":
                advance(r, "cancelled")

        record = self.jobs.modify(job_id, change)
        if self.executor is not None:
            self.executor.stop(record)
        return record

    async def delete_model(self, tenant: Tenant | str, model: str) -> list[str]:
        """Delete a model the tenant's jobs produced (``ft:...`` or its adapter name, all versions or one)."""
        name = _name(tenant)
        adapter = adapter_of_fine_tuned_model(name, model)
        version = ""
        if adapter is None:
            adapter, _, version = model.rsplit("/", 1)[-1].partition("@")
            if model.startswith("ft:") or ("/" in model and model.split("/", 1)[0] != name):
                raise NotFound(f"The model {model!r} does not exist", code="model_not_found", param="model")
        if adapter in (self.platform.base_model_id, self.platform.config.model) or model in (
            self.platform.base_model_id,
            self.platform.config.model,
        ):
            raise PermissionDenied("the base model cannot be deleted", param="model")
        if not adapter.startswith(FINE_TUNED_PREFIX):
            raise PermissionDenied(
                f"{adapter!r} was not made by a fine-tuning job; only those can be deleted through the API "
                "(the platform team manages the others)",
                param="model",
            )
        versions = [v for v in await self.platform.list_adapters(name) if v.name == adapter]
        if not versions or (version and all(v.version != version for v in versions)):
            raise NotFound(f"The model {model!r} does not exist", code="model_not_found", param="model")
        return await self.platform.delete_adapter(name, adapter, version or None)

    # -- the state machine's moves after create (the driver's) -----------------------------------------
    def queue(self, record: JobRecord) -> JobRecord:
        """``validating_files`` → ``queued`` (its uploaded files still exist) or ``failed``. A job made
        from a config names paths instead, which only training can see: training reports them."""
        missing = None
        for param in ("training_file", "validation_file"):
            file_id = getattr(record, param)
            if file_id and file_id.startswith("file-"):
                try:
                    self.files.get(record.tenant, file_id)
                except NotFound:
                    missing = param
                    break

        def change(r: JobRecord) -> None:
            if r.status != "validating_files":
                return
            if missing:
                error = JobError(
                    code="invalid_training_file" if missing == "training_file" else "invalid_validation_file",
                    message=f"the {missing.replace('_', ' ')} {getattr(r, missing)} was deleted before the job started",
                    param=missing,
                )
                advance(r, "failed", error=error)
            else:
                advance(r, "queued")

        return self.jobs.modify(record.id, change)

    def started(self, record: JobRecord, run: Any) -> JobRecord:
        """``queued`` → ``running``, with the executor's handle of the run (``RunState``)."""

        def change(r: JobRecord) -> None:
            r.run = run.model_copy(update={"attempts": r.run.attempts + 1, "failures": r.run.failures})
            if r.status == "queued":
                advance(r, "running")

        return self.jobs.modify(record.id, change)

    def observe(self, record: JobRecord, events: list[dict[str, Any]], cursor: int) -> JobRecord:
        """Apply a running job's new events (steps, resumes) and how far they were read."""

        def change(r: JobRecord) -> None:
            if r.status != "running":
                return
            apply_events(r, events, self.clock())
            r.run.log_offset = cursor

        return self.jobs.modify(record.id, change)

    def requeue(self, record: JobRecord) -> JobRecord:
        """``running`` → ``queued``: interrupted (platform stop); it goes on from its latest checkpoint."""

        def change(r: JobRecord) -> None:
            if r.status == "running":
                advance(r, "queued")

        return self.jobs.modify(record.id, change)

    def finish(self, record: JobRecord, outcome: Outcome, *, max_attempts: int) -> JobRecord:
        """Settle a job whose run ended: publish its result (the same publish step for every executor),
        fail it with the run's typed error, or run it again (a process that died without a word)."""
        published: Any = None  # the AdapterVersion, or "" for a run that keeps its result
        promotion: list[Note] = []  # what eval-gated promotion decided, as events
        evaluation: Any = None  # and what it measured (AdapterEvaluation)
        error: JobError | None = None
        keep = (record.config.get("output") or {}).get("publish") is False  # the result stays in the run dir
        if outcome.result is not None and keep:
            published = ""
        elif outcome.result is not None and not record.cancel_requested:
            try:
                published, promotion, evaluation = self._publish(record, outcome.result)
            except AdeptError as e:
                error = JobError(code=e.code, message=f"the result cannot be published: {e.message}")
        elif outcome.error is not None:
            code, param = outcome.error.get("code") or "training_failed", outcome.error.get("param")
            if code in _DATASET_CODES:
                code, param = "invalid_training_file", param or "training_file"
            error = JobError(code=code, message=str(outcome.error.get("message", ""))[:4000], param=param)

        def change(r: JobRecord) -> None:
            if r.status != "running":
                return
            if published is not None:
                tokens = (outcome.result or {}).get("tokens_seen")
                r.trained_tokens = int(tokens) if isinstance(tokens, int) else r.tokens_trained()
                if published:
                    # OpenAI's shape for the adapters API jobs name; a config's own name otherwise.
                    named = r.adapter == fine_tuned_model_name(r.id, r.suffix)
                    r.fine_tuned_model = (
                        openai_model_name(r.model, r.tenant, r.suffix, r.id) if named else r.adapter
                    )
                    r.adapter_version = published.version
                    r.notes.append(
                        Note(at=self.clock(), key="published", message=f"Published adapter {published.id}")
                    )
                    r.notes.extend(promotion)
                    r.evaluation = evaluation
                advance(r, "succeeded")
            elif error is not None:
                advance(r, "failed", error=error)
            else:
                r.run.failures += 1
                if r.run.failures < max_attempts:
                    advance(
                        r, "queued"
                    )  # died without a word (killed, out of memory): again, from its checkpoint
                else:
                    message = f"the training run ended without a result {r.run.failures} times"
                    advance(r, "failed", error=JobError(code="training_failed", message=message))

        return self.jobs.modify(record.id, change)

    def _publish(self, record: JobRecord, result: dict[str, Any]) -> tuple[Any, list[Note], Any]:
        """The run's adapter, published through the platform (idempotent: once per run), what
        eval-gated promotion decided (as the job's events) and what it measured. The run directory
        is computed from the job's config and this platform's storage, never taken from what the run says.

        A job with an evaluation file publishes its version inactive, and ``promote_version``
        (``adept.finetuning.promotion``: the one implementation, for every job path) measures it
        against the active one with the injected evaluator and makes it live only if it is not
        worse by more than ``promotion_margin`` on ``promotion_metric``.
        """
        return asyncio.run(self._publish_async(record))

    async def _publish_async(self, record: JobRecord) -> tuple[Any, list[Note], Any]:
        run_dir = _run_dir(record, self.platform)
        if not record.evaluation_file:
            return await self.platform.publish_run(run_dir, record.tenant, record.adapter), [], None
        version = await self.platform.publish_run(run_dir, record.tenant, record.adapter, inactive=True)
        try:
            _, data = await self._evaluation(record.tenant, record.evaluation_file)
        except AdeptError:
            data = None  # deleted or unreadable since create: promote_version says so in the event
        note, evaluation = await promote_version(
            self.platform,
            self.settings,
            self.evaluator,
            tenant=record.tenant,
            adapter=record.adapter,
            version=version,
            evaluation_file=record.evaluation_file,
            data=data,
            at=self.clock(),
        )
        return version, [note], evaluation

    # -- retention and tenants ---------------------------------------------------------------------
    def prune(self) -> list[str]:
        """Forget jobs finished longer than ``retention_days`` ago, with their run directories (and,
        through the store, their ``FineTuneJob`` resources); returns their ids."""
        days = self.settings.retention_days
        if not days:
            return []
        gone = []
        for r in self.jobs.finished_before(self.clock() - int(days * DAY_S)):
            self.jobs.delete(r.id)
            _remove_run(r, self.platform, self.executor)
            gone.append(r.id)
        if gone:
            log.info("pruned %d finished fine-tuning jobs", len(gone))
        return gone

    async def purge_tenant(self, tenant: str) -> int:
        """``adept.platform.TenantState``: stop and forget every job and file of ``tenant``."""
        records = await asyncio.to_thread(self.jobs.list, tenant)
        for r in records:
            if r.active:  # stopped before its record goes: it must not publish for a vanishing tenant
                await asyncio.to_thread(
                    self.jobs.modify, r.id, lambda x: setattr(x, "cancel_requested", True)
                )
                if self.executor is not None:
                    await asyncio.to_thread(self.executor.stop, r)
        removed = await asyncio.to_thread(self.jobs.delete_tenant, tenant)
        for r in removed:
            await asyncio.to_thread(_remove_run, r, self.platform, self.executor)
        await self.files.purge_tenant(tenant)
        if hasattr(self.jobs, "release_tenant_files"):
            await asyncio.to_thread(self.jobs.release_tenant_files, tenant)  # type: ignore[attr-defined]
        return len(removed)


def apply_events(r: JobRecord, events: list[dict[str, Any]], at: int) -> None:
    """Steps and resumes the run reported, onto its record."""
    for e in events:
        kind = e.get("adept")
        if kind == "step" and isinstance(e.get("step"), int):
            r.record_step(
                StepRecord(
                    step=e["step"],
                    at=at,
                    total_steps=e.get("total_steps"),
                    train_loss=e.get("train_loss"),
                    valid_loss=e.get("eval_loss"),
                    tokens=e.get("tokens"),
                    learning_rate=e.get("lr"),
                    checkpoint=e.get("checkpoint"),
                )
            )
        elif kind == "resumed" and isinstance(e.get("from_step"), int):
            r.resumes.append(Resume(at=at, from_step=e["from_step"]))


def _run_dir(record: JobRecord, platform: Platform) -> str:
    job = FineTuneJobConfig.model_validate(record.config)
    return job.bind(platform.config).resolved_run_dir


def _remove_run(record: JobRecord, platform: Platform, executor: Any) -> None:
    """A finished job's directories: its run (checkpoints, result) and its executor's (config, log)."""
    try:
        run_dir = _run_dir(record, platform)
    except ValueError:
        run_dir = None
    if run_dir and "://" not in run_dir and Path(run_dir).name == record.id:
        shutil.rmtree(run_dir, ignore_errors=True)
    if executor is not None and hasattr(executor, "forget"):
        executor.forget(record)


def _name(tenant: Tenant | str) -> str:
    return tenant if isinstance(tenant, str) else tenant.name


def open_fine_tuning(
    platform: Platform,
    settings: FineTuningConfig,
    *,
    models: ModelResolver | None = None,
    ray_address: str | None = None,
    evaluator: Evaluator | None = None,
) -> FineTuning:
    """The installation's ``FineTuning``: its stores follow ``tenant_store`` (SQLite + local processes on
    one machine; ``FineTuneJob`` resources on a cluster, whose runs the operator's ``RayJobs`` drive)."""
    from adept.finetuning.files import open_file_store

    cfg = platform.config
    executor = None
    if cfg.tenant_store == "sqlite":
        from adept.finetuning.executors import LocalProcess

        executor = LocalProcess(cfg, ray_address=ray_address)
    return FineTuning(
        platform,
        open_file_store(cfg),
        open_job_store(cfg),
        settings,
        models=models,
        executor=executor,
        evaluator=evaluator,
    )


def open_job_store(cfg: PlatformConfig) -> JobStore:
    """The job store this installation uses (follows ``tenant_store``: SQLite or ``FineTuneJob`` resources)."""
    if cfg.tenant_store == "kubernetes":
        from adept.finetuning.kube_store import KubernetesJobStore

        return KubernetesJobStore(cfg.resolved_kubernetes_namespace)
    from adept.finetuning.store import SQLiteJobStore

    return SQLiteJobStore(cfg.jobs_db)
