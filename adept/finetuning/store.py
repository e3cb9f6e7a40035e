"""Where job records live: the ``JobStore`` interface, and SQLite for the embedded platform.

``open_job_store`` picks the store the way the tenant store is picked: ``tenant_store: sqlite``
keeps jobs in ``<data_dir>/finetuning.sqlite`` (the embedded runner trains them); ``kubernetes``
keeps each job as a ``FineTuneJob`` resource that the operator drives
(``adept.finetuning.kube_store``). Either way state survives a gateway restart.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from adept.errors import InvalidRequest, StorageError
from adept.finetuning import process
from adept.finetuning.jobs import JOB_ID_RE, JobRecord, job_not_found, now
from adept.sqlite_file import SQLiteFile

if TYPE_CHECKING:
    from adept.config.platform import PlatformConfig

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS jobs (
        id         TEXT PRIMARY KEY,
        tenant     TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        status     TEXT NOT NULL,
        record     TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS jobs_by_tenant ON jobs (tenant, created_at)",
    "CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status)",
]
_ACTIVE = "('validating_files', 'queued', 'running')"


class JobStore(Protocol):
    """What the gateway needs from wherever jobs live."""

    def create(self, record: JobRecord) -> JobRecord: ...

    def get(self, tenant: str, job_id: str) -> JobRecord:
        """The tenant's job; NotFound, worded as absent, for anyone else's."""
        ...

    def list(self, tenant: str) -> list[JobRecord]:
        """The tenant's jobs, newest first."""
        ...

    def cancel(self, tenant: str, job_id: str) -> JobRecord:
        """Cancel an unfinished job (InvalidRequest for a finished one); returns it cancelled."""
        ...

    async def purge_tenant(self, tenant: str) -> int:
        """``adept.platform.TenantState``: stop and forget every job of ``tenant``."""
        ...


def check_job_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not JOB_ID_RE.fullmatch(job_id):
        raise job_not_found(job_id)
    return job_id


def finished_error(record: JobRecord) -> InvalidRequest:
    return InvalidRequest(
        f"fine-tuning job {record.id} has already {record.status}; only unfinished jobs can be cancelled",
        code="job_not_cancellable",
        param="fine_tuning_job_id",
    )


class SQLiteJobStore:
    """Job records in one SQLite file (WAL); every change is one ``BEGIN IMMEDIATE`` transaction.

    The gateway (creating, cancelling) and the embedded runner (reporting progress) write the
    same rows from different processes: each change re-reads the row inside its transaction
    (``modify``), so neither overwrites what the other wrote.
    """

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 30.0) -> None:
        # Tenants' job settings are nobody else's business: the file is 0600.
        self._db = SQLiteFile(path, what="job store", schema=_SCHEMA, busy_timeout_s=busy_timeout_s)
        self.path = self._db.path
        self._conn, self._write = self._db.conn, self._db.write

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[JobRecord]:
        try:
            rows = self._conn().execute(sql, args).fetchall()
        except sqlite3.Error as e:
            raise StorageError(f"job store {self.path}: read failed: {e}") from None
        return [JobRecord.model_validate_json(row[0]) for row in rows]

    def close(self) -> None:
        self._db.close()

    # -- JobStore ----------------------------------------------------------------------------
    def create(self, record: JobRecord) -> JobRecord:
        with self._write() as db:
            db.execute(
                "INSERT INTO jobs (id, tenant, created_at, status, record) VALUES (?, ?, ?, ?, ?)",
                (record.id, record.tenant, record.created_at, record.status, record.model_dump_json()),
            )
        return record

    def get(self, tenant: str, job_id: str) -> JobRecord:
        found = self._read(
            "SELECT record FROM jobs WHERE id = ? AND tenant = ?", (check_job_id(job_id), tenant)
        )
        if not found:
            raise job_not_found(job_id)
        return found[0]

    def list(self, tenant: str) -> list[JobRecord]:
        return self._read(
            "SELECT record FROM jobs WHERE tenant = ? ORDER BY created_at DESC, rowid DESC", (tenant,)
        )

    def cancel(self, tenant: str, job_id: str) -> JobRecord:
        self.get(tenant, job_id)  # NotFound for anyone else's

        def mark(r: JobRecord) -> None:
            if not r.active:
                raise finished_error(r)
            r.cancel_requested, r.status, r.finished_at = True, "cancelled", now()

        record = self.modify(job_id, mark)
        process.stop(record.run)  # at once: the runner would only notice at its next poll
        return record

    async def purge_tenant(self, tenant: str) -> int:
        return await asyncio.to_thread(self._purge, tenant)

    def _purge(self, tenant: str) -> int:
        records = self.list(tenant)
        for r in records:
            if r.active:
                # Stopped before its row goes: the process must not publish for a vanishing tenant.
                self.modify(r.id, lambda x: setattr(x, "cancel_requested", True))
                process.stop(r.run)
        with self._write() as db:
            db.execute("DELETE FROM jobs WHERE tenant = ?", (tenant,))
        for r in records:  # its job directory: config, training log
            job_dir = Path(r.run.log_path).parent if r.run.log_path else None
            if job_dir is not None and job_dir.name == r.id:
                shutil.rmtree(job_dir, ignore_errors=True)
        return len(records)

    # -- the runner's view -------------------------------------------------------------------
    def active(self) -> list[JobRecord]:
        """Every tenant's unfinished jobs, oldest first (the order they are started in)."""
        return self._read(f"SELECT record FROM jobs WHERE status IN {_ACTIVE} ORDER BY created_at, rowid")

    def modify(self, job_id: str, change: Callable[[JobRecord], None]) -> JobRecord:
        """Apply ``change`` to the current record inside one write transaction; returns the result."""
        with self._write() as db:
            row = db.execute("SELECT record FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise job_not_found(job_id)
            record = JobRecord.model_validate_json(row[0])
            change(record)
            db.execute(
                "UPDATE jobs SET status = ?, record = ? WHERE id = ?",
                (record.status, record.model_dump_json(), job_id),
            )
        return record


def open_job_store(cfg: PlatformConfig) -> JobStore:
    """The job store this installation uses (follows ``tenant_store``: SQLite or ``FineTuneJob`` resources)."""
    if cfg.tenant_store == "kubernetes":
        from adept.finetuning.kube_store import KubernetesJobStore

        return KubernetesJobStore(cfg.resolved_kubernetes_namespace)
    return SQLiteJobStore(cfg.jobs_db)
