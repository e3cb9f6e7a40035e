"""Files a tenant uploads for fine-tuning (``POST /v1/files``), stored per tenant.

The store is a directory or any fsspec URI (``files_store_uri``; default ``<data_dir>/files``):
``<root>/<tenant>/<file id>.jsonl`` holds the bytes and ``<root>/<tenant>/<file id>.json`` the
record. The record is written last (to a temporary name, then moved), so a file exists exactly
when its record does; a crash mid-upload leaves only bytes nobody lists, removed with the tenant.

Uploads are validated before anything is stored (``check_examples``: every bad line is
reported) and counted against the tenant's ``max_files`` and ``max_file_storage_bytes``. A
training job reads the file where it lies (``location``), so in cluster mode the store must be
shared with the training pods (a common volume path or an object store).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from pydantic import Field

from adept.config.base import StoredModel
from adept.config.tenant import TenantQuotas, check_tenant_name
from adept.errors import InvalidRequest, NotFound, PermissionDenied, StorageError
from adept.finetuning.examples import check_examples
from adept.jsonl import LineProblem

log = logging.getLogger(__name__)

FINE_TUNE = "fine-tune"
FINE_TUNE_RESULTS = "fine-tune-results"
EVALS = "evals"  # an evaluation set a job names as its ``evaluation_file`` (eval-gated promotion)
UPLOAD_PURPOSES = (FINE_TUNE, EVALS)
MAX_FILENAME_CHARS = 255
MAX_SHOWN_PROBLEMS = 10
MAX_LISTED_PROBLEMS = 1000


class FileRecord(StoredModel):
    """A stored file, as ``GET /v1/files/{id}`` describes it (plus where its bytes are)."""

    id: str = Field(description="`file-...`")
    tenant: str = Field(description="Owning tenant.")
    filename: str = Field(description="The name it was uploaded under (display only).")
    purpose: str = Field(
        description="`fine-tune` or `evals` (uploads), or `fine-tune-results` (written by jobs)."
    )
    bytes: int = Field(description="Size in bytes.")
    created_at: int = Field(description="Unix seconds.")
    examples: int = Field(0, description="Training examples the file holds.")


class FileValidationError(InvalidRequest):
    """An upload with bad lines; ``problems`` lists every one (``line N: reason``)."""

    code = "invalid_file"

    def __init__(self, filename: str, problems: list[LineProblem], examples: int) -> None:
        self.problems = problems
        if problems:
            shown = "; ".join(str(p) for p in problems[:MAX_SHOWN_PROBLEMS])
            more = len(problems) - MAX_SHOWN_PROBLEMS
            message = f"{filename}: {len(problems)} invalid line(s), nothing was stored: {shown}" + (
                f" (and {more} more)" if more > 0 else ""
            )
        else:
            message = f"{filename}: no training examples in the file (it is empty); nothing was stored"
        super().__init__(message, param="file")
        self.examples = examples


def file_limits(tenant: str, quotas: TenantQuotas, size: int) -> Callable[[int, int], None]:
    """The check of ``max_files`` and ``max_file_storage_bytes`` for a ``size``-byte upload, given what
    the tenant stores (files, bytes); PermissionDenied (code ``quota_exceeded``) naming the limit."""

    def admit(count: int, used: int) -> None:
        if quotas.max_files and count + 1 > quotas.max_files:
            raise PermissionDenied(
                f"tenant {tenant!r} already stores {count} files, its max_files limit; delete some first",
                code="quota_exceeded",
            )
        if quotas.max_file_storage_bytes and used + size > quotas.max_file_storage_bytes:
            raise PermissionDenied(
                f"tenant {tenant!r} stores {used} bytes of files; this {size}-byte file would exceed its "
                f"max_file_storage_bytes limit of {quotas.max_file_storage_bytes}",
                code="quota_exceeded",
            )

    return admit


def file_not_found(file_id: str) -> NotFound:
    # The same words for "absent" and "another tenant's": a reply must not reveal who owns what.
    return NotFound(f"No such File object: {file_id}", code="file_not_found", param="file_id")


def new_file_id() -> str:
    return f"file-{uuid.uuid4().hex[:24]}"


def _clean_filename(name: str | None) -> str:
    base = (name or "upload.jsonl").replace("\\", "/").rsplit("/", 1)[-1].strip() or "upload.jsonl"
    return "".join(c for c in base if c.isprintable())[:MAX_FILENAME_CHARS] or "upload.jsonl"


class FileStore:
    """Per-tenant files in a directory or fsspec store.

    Args:
        uri: A local directory or an fsspec URI (``s3://bucket/files``).
    """

    def __init__(self, uri: str) -> None:
        import fsspec

        self.uri = str(uri).rstrip("/")
        self.fs, root = fsspec.core.url_to_fs(self.uri)
        self.root = root.rstrip("/")
        self._lock = threading.Lock()  # quota check and write are one step for this process

    # -- paths ---------------------------------------------------------------------------------
    def _dir(self, tenant: str) -> str:
        return f"{self.root}/{check_tenant_name(tenant)}"

    def location(self, record: FileRecord) -> str:
        """Where a job reads the file's bytes: a local path or a URI (``training.data`` reads both)."""
        data = f"{self._dir(record.tenant)}/{record.id}.jsonl"
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        return data if "file" in protocols else self.fs.unstrip_protocol(data)

    # -- reading -------------------------------------------------------------------------------
    def list(self, tenant: str, purpose: str | None = None) -> list[FileRecord]:
        """The tenant's files, oldest first."""
        try:
            paths = self.fs.glob(f"{self._dir(tenant)}/file-*.json")
        except FileNotFoundError:
            return []
        out = []
        for path in paths:
            record = self._read_record(path)
            if record is not None and record.tenant == tenant and purpose in (None, record.purpose):
                out.append(record)
        return sorted(out, key=lambda r: (r.created_at, r.id))

    def get(self, tenant: str, file_id: str) -> FileRecord:
        """The tenant's file ``file_id``; NotFound (worded as absent) for any other."""
        if not _plausible_id(file_id):
            raise file_not_found(file_id)
        record = self._read_record(f"{self._dir(tenant)}/{file_id}.json")
        if record is None or record.tenant != tenant:
            raise file_not_found(file_id)
        return record

    def content(self, tenant: str, file_id: str) -> bytes:
        record = self.get(tenant, file_id)
        try:
            return self.fs.cat_file(f"{self._dir(tenant)}/{record.id}.jsonl")
        except FileNotFoundError:
            raise file_not_found(file_id) from None

    def usage(self, tenant: str) -> tuple[int, int]:
        """(files, bytes) the tenant stores, what ``max_files`` and ``max_file_storage_bytes`` limit."""
        records = self.list(tenant)
        return len(records), sum(r.bytes for r in records)

    def _read_record(self, path: str) -> FileRecord | None:
        try:
            raw = self.fs.cat_file(path)
        except FileNotFoundError:
            return None
        try:
            return FileRecord.model_validate_json(raw)
        except ValueError as e:  # stored data: one damaged record must not hide the others
            log.warning("ignoring unreadable file record %s: %s", path, e)
            return None

    # -- writing -------------------------------------------------------------------------------
    def check(self, filename: str | None, purpose: str, data: bytes) -> tuple[str, int, str]:
        """Validate an upload before anything is stored: its clean name, its examples (training
        examples, or an ``evals`` file's questions) and its purpose.

        Raises:
            InvalidRequest: an unknown ``purpose``; FileValidationError: bad lines (all listed).
        """
        name = _clean_filename(filename)
        if purpose not in UPLOAD_PURPOSES:
            raise InvalidRequest(
                f"purpose {purpose!r} is not supported: Adept stores files for fine-tuning "
                f"(purpose {FINE_TUNE!r}) and evaluation sets for it (purpose {EVALS!r})",
                param="purpose",
            )
        if purpose == EVALS:
            from adept.evalset import check_evaluation_file

            return name, len(check_evaluation_file(data, name).items), EVALS
        checked = check_examples(data, source=name)
        if not checked.ok:
            raise FileValidationError(name, checked.problems[:MAX_LISTED_PROBLEMS], len(checked.examples))
        return name, len(checked.examples), FINE_TUNE

    def create(
        self,
        tenant: str,
        filename: str | None,
        purpose: str,
        data: bytes,
        *,
        admit: Callable[[int, int], None] | None = None,
    ) -> FileRecord:
        """Validate and store an upload; ``admit(files, bytes)`` (``file_limits``) counts the tenant's
        files in this store first (where no shared ledger counts them).

        Raises:
            InvalidRequest: an unknown ``purpose``; FileValidationError: bad lines (all listed).
            PermissionDenied: over ``max_files`` or ``max_file_storage_bytes`` (code ``quota_exceeded``).
        """
        checked = self.check(filename, purpose, data)
        with self._lock:
            if admit is not None:
                admit(*self.usage(tenant))
            return self.store(tenant, new_file_id(), checked, data)

    def store(self, tenant: str, file_id: str, checked: tuple[str, int, str], data: bytes) -> FileRecord:
        """Store a checked upload under ``file_id``."""
        name, examples, purpose = checked
        record = FileRecord(
            id=file_id,
            tenant=check_tenant_name(tenant),
            filename=name,
            purpose=purpose,
            bytes=len(data),
            created_at=int(time.time()),
            examples=examples,
        )
        base = f"{self._dir(tenant)}/{record.id}"
        try:
            self.fs.makedirs(self._dir(tenant), exist_ok=True)
            self.fs.pipe_file(f"{base}.jsonl", data)
            tmp = f"{self._dir(tenant)}/.tmp-{uuid.uuid4().hex}.json"
            self.fs.pipe_file(tmp, record.model_dump_json().encode())
            self.fs.mv(tmp, f"{base}.json")  # the file exists from here on
        except OSError as e:
            raise StorageError(f"cannot store file {record.id}: {e.strerror or e}") from None
        return record

    def delete(self, tenant: str, file_id: str) -> FileRecord:
        """Delete one file (record first: it stops existing at once)."""
        record = self.get(tenant, file_id)
        base = f"{self._dir(tenant)}/{record.id}"
        try:
            self.fs.rm_file(f"{base}.json")
            self.fs.rm_file(f"{base}.jsonl")
        except FileNotFoundError:
            pass  # deleted concurrently: gone either way
        except OSError as e:
            raise StorageError(f"cannot delete file {record.id}: {e.strerror or e}") from None
        return record

    async def purge_tenant(self, tenant: str) -> int:
        """``adept.platform.TenantState``: every file of ``tenant`` goes with it."""
        import asyncio

        return await asyncio.to_thread(self._purge, tenant)

    def _purge(self, tenant: str) -> int:
        path = self._dir(tenant)
        count = len(self.list(tenant))
        try:
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)
        except OSError as e:
            raise StorageError(f"cannot remove the files of tenant {tenant!r}: {e.strerror or e}") from None
        return count


def _plausible_id(file_id: Any) -> bool:
    # Ids are ours: anything else (paths, globs, other tenants' names) never reaches the store.
    return (
        isinstance(file_id, str)
        and file_id.startswith("file-")
        and len(file_id) <= 64
        and file_id[5:].replace("-", "").isalnum()
        and file_id[5:].isascii()
    )


def open_file_store(cfg: Any) -> FileStore:
    """The files store of a ``PlatformConfig`` (``files_store_uri``, default ``<data_dir>/files``)."""
    return FileStore(cfg.resolved_files_store)
