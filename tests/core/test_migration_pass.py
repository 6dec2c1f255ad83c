"""The SchemaMigration pass (`reconcile_migration`) on the API server in memory
(`pilotboat.testing.FakeKube`) and a database engine in memory.

A pass killed at any crash point (the process dies there: nothing after it happens) and
passes that follow apply every phase once: the handler never even asks the engine for a
phase the history holds, posts each "…Applied" Event once, and writes status at most once
per pass. The cluster tests kill a real operator at the same points against PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pilotboat import API_VERSION
from pilotboat.adapters.database import (
    DEFAULT_TIMEOUTS,
    BackfillProgress,
    DatabaseOwner,
    MigrationLocked,
    PhaseResult,
    Timeouts,
)
from pilotboat.core.migration import AppliedPhase, Approval, Phase, checksum
from pilotboat.handlers import migrations
from pilotboat.handlers.context import Reconcile
from pilotboat.testing import FakeKube

pytestmark = pytest.mark.core

NS = "shop"
T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
EXPAND = "ALTER TABLE orders ADD COLUMN customer text;"
BACKFILL = ("UPDATE orders SET customer = customer_name WHERE id IN "
            "(SELECT id FROM orders WHERE customer IS NULL LIMIT :batch_size)")
CONTRACT = "ALTER TABLE orders DROP COLUMN customer_name;"
ROWS = 25


class Crash(BaseException):
    """The process died at a crash point (a BaseException: nothing catches it)."""


class MemoryEngine:
    """The migration side of a DatabaseEngine in memory: a phase and its history row commit
    together; `asked` records every phase the handler asked to run."""

    def __init__(self) -> None:
        self.rows: list[AppliedPhase] = []
        self.asked: list[Phase] = []
        self.done_rows = 0
        self.batches = 0
        self.clock = T0
        self.locked = False

    def ensure_database(self, admin_dsn: str, dbname: str, role: str, password: str, *,
                        owner: DatabaseOwner, runtime_password: str, readonly_password: str,
                        runtime_schema_changes: bool = False) -> None:
        raise NotImplementedError("a migration pass never creates a database")

    def drop_database(self, admin_dsn: str, dbname: str, role: str, *,
                      owner: DatabaseOwner) -> None:
        raise NotImplementedError("a migration pass never drops a database")

    def history(self, dsn: str, migration: str) -> tuple[AppliedPhase, ...]:
        return tuple(self.rows)

    def apply_phase(self, dsn: str, migration: str, phase: Phase, sql: str, *,
                    applied_by: str, timeouts: Timeouts = DEFAULT_TIMEOUTS) -> PhaseResult:
        self.asked.append(phase)
        if self.locked:
            raise MigrationLocked(f"another runner holds the migration lock of {migration}")
        if any(r.phase is phase for r in self.rows):
            return PhaseResult(phase, checksum(sql), False, 0, 0)
        self.rows.append(AppliedPhase(phase, checksum(sql), self.clock, applied_by))
        return PhaseResult(phase, checksum(sql), True, 1, 1)

    def backfill(self, dsn: str, migration: str, sql: str, *, batch_size: int,
                 pause: timedelta, applied_by: str, timeouts: Timeouts = DEFAULT_TIMEOUTS,
                 max_batches: int | None = None) -> BackfillProgress:
        self.asked.append(Phase.BACKFILL)
        ran = 0
        while not any(r.phase is Phase.BACKFILL for r in self.rows):
            if max_batches is not None and ran >= max_batches:
                break
            batch = min(batch_size, ROWS - self.done_rows)
            self.done_rows += batch
            self.batches += 1
            ran += 1
            if batch == 0:
                self.rows.append(AppliedPhase(Phase.BACKFILL, checksum(sql), self.clock,
                                              applied_by))
        return self.backfill_progress(dsn, migration)

    def backfill_progress(self, dsn: str, migration: str) -> BackfillProgress:
        done = any(r.phase is Phase.BACKFILL for r in self.rows)
        return BackfillProgress(self.done_rows, self.batches, done)

    def verify(self, dsn: str, sql: str, *, timeouts: Timeouts = DEFAULT_TIMEOUTS) -> bool:
        return True


@pytest.fixture
def kube(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKube]:
    """The API server in memory with a Ready OwnedDatabase, one pod of the required version
    and a SchemaMigration; the owner DSN and the contract's approval are given."""
    fake = FakeKube()
    fake.create({"apiVersion": API_VERSION, "kind": "OwnedDatabase",
                 "metadata": {"name": "orders-db", "namespace": NS}, "spec": {}})
    fake.merge_patch("OwnedDatabase", NS, "orders-db", {"status": {"phase": "Ready"}},
                     subresource="status")
    labels = {migrations.LABEL_NAME: "orders", migrations.LABEL_VERSION: "v2"}
    fake.create({"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": "orders-v2-1", "namespace": NS, "labels": labels}})
    fake.merge_patch("Pod", NS, "orders-v2-1", {"status": {"phase": "Running"}},
                     subresource="status")
    fake.create({"apiVersion": API_VERSION, "kind": "SchemaMigration",
                 "metadata": {"name": "customer-column", "namespace": NS},
                 "spec": {"database": "orders-db",
                          "requiredBy": {"service": "orders", "version": "v2"},
                          "expand": {"sql": EXPAND},
                          "backfill": {"sql": BACKFILL, "batchSize": 10},
                          "contract": {"sql": CONTRACT, "soak": "1s"}}})
    monkeypatch.setattr(migrations, "owner_dsn", lambda *_: "postgresql://owner@db/orders")
    approved = {"contract": (Approval("alice", checksum(CONTRACT)),)}
    monkeypatch.setattr(migrations, "approvals_for", lambda *_: approved)
    yield fake


def arm(monkeypatch: pytest.MonkeyPatch, point: str | None) -> list[str]:
    """Make the first pass that reaches `point` die there; returns the points reached."""
    reached: list[str] = []

    def crash_point(name: str) -> None:
        reached.append(name)
        if name == point and reached.count(name) == 1:
            raise Crash(name)

    monkeypatch.setattr(migrations, "crash_point", crash_point)
    return reached


def run_passes(kube: FakeKube, engine: MemoryEngine, passes: int = 12) -> list[int]:
    """Passes 10 s apart until Contracted; the status writes of each pass."""
    writes = []
    for n in range(passes):
        engine.clock = T0 + timedelta(seconds=10 * n)
        body = kube.get("SchemaMigration", NS, "customer-column")
        assert body is not None
        before = len(kube.writes)
        try:
            migrations.reconcile_migration(kube, body, Reconcile.start(kube, body), engine,
                                           now=engine.clock)
        except Crash:
            pass
        writes.append(sum(1 for w in kube.writes[before:] if w.subresource == "status"))
        after = kube.get("SchemaMigration", NS, "customer-column") or {}
        if (after.get("status") or {}).get("phase") == "Contracted":
            break
    return writes


def applied_events(kube: FakeKube) -> list[str]:
    return sorted(e["reason"] for e in kube.list("Event", NS) if e["reason"].endswith("Applied"))


@pytest.mark.parametrize("point", [
    None, "migration.before-expand", "migration.after-expand",
    "migration.before-backfill-batch", "migration.after-backfill-batch",
    "migration.before-contract", "migration.after-contract", "migration.before-status",
])
def test_a_crash_at_any_point_applies_nothing_twice(
    kube: FakeKube, monkeypatch: pytest.MonkeyPatch, point: str | None
) -> None:
    reached = arm(monkeypatch, point)
    engine = MemoryEngine()
    writes = run_passes(kube, engine)
    assert point is None or point in reached
    status = (kube.get("SchemaMigration", NS, "customer-column") or {})["status"]
    assert status["phase"] == "Contracted"
    assert engine.asked == [Phase.EXPAND, Phase.BACKFILL, Phase.CONTRACT]
    assert [p["phase"] for p in status["appliedPhases"]] == ["expand", "backfill", "contract"]
    assert status["backfill"] == {"rowsProcessed": ROWS, "batches": 4, "done": True}
    assert applied_events(kube) == ["BackfillApplied", "ContractApplied", "ExpandApplied"]
    assert max(writes) <= 1


def test_a_locked_database_keeps_the_phase_and_looks_again(kube: FakeKube) -> None:
    engine = MemoryEngine()
    engine.locked = True
    body = kube.get("SchemaMigration", NS, "customer-column")
    assert body is not None
    again = migrations.reconcile_migration(kube, body, Reconcile.start(kube, body), engine,
                                           now=T0)
    status = (kube.get("SchemaMigration", NS, "customer-column") or {})["status"]
    assert again == 5.0
    assert status["phase"] == "Pending"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "MigrationLocked")
    assert engine.rows == []


def test_a_steady_state_pass_writes_nothing(kube: FakeKube) -> None:
    engine = MemoryEngine()
    run_passes(kube, engine)
    body: dict[str, Any] | None = kube.get("SchemaMigration", NS, "customer-column")
    assert body is not None
    before = len(kube.writes)
    migrations.reconcile_migration(kube, body, Reconcile.start(kube, body), engine,
                                   now=T0 + timedelta(hours=1))
    assert kube.writes[before:] == []
