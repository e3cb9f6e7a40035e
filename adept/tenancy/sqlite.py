"""Embedded mode's tenant store: one SQLite file (WAL) in the data dir."""

from __future__ import annotations

import hmac
import json
import sqlite3
from pathlib import Path

from adept.config.tenant import TenantQuotas, TenantSpec
from adept.errors import AuthenticationError, Conflict, NotFound
from adept.sqlite_file import SQLiteFile
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
        self._db = SQLiteFile(
            path,
            what="tenant store",
            schema=[_SCHEMA],
            busy_timeout_s=busy_timeout_s,
            row_factory=sqlite3.Row,
        )
        self.path = self._db.path
        self._conn, self._write = self._db.conn, self._db.write

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        self._db.close()

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
