"""Where job records live: the ``JobStore`` interface, and SQLite for the embedded platform.

``adept.finetuning.service.open_job_store`` picks the store the way the tenant store is picked:
``tenant_store: sqlite`` keeps jobs in ``<data_dir>/finetuning.sqlite`` (the embedded runner
trains them); ``kubernetes`` keeps each job as a ``FineTuneJob`` resource that the operator
drives (``adept.finetuning.kube_store``, which imports this module, never the reverse).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from adept.errors import StorageError
from adept.finetuning.jobs import JOB_ID_RE, JobRecord, job_not_found
from adept.sqlite_file import SQLiteFile

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
    # Uploaded files as the limits count them (files_store holds the bytes): shared by every replica.
    """CREATE TABLE IF NOT EXISTS files (
        id         TEXT PRIMARY KEY,
        tenant     TEXT NOT NULL,
        bytes      INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS files_by_tenant ON files (tenant)",
]
_ACTIVE = "('validating_files', 'queued', 'running')"


# Called inside the store's write transaction with the tenant's jobs, before a new one is added:
# raises to refuse it. Limits checked here hold for every gateway replica sharing the store.
Admit = Callable[[list[JobRecord]], None]
# The same for an upload: called with the tenant's (files, bytes) before the new file is counted.
FileAdmit = Callable[[int, int], None]


class JobStore(Protocol):
    """Where job records live. Only ``adept.finetuning.service.FineTuning`` writes them."""

    def create(self, record: JobRecord, admit: Admit | None = None) -> JobRecord: ...

    def get(self, tenant: str, job_id: str) -> JobRecord:
        """The tenant's job; NotFound, worded as absent, for anyone else's."""
        ...

    def list(self, tenant: str) -> list[JobRecord]:
        """The tenant's jobs, newest first."""
        ...

    def modify(self, job_id: str, change: Callable[[JobRecord], None]) -> JobRecord:
        """Apply ``change`` to the current record atomically; returns the result."""
        ...

    def active(self) -> list[JobRecord]:
        """Every tenant's unfinished jobs, oldest first."""
        ...

    def finished_before(self, t: int) -> list[JobRecord]:
        """Every tenant's jobs that finished before ``t`` (what retention prunes)."""
        ...

    def recent(self, limit: int) -> list[JobRecord]:
        """Every tenant's latest ``limit`` jobs, newest first (the platform team's view)."""
        ...

    def delete(self, job_id: str) -> None: ...

    def delete_tenant(self, tenant: str) -> list[JobRecord]:
        """Forget every job of ``tenant``; returns them (their processes and directories are the caller's)."""
        ...


def check_job_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not JOB_ID_RE.fullmatch(job_id):
        raise job_not_found(job_id)
    return job_id


class SQLiteJobStore:
    """Job records in one SQLite file (WAL); every change is one ``BEGIN IMMEDIATE`` transaction.

    Gateway replicas (creating, cancelling) and the embedded runner (reporting progress) write the
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
    def create(self, record: JobRecord, admit: Admit | None = None) -> JobRecord:
        with self._write() as db:  # BEGIN IMMEDIATE: one writer at a time, in every process
            if admit is not None:
                rows = db.execute("SELECT record FROM jobs WHERE tenant = ?", (record.tenant,)).fetchall()
                admit([JobRecord.model_validate_json(row[0]) for row in rows])
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

    def delete(self, job_id: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def delete_tenant(self, tenant: str) -> list[JobRecord]:
        with self._write() as db:
            rows = db.execute("SELECT record FROM jobs WHERE tenant = ?", (tenant,)).fetchall()
            db.execute("DELETE FROM jobs WHERE tenant = ?", (tenant,))
        return [JobRecord.model_validate_json(row[0]) for row in rows]

    def recent(self, limit: int) -> list[JobRecord]:
        return self._read("SELECT record FROM jobs ORDER BY created_at DESC, rowid DESC LIMIT ?", (limit,))

    def finished_before(self, t: int) -> list[JobRecord]:
        return [
            r
            for r in self._read(f"SELECT record FROM jobs WHERE status NOT IN {_ACTIVE} ORDER BY created_at")
            if (r.finished_at or r.created_at) < t
        ]

    # -- uploaded files, as the limits count them ----------------------------------------------
    def reserve_file(self, tenant: str, file_id: str, size: int, admit: FileAdmit | None = None) -> None:
        """Count a file for ``tenant`` (before its bytes are stored), ``admit(files, bytes)`` first, atomically."""
        with self._write() as db:
            if admit is not None:
                count, used = db.execute(
                    "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM files WHERE tenant = ?", (tenant,)
                ).fetchone()
                admit(int(count), int(used))
            db.execute("INSERT INTO files (id, tenant, bytes) VALUES (?, ?, ?)", (file_id, tenant, size))

    def release_file(self, file_id: str, tenant: str | None = None) -> None:
        with self._write() as db:
            db.execute("DELETE FROM files WHERE id = ?", (file_id,))

    def release_tenant_files(self, tenant: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM files WHERE tenant = ?", (tenant,))

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
