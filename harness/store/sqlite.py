"""The embedded store: one SQLite file (WAL), shared by the threads and processes of one host.

`sqlite:///runs/harness.db` is relative to the working directory, `sqlite:////abs/harness.db`
absolute (SQLAlchemy's convention: the path is whatever follows `sqlite:///`).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from langgraph.checkpoint.sqlite import SqliteSaver

from harness.errors import InputError
from harness.store.sql import Dialect, SqlStore, Tx, checkpoint_serializer, first_line

BUSY_TIMEOUT_S = 30.0
"""How long a writer waits for another process's write lock before failing."""


class _SqliteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return [dict(row) for row in self.conn.execute(sql, params).fetchall()]

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.conn.execute(sql, params).rowcount


class SqliteStore(SqlStore):
    dialect = Dialect(
        float="REAL",
        serial="INTEGER PRIMARY KEY AUTOINCREMENT",
        lock_row="",
        skip_locked="",
    )

    def __init__(self, url: str, path: Path, conn: sqlite3.Connection) -> None:
        self.url = url
        self.path = path
        # One connection behind a lock: SQLite has one writer at a time anyway, and a lock is
        # simpler than a connection per thread that must be closed from its own thread.
        self._conn = conn
        self._lock = threading.RLock()
        self._saver: SqliteSaver | None = None

    @classmethod
    def open(cls, url: str) -> SqliteStore:
        raw = url.removeprefix("sqlite:///")
        if not url.startswith("sqlite:///") or not raw or raw.startswith(":memory:"):
            raise InputError(
                f"store url {url!r}: not a SQLite file URL; use sqlite:///relative/path.db "
                "or sqlite:////absolute/path.db"
            )
        path = Path(raw)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InputError(
                f"store url {url!r}: cannot create directory {path.parent} "
                f"({error.strerror}); use a writable path or unset HARNESS_STORE_URL"
            ) from None
        try:
            conn = _connect(path)
            # The write-ahead log lets readers run beside the one writer, across processes.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA foreign_keys=ON")
            store = cls(url, path, conn)
            with store._transaction() as tx:
                store._create_schema(tx)
        except sqlite3.Error as error:
            raise InputError(
                f"store url {url!r}: cannot open {path} ({first_line(error)}); "
                "use a writable path to a SQLite file or unset HARNESS_STORE_URL"
            ) from None
        return store

    @contextmanager
    def _transaction(self, write: bool = True) -> Iterator[Tx]:
        with self._lock:
            # IMMEDIATE takes the write lock first (waiting up to the busy timeout): a deferred
            # transaction upgrading to write could fail at once with SQLITE_BUSY.
            self._conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield _SqliteTx(self._conn)
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def checkpointer(self) -> SqliteSaver:
        with self._lock:
            if self._saver is None:
                # Its own connection: SqliteSaver commits on its own schedule, under its lock.
                saver = SqliteSaver(
                    _connect(self.path, autocommit=False), serde=checkpoint_serializer()
                )
                saver.setup()
                self._saver = saver
            return self._saver

    def close(self) -> None:
        with self._lock:
            if self._saver is not None:
                self._saver.conn.close()
                self._saver = None
            self._conn.close()


def _connect(path: Path, *, autocommit: bool = True) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path,
        timeout=BUSY_TIMEOUT_S,  # sets SQLite's busy_timeout
        check_same_thread=False,  # used from many threads, always under a lock
        isolation_level=None if autocommit else "DEFERRED",
    )
    if autocommit:  # ours; SqliteSaver reads plain tuples
        conn.row_factory = sqlite3.Row
    return conn
