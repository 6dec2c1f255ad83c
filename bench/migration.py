"""Expand/contract of a table of a million rows under concurrent writes, on a real PostgreSQL.

The table ``accounts`` renames ``email`` to ``contact`` the expand/contract way, through
:class:`pilotboat.adapters.postgres.PostgresEngine` exactly as the operator runs it:

- expand: a nullable ``contact`` column, a trigger that keeps both columns in sync whichever
  one a version writes, and a partial index of the rows still to copy (built CONCURRENTLY);
- backfill: batches of 10,000 rows, each its own transaction;
- verify: no row where the two columns differ;
- contract: drop the index, the trigger and ``email``.

Four writer threads (one connection each) insert and update rows for the whole run: as the
old version (writing ``email``) until verify, then as the new version (writing ``contact``),
which must go on working after the contract. Each write is timed, so a write stuck behind a
migration's lock shows as a long write in that phase. Afterwards every write a writer saw
commit is checked against the table: a missing row or an older value is a lost write.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
from tests.fixtures.postgres import running_server

from pilotboat.adapters.database import Timeouts
from pilotboat.adapters.kube import Kube
from pilotboat.adapters.postgres import PostgresEngine
from pilotboat.core.migration import Phase

__all__ = ["BENCHMARKS"]

ROWS = 1_000_000
BATCH_SIZE = 10_000
WRITERS = 4
MIGRATION = "accounts-contact"
WRITER_APP = "bench-writer"

EXPAND = """
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS contact text;
CREATE OR REPLACE FUNCTION accounts_sync_contact() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    NEW.contact := COALESCE(NEW.contact, NEW.email);
    NEW.email := COALESCE(NEW.email, NEW.contact);
  ELSIF NEW.email IS DISTINCT FROM OLD.email THEN
    NEW.contact := NEW.email;
  ELSIF NEW.contact IS DISTINCT FROM OLD.contact THEN
    NEW.email := NEW.contact;
  END IF;
  RETURN NEW;
END $$;
CREATE OR REPLACE TRIGGER accounts_sync_contact BEFORE INSERT OR UPDATE ON accounts
  FOR EACH ROW EXECUTE FUNCTION accounts_sync_contact();
CREATE INDEX CONCURRENTLY IF NOT EXISTS accounts_contact_todo ON accounts (id)
  WHERE contact IS NULL;
"""
BACKFILL = (
    "UPDATE accounts SET contact = email WHERE id IN "
    "(SELECT id FROM accounts WHERE contact IS NULL LIMIT :batch_size)"
)
VERIFY = "SELECT count(*) = 0 FROM accounts WHERE contact IS DISTINCT FROM email"
CONTRACT = """
DROP INDEX CONCURRENTLY IF EXISTS accounts_contact_todo;
DROP TRIGGER accounts_sync_contact ON accounts;
DROP FUNCTION accounts_sync_contact();
ALTER TABLE accounts DROP COLUMN email;
"""
TIMEOUTS = Timeouts(lock=timedelta(seconds=5), statement=timedelta(minutes=5))


@dataclass
class _Writes:
    """What the writers did, per phase, and what they saw commit."""

    phase: str = "load"
    new_version: bool = False
    latencies: dict[str, list[float]] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    committed: dict[int, tuple[str, int]] = field(default_factory=dict)
    """id → (address, balance) of the last write each row got, from the writer that owns it."""
    lock_waits: dict[str, float] = field(default_factory=dict)
    """phase → longest wait on a lock seen by sampling the writers' backends."""
    lock_kinds: dict[str, set[str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _writer(dsn: str, index: int, writes: _Writes, stop: threading.Event) -> None:
    """Insert rows of its own id range and update rows of the original table it owns
    (id ≡ index mod WRITERS), so no two writers ever write one row."""
    rng = random.Random(index)
    next_id = 10_000_000 * (index + 1)
    seq = 0
    with psycopg.connect(dsn, autocommit=True, application_name=WRITER_APP) as conn:
        while not stop.is_set():
            seq += 1
            column = "contact" if writes.new_version else "email"
            address = f"w{index}-{seq}@example.com"
            phase = writes.phase
            if seq % 2:
                row_id, next_id = next_id, next_id + 1
                query = f"INSERT INTO accounts (id, {column}, balance) VALUES (%s, %s, %s)"
                params: tuple[Any, ...] = (row_id, address, seq)
            else:
                row_id = rng.randrange(ROWS // WRITERS) * WRITERS + index + 1
                query = f"UPDATE accounts SET {column} = %s, balance = %s WHERE id = %s"
                params = (address, seq, row_id)
            started = time.monotonic()
            try:
                conn.execute(query, params)
            except psycopg.Error:
                with writes.lock:
                    writes.failures[phase] = writes.failures.get(phase, 0) + 1
                continue
            elapsed = time.monotonic() - started
            with writes.lock:
                writes.latencies.setdefault(phase, []).append(elapsed)
                writes.committed[row_id] = (address, seq)
            time.sleep(0.001)


def _sample_lock_waits(dsn: str, writes: _Writes, stop: threading.Event) -> None:
    """Every 10 ms, how long each writer waiting on a lock has been waiting (an under-
    estimate by at most one period), and on what (relation, transactionid, …)."""
    query = (
        "SELECT a.wait_event, extract(epoch FROM clock_timestamp() - a.query_start) "
        "FROM pg_stat_activity a WHERE a.application_name = %s AND a.wait_event_type = 'Lock'"
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        while not stop.wait(0.01):
            phase = writes.phase
            for kind, waited in conn.execute(query, (WRITER_APP,)):
                with writes.lock:
                    writes.lock_waits[phase] = max(writes.lock_waits.get(phase, 0.0), float(waited))
                    writes.lock_kinds.setdefault(phase, set()).add(kind)


def _lost_writes(dsn: str, committed: dict[int, tuple[str, int]]) -> int:
    """Writes that committed but whose row is missing or holds something older."""
    ids = list(committed)
    found: dict[int, tuple[str, int]] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for start in range(0, len(ids), 10_000):
            chunk = ids[start : start + 10_000]
            for row_id, contact, balance in conn.execute(
                "SELECT id, contact, balance FROM accounts WHERE id = ANY(%s)", (chunk,)
            ):
                found[row_id] = (contact, balance)
    return sum(1 for row_id, value in committed.items() if found.get(row_id) != value)


def _load(dsn: str) -> float:
    started = time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE accounts (id bigint PRIMARY KEY, email text NOT NULL, "
            "balance bigint NOT NULL DEFAULT 0)"
        )
        conn.execute(
            "INSERT INTO accounts (id, email, balance) "
            "SELECT i, 'user' || i || '@example.com', 0 FROM generate_series(1, %s) i",
            (ROWS,),
        )
        conn.execute("VACUUM ANALYZE accounts")
    return time.monotonic() - started


def _phases(engine: PostgresEngine, dsn: str) -> list[tuple[str, Callable[[], object]]]:
    def expand() -> object:
        return engine.apply_phase(
            dsn, MIGRATION, Phase.EXPAND, EXPAND, applied_by="bench", timeouts=TIMEOUTS
        )

    def backfill() -> object:
        return engine.backfill(
            dsn, MIGRATION, BACKFILL, batch_size=BATCH_SIZE, pause=timedelta(0),
            applied_by="bench", timeouts=TIMEOUTS,
        )  # fmt: skip

    def verify() -> object:
        if not engine.verify(dsn, VERIFY, timeouts=TIMEOUTS):
            raise RuntimeError("verify failed: contact and email differ somewhere")
        return True

    def contract() -> object:
        return engine.apply_phase(
            dsn, MIGRATION, Phase.CONTRACT, CONTRACT, applied_by="bench", timeouts=TIMEOUTS
        )

    return [("expand", expand), ("backfill", backfill), ("verify", verify),
            ("contract", contract)]  # fmt: skip


def migration_1m_rows(kube: Kube, kubeconfig: Path) -> Iterator[dict[str, Any]]:
    """Per phase: duration, writes, failed writes and the slowest write; then lost writes."""
    del kube, kubeconfig  # PostgreSQL only
    with running_server() as server:
        with psycopg.connect(server.admin_dsn, autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        dsn = server.dsn("bench")
        load_seconds = _load(dsn)
        engine = PostgresEngine()
        writes, stop = _Writes(), threading.Event()
        writers = [
            threading.Thread(target=_writer, args=(dsn, i, writes, stop), daemon=True)
            for i in range(WRITERS)
        ]
        writers.append(
            threading.Thread(target=_sample_lock_waits, args=(dsn, writes, stop), daemon=True)
        )
        for thread in writers:
            thread.start()
        records = []
        try:
            writes.phase = "before"
            time.sleep(2)  # a baseline: how long a write takes with no migration running
            for name, run in _phases(engine, dsn):
                if name == "contract":
                    writes.phase = "new-version"  # the old version is gone before contract
                    writes.new_version = True
                    time.sleep(1)
                writes.phase = name
                started = time.monotonic()
                run()
                records.append((name, time.monotonic() - started))
            writes.phase = "after"
            time.sleep(2)
        finally:
            stop.set()
            for thread in writers:
                thread.join(30)
        lost = _lost_writes(dsn, writes.committed)

    phases = [("before", 2.0), *records[:3], ("new-version", 1.0), *records[3:], ("after", 2.0)]
    for name, seconds in phases:
        latencies = writes.latencies.get(name, [])
        yield {
            "metric": "migration_phase",
            "phase": name,
            "rows": ROWS,
            "seconds": round(seconds, 2),
            "writes": len(latencies),
            "failed_writes": writes.failures.get(name, 0),
            "max_write_ms": round(1000 * max(latencies, default=0.0), 1),
            "p99_write_ms": round(1000 * _quantile(latencies, 0.99), 1),
            "median_write_ms": round(1000 * statistics.median(latencies), 2) if latencies else 0,
            "max_lock_wait_ms_sampled": round(1000 * writes.lock_waits.get(name, 0.0), 1),
            "lock_waits_on": sorted(writes.lock_kinds.get(name, set())),
        }
    yield {
        "metric": "migration_total",
        "rows": ROWS,
        "batch_size": BATCH_SIZE,
        "writers": WRITERS,
        "load_seconds": round(load_seconds, 2),
        "migration_seconds": round(sum(s for _, s in records), 2),
        "max_write_ms_during_migration": round(
            1000 * max((max(writes.latencies.get(n, [0.0])) for n, _ in records), default=0), 1
        ),
        "max_lock_wait_ms_sampled_during_migration": round(
            1000 * max((writes.lock_waits.get(n, 0.0) for n, _ in records), default=0), 1
        ),
        "total_writes": sum(len(v) for v in writes.latencies.values()),
        "failed_writes": sum(writes.failures.values()),
        "lost_writes": lost,
    }


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


BENCHMARKS: dict[str, Callable[[Kube, Path], Iterator[dict[str, Any]]]] = {
    "migration_1m_rows": migration_1m_rows,
}
