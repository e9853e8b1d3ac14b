"""The shared store: PostgreSQL, for many workers on many hosts (psycopg 3).

`postgresql://user:password@host:port/dbname` (or `postgres://`); the database must exist, the
tables are created on first use. The password never appears in `url` or in an error.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import psycopg
from langgraph.checkpoint.postgres import PostgresSaver
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool

from harness.errors import InputError
from harness.store import redact_url
from harness.store.sql import Dialect, SqlStore, Tx, checkpoint_serializer, first_line

CONNECT_TIMEOUT_S = 5
"""Fail fast on an unreachable server instead of libpq's default of waiting forever."""
IDLE_IN_TRANSACTION_MS = 30_000
POOL_SIZE = 8
SCHEMA_LOCK = 0x6861726E  # "harn": serialises concurrent CREATE TABLE IF NOT EXISTS (racy in PG)


class _PostgresTx:
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self.conn.cursor(row_factory=dict_row) as cursor:
            cursor.execute(_placeholders(sql), params)
            return cursor.fetchall()

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self.conn.cursor() as cursor:
            cursor.execute(_placeholders(sql), params)
            return cursor.rowcount


def _placeholders(sql: str) -> str:
    # The shared SQL uses `?` (SQLite's style) and no literal `?` or `%`.
    return sql.replace("?", "%s")


class PostgresStore(SqlStore):
    dialect = Dialect(
        float="DOUBLE PRECISION",
        serial="BIGSERIAL PRIMARY KEY",
        lock_row=" FOR UPDATE",
        skip_locked=" FOR UPDATE SKIP LOCKED",
    )

    def __init__(self, url: str, conninfo: str, pool: ConnectionPool[Any]) -> None:
        self.url = url
        self._conninfo = conninfo
        # A pool, not one connection behind a lock: concurrent claims then really race inside
        # PostgreSQL (that is what SKIP LOCKED is for) and a slow query does not stall every
        # thread. `check` replaces a connection the server dropped (a restart) before use.
        self._pool = pool
        self._lock = threading.Lock()
        self._saver: PostgresSaver | None = None
        self._saver_conn: psycopg.Connection[DictRow] | None = None

    @classmethod
    def open(cls, url: str) -> PostgresStore:
        shown = redact_url(url)
        try:
            conn = psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S, autocommit=True)
        except psycopg.Error as error:
            raise InputError(
                f"store url {shown}: cannot connect ({_clean(error, url)}); "
                "check host/port/credentials or unset HARNESS_STORE_URL"
            ) from None
        try:
            with conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                tx = _PostgresTx(conn)
                for statement in cls.dialect.schema():
                    tx.run(statement)
        except psycopg.Error as error:
            raise InputError(
                f"store url {shown}: cannot create the store's tables ({_clean(error, url)}); "
                "the user needs CREATE on the database's public schema"
            ) from None
        pool: ConnectionPool[Any] = ConnectionPool(
            url,
            kwargs={
                "autocommit": True,
                "connect_timeout": CONNECT_TIMEOUT_S,
                # A worker frozen inside a transaction (stopped, swapped out) would keep its
                # row locks, and SKIP LOCKED would pass its task over for ever: the server
                # ends such a session, and its locks, after this long.
                "options": f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}",
            },
            min_size=1,
            max_size=POOL_SIZE,
            check=ConnectionPool.check_connection,
            name="harness-store",
            open=True,
        )
        return cls(shown, url, pool)

    @contextmanager
    def _transaction(self, write: bool = True) -> Iterator[Tx]:
        with self._pool.connection() as conn:
            if not write:  # one statement in autocommit: no BEGIN/COMMIT round trips
                yield _PostgresTx(conn)
                return
            with conn.transaction():
                yield _PostgresTx(conn)

    def checkpointer(self) -> PostgresSaver:
        with self._lock:
            if self._saver is None:
                # PostgresSaver's documented connection settings; its own connection, which it
                # serialises with its own lock.
                conn = psycopg.Connection.connect(
                    self._conninfo,
                    autocommit=True,
                    prepare_threshold=0,
                    row_factory=dict_row,
                    connect_timeout=CONNECT_TIMEOUT_S,
                )
                conn.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK,))
                try:
                    saver = PostgresSaver(conn, serde=checkpoint_serializer())
                    saver.setup()
                finally:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK,))
                self._saver, self._saver_conn = saver, conn
            return self._saver

    def close(self) -> None:
        with self._lock:
            if self._saver_conn is not None:
                self._saver_conn.close()
                self._saver = self._saver_conn = None
            self._pool.close()


def _clean(error: psycopg.Error, url: str) -> str:
    """libpq's message on one line, and without the password should it ever quote it."""
    message = first_line(error)
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    return message.replace(password, "***") if password else message
