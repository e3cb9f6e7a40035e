"""Embedded mode's tenant store: one SQLite file (WAL) in the data dir."""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from adept.config.tenant import TenantQuotas, TenantSpec
from adept.errors import AuthenticationError, Conflict, NotFound, StorageError
from adept.tenancy import (
    SHOWN_KEY_CHARS,
    Tenant,
    check_presented_key,
    hash_api_key,
    new_api_key,
    now_iso,
    valid_tenant_name,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (
    name         TEXT PRIMARY KEY,
    display_name TEXT NOT NULL DEFAULT '',
    quotas       TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    key_hash     TEXT NOT NULL UNIQUE,
    key_prefix   TEXT NOT NULL
)
"""


class SQLiteTenantStore:
    """Tenants in one SQLite file (WAL): durable, atomic, safe for many threads and processes.

    Every write is one ``BEGIN IMMEDIATE`` transaction, so concurrent writers (threads or
    processes) serialize on SQLite's lock and wait (``busy_timeout``) instead of failing.
    Connections are per thread and per process (a connection must not cross a ``fork``).
    """

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path).expanduser().absolute()
        self._busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._write() as db:
                db.execute(_SCHEMA)
        except OSError as e:
            raise StorageError(f"cannot create tenant store at {self.path}: {e.strerror or e}") from None
        # The file holds no secrets, but tenant names and quotas are nobody else's business.
        with contextlib.suppress(OSError):
            os.chmod(self.path, 0o600)

    # -- connections -----------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            try:
                conn = sqlite3.connect(self.path, timeout=self._busy_timeout_s, isolation_level=None)
                conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_s * 1000)}")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
            except sqlite3.Error as e:
                raise StorageError(f"cannot open tenant store {self.path}: {e}") from None
            conn.row_factory = sqlite3.Row
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; rolled back on any error, so a failed write changes nothing."""
        db = self._conn()
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            raise StorageError(f"tenant store {self.path} is busy or read-only: {e}") from None
        try:
            yield db
            db.execute("COMMIT")
        except BaseException as e:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            if isinstance(e, sqlite3.OperationalError):
                raise StorageError(f"tenant store {self.path}: write failed: {e}") from None
            raise

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local.conn = None

    # -- rows ------------------------------------------------------------------------------
    @staticmethod
    def _tenant(row: sqlite3.Row) -> Tenant:
        return Tenant(
            name=row["name"],
            display_name=row["display_name"],
            quotas=TenantQuotas.model_validate(json.loads(row["quotas"])),
            created_at=row["created_at"],
            key_prefix=row["key_prefix"],
        )

    def _row(self, db: sqlite3.Connection, name: str) -> sqlite3.Row:
        row = db.execute("SELECT * FROM tenants WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"tenant {name!r} not found")
        return row

    # -- TenantStore -----------------------------------------------------------------------
    def create(self, spec: TenantSpec) -> tuple[Tenant, str]:
        name = valid_tenant_name(spec.name)
        key = new_api_key()
        try:
            with self._write() as db:
                db.execute(
                    "INSERT INTO tenants (name, display_name, quotas, created_at, key_hash, key_prefix)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        name,
                        spec.display_name,
                        spec.quotas.model_dump_json(),
                        now_iso(),
                        hash_api_key(key),
                        key[:SHOWN_KEY_CHARS],
                    ),
                )
                tenant = self._tenant(self._row(db, name))
        except sqlite3.IntegrityError:
            raise Conflict(f"tenant {name!r} already exists") from None
        return tenant, key

    def get(self, name: str) -> Tenant:
        return self._tenant(self._row(self._conn(), valid_tenant_name(name)))

    def list(self) -> list[Tenant]:
        rows = self._conn().execute("SELECT * FROM tenants ORDER BY name").fetchall()
        return [self._tenant(r) for r in rows]

    def update(self, spec: TenantSpec) -> Tenant:
        name = valid_tenant_name(spec.name)
        with self._write() as db:
            self._row(db, name)
            db.execute(
                "UPDATE tenants SET display_name = ?, quotas = ? WHERE name = ?",
                (spec.display_name, spec.quotas.model_dump_json(), name),
            )
            return self._tenant(self._row(db, name))

    def delete(self, name: str) -> None:
        name = valid_tenant_name(name)
        with self._write() as db:
            if db.execute("DELETE FROM tenants WHERE name = ?", (name,)).rowcount == 0:
                raise NotFound(f"tenant {name!r} not found")

    def authenticate(self, api_key: str) -> Tenant:
        digest = check_presented_key(api_key)
        # The indexed lookup finds the candidate; the constant-time compare is what decides.
        row = self._conn().execute("SELECT * FROM tenants WHERE key_hash = ?", (digest,)).fetchone()
        if row is None or not hmac.compare_digest(row["key_hash"], digest):
            raise AuthenticationError("invalid API key")
        return self._tenant(row)

    def rotate_key(self, name: str) -> str:
        name = valid_tenant_name(name)
        key = new_api_key()
        with self._write() as db:
            self._row(db, name)
            db.execute(
                "UPDATE tenants SET key_hash = ?, key_prefix = ? WHERE name = ?",
                (hash_api_key(key), key[:SHOWN_KEY_CHARS], name),
            )
        return key
