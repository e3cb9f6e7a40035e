"""The tenant's fine-tuning job limits, counted from its jobs: admission and the usage report.

``max_concurrent_finetune_jobs`` (unfinished jobs), ``max_finetune_jobs_per_day`` and
``max_trained_tokens_per_day`` (a rolling 24 hours). The counting is here; *where* it runs so
that it holds for every gateway replica is the job store's (SQLite: inside its write transaction;
FineTuneJob resources: with a reservation on the tenant's ``Tenant``, ``adept.finetuning.kube_store``).
The file limits are ``adept.finetuning.files.file_limits``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from adept.errors import RateLimited
from adept.finetuning.jobs import JobRecord

if TYPE_CHECKING:
    from adept.tenancy import Tenant

DAY_S = 86_400


def check_job_limits(tenant: Tenant, jobs: list[JobRecord], t: int) -> None:
    """The job limits at time ``t``, counted from ``jobs`` (the tenant's, as the store's admission sees them:
    inside its write transaction, or its reservation on the Tenant); RateLimited naming the limit."""
    q = tenant.quotas
    active = sum(j.active for j in jobs)
    if q.max_concurrent_finetune_jobs and active >= q.max_concurrent_finetune_jobs:
        raise RateLimited(
            f"tenant {tenant.name!r} already has {active} unfinished fine-tuning jobs, its "
            "max_concurrent_finetune_jobs limit; wait for one to finish or cancel one",
            retry_after=60,
            code="concurrent_jobs_limit_exceeded",
        )
    today = sorted(j.created_at for j in jobs if j.created_at > t - DAY_S)
    if q.max_finetune_jobs_per_day and len(today) >= q.max_finetune_jobs_per_day:
        raise RateLimited(
            f"tenant {tenant.name!r} created {len(today)} fine-tuning jobs in the last 24 hours, its "
            "max_finetune_jobs_per_day limit",
            retry_after=max(1, today[0] + DAY_S - t),
            code="jobs_per_day_limit_exceeded",
        )
    limit = q.max_trained_tokens_per_day
    if limit:
        counted = in_window(jobs, t)
        used = sum(j.tokens_trained() for j in counted)
        if used >= limit:
            raise RateLimited(
                f"tenant {tenant.name!r} trained on {used} tokens in the last 24 hours, its "
                f"max_trained_tokens_per_day limit of {limit}",
                retry_after=retry_after(counted, used, limit, t),
                code="trained_tokens_limit_exceeded",
            )


def usage_report(
    quotas: Any, files: int, stored: int, jobs: list[JobRecord], t: int
) -> dict[str, dict[str, int]]:
    """Use against the fine-tuning limits at time ``t`` (``limit`` 0 = unlimited): ``/v1/usage`` and the console."""
    q = quotas
    return {
        "files": {"used": files, "limit": q.max_files},
        "file_storage_bytes": {"used": stored, "limit": q.max_file_storage_bytes},
        "finetune_jobs": {"used": sum(j.active for j in jobs), "limit": q.max_concurrent_finetune_jobs},
        "finetune_jobs_per_day": {
            "used": sum(j.created_at > t - DAY_S for j in jobs),
            "limit": q.max_finetune_jobs_per_day,
        },
        "trained_tokens_per_day": {
            "used": sum(j.tokens_trained() for j in in_window(jobs, t)),
            "limit": q.max_trained_tokens_per_day,
        },
    }


def in_window(jobs: list[JobRecord], t: int) -> list[JobRecord]:
    return [j for j in jobs if j.active or (j.finished_at or 0) > t - DAY_S]


def retry_after(jobs: list[JobRecord], used: int, limit: int, t: int) -> float:
    """Seconds until enough finished jobs leave the 24-hour window."""
    for j in sorted((j for j in jobs if j.finished_at), key=lambda j: j.finished_at or 0):
        used -= j.tokens_trained()
        if used < limit:
            return max(1, (j.finished_at or t) + DAY_S - t)
    return DAY_S
