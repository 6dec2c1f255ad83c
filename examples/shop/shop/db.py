"""The service's own PostgreSQL database: a small connection pool and its schema.

The schema is created at start, idempotently (``CREATE TABLE IF NOT EXISTS`` …), under a
transaction-level advisory lock so that two pods starting together do not race. The
process starts serving even when the database does not answer yet: a background thread
retries the schema with capped backoff, and ``/healthz`` answers 503 until it is in place.
"""

from __future__ import annotations

import logging
import os
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, LiteralString

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

__all__ = ["Connection", "Database"]

log = logging.getLogger("shop")
Connection = psycopg.Connection[dict[str, Any]]
_SCHEMA_LOCK = 7_310_001  # the advisory lock key taken while the schema is created


class Database:
    def __init__(self, url: str, schema: Sequence[LiteralString],
                 seed: Callable[[Connection], None] | None = None) -> None:
        self.url = url
        self.schema = schema
        self.seed = seed
        self.pool: ConnectionPool[Connection] = ConnectionPool(
            url,
            min_size=1,
            max_size=int(os.environ.get("DB_POOL_MAX", "5")),
            open=False,
            timeout=float(os.environ.get("DB_POOL_TIMEOUT_SECONDS", "5")),
            kwargs={"row_factory": dict_row, "connect_timeout": 3},
            check=ConnectionPool.check_connection,
            name="shop",
        )
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._create_schema, name="schema", daemon=True)

    def start(self) -> None:
        self.pool.open(wait=False)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.pool.close(timeout=5)

    @property
    def schema_ready(self) -> bool:
        return self._ready.is_set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A pooled connection in a transaction: committed on success, rolled back on error."""
        with self.pool.connection() as conn:
            yield conn

    def check(self) -> str | None:
        """None when the database answers and the schema is in place, else why not."""
        if not self._ready.is_set():
            return "schema not created yet (database unreachable?)"
        try:
            with self.pool.connection(timeout=1.0) as conn:
                conn.execute("SELECT 1")
        except Exception as error:  # noqa: BLE001 - any failure means not ready
            return f"database unreachable: {type(error).__name__}"
        return None

    def _create_schema(self) -> None:
        delay = 0.2
        while not self._stop.is_set():
            try:
                with self.pool.connection(timeout=10) as conn:
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                    for statement in self.schema:
                        conn.execute(statement)
                    if self.seed:
                        self.seed(conn)
                self._ready.set()
                log.info("schema ready")
                return
            except Exception as error:  # noqa: BLE001 - retried until it works
                log.warning("schema not created (%s: %s); retrying", type(error).__name__,
                            str(error).strip().splitlines()[0] if str(error) else "")
                self._stop.wait(random.uniform(0, delay))
                delay = min(delay * 2, 5.0)
