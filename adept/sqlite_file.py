"""One SQLite file (WAL) that many threads and processes share: the embedded mode's stores use it.

Connections are per thread and per process (a connection must not cross a ``fork``); every write is
one ``BEGIN IMMEDIATE`` transaction, so concurrent writers serialize on SQLite's lock and wait
(``busy_timeout``) instead of failing, and a failed write changes nothing.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from adept.errors import StorageError


class SQLiteFile:
    """``path`` opened with ``schema`` applied (0600: its contents are nobody else's business).

    Args:
        what: Names the store in errors ("tenant store", "job store").
        schema: Statements run once, in one transaction, when the file is opened.
        row_factory: For every connection (e.g. ``sqlite3.Row``).

    Raises:
        StorageError: the file cannot be created, opened or written.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        what: str,
        schema: Sequence[str],
        busy_timeout_s: float = 30.0,
        row_factory: type | None = None,
    ) -> None:
        self.path = Path(path).expanduser().absolute()
        self.what = what
        self._busy_timeout_s = busy_timeout_s
        self._row_factory = row_factory
        self._local = threading.local()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.write() as db:
                for statement in schema:
                    db.execute(statement)
        except OSError as e:
            raise StorageError(f"cannot create the {what} at {self.path}: {e.strerror or e}") from None
        with contextlib.suppress(OSError):
            os.chmod(self.path, 0o600)

    def conn(self) -> sqlite3.Connection:
        """This thread's connection (a new one after a ``fork``)."""
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            try:
                conn = sqlite3.connect(self.path, timeout=self._busy_timeout_s, isolation_level=None)
                conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_s * 1000)}")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
            except sqlite3.Error as e:
                raise StorageError(f"cannot open the {self.what} {self.path}: {e}") from None
            if self._row_factory is not None:
                conn.row_factory = self._row_factory
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local.conn = None

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; rolled back on any error, so a failed write changes nothing."""
        db = self.conn()
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            raise StorageError(f"{self.what} {self.path} is busy or read-only: {e}") from None
        try:
            yield db
            db.execute("COMMIT")
        except BaseException as e:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            if isinstance(e, sqlite3.OperationalError):
                raise StorageError(f"{self.what} {self.path}: write failed: {e}") from None
            raise
