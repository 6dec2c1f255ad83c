"""One SchemaMigration pass as a value: `plan_migration` and the functions the handler asks
before it (`verify_due`, `versions_seen`, `release_rolled_back`), as tables."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pilotboat.api.migration import BackfillProgress, SchemaMigrationStatus, VersionSeen
from pilotboat.core.migration import (
    AppliedPhase,
    Approval,
    BackfillSpec,
    ContractSpec,
    ExpandSpec,
    MigrationDefinition,
    Phase,
    ServiceVersion,
    checksum,
)
from pilotboat.core.migration_plan import (
    BATCHES_PER_PASS,
    DatabaseFailure,
    MigrationObservation,
    MigrationPlan,
    plan_migration,
    release_rolled_back,
    verify_due,
    versions_seen,
)

pytestmark = pytest.mark.core

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
LATER = T0 + timedelta(minutes=30)
EXPAND = "ALTER TABLE users ADD COLUMN full_name text;"
BACKFILL = ("UPDATE users SET full_name = name WHERE id IN "
            "(SELECT id FROM users WHERE full_name IS NULL LIMIT :batch_size)")
VERIFY = "SELECT count(*) = 0 FROM users WHERE full_name IS NULL"
CONTRACT = "ALTER TABLE users DROP COLUMN name;"
DOWN = "ALTER TABLE users DROP COLUMN IF EXISTS full_name;"

DEFINITION = MigrationDefinition(
    name="users-full-name",
    required_by=ServiceVersion("catalog", "v2"),
    expand=ExpandSpec(EXPAND, down=DOWN),
    backfill=BackfillSpec(BACKFILL, batch_size=500),
    verify_sql=VERIFY,
    contract=ContractSpec(CONTRACT, soak=timedelta(minutes=10)),
)
PAUSED = replace(DEFINITION, backfill=BackfillSpec(BACKFILL, 500, timedelta(seconds=2)))
ROLLBACK_DOWN = replace(DEFINITION, run_down_on_rollback=True)
UNSAFE = replace(DEFINITION, expand=ExpandSpec(CONTRACT))
EMPTY = SchemaMigrationStatus()


def applied(*phases: Phase, at: datetime = T0) -> tuple[AppliedPhase, ...]:
    return tuple(AppliedPhase(p, checksum(DEFINITION.sql_of(p) or ""), at, "pilotboat")
                 for p in phases)


def observed(history: tuple[AppliedPhase, ...] = (), now: datetime = T0, **kw: Any
             ) -> MigrationObservation:
    base: dict[str, Any] = {"definition": DEFINITION, "database": "users-db",
                            "database_ready": True, "history": history}
    return MigrationObservation("users-full-name", 3, kw.pop("status", EMPTY), now,
                                **{**base, **kw})


BOTH = applied(Phase.EXPAND, Phase.BACKFILL)
SEEN_V1 = SchemaMigrationStatus(versions_seen=[
    VersionSeen(version="v1", last_seen="2025-03-01T12:01:00Z", pods=0)])
GATES_HOLD: dict[str, Any] = {
    "running": {"v2": 3}, "status": SEEN_V1, "verify_result": True,
    "approvals": (Approval("alice", checksum(CONTRACT)),),
}
LOCKED = "another runner holds the migration lock of users-db"

# (id, observation, phase run, status.phase, Ready status, Ready reason, next look)
PLANS = [
    ("an invalid spec holds with its problem",
     MigrationObservation("m", 1, EMPTY, T0, spec_problem="spec.database: Field required"),
     None, "Failed", "False", "InvalidSpec", None),
    ("a database not ready holds and looks again",
     observed(database_ready=False), None, "Pending", "False", "DatabaseNotReady", 5.0),
    ("an empty history runs expand",
     observed(), Phase.EXPAND, "Expanding", "False", "ExpandPending", 0.0),
    ("backfill follows expand",
     observed(applied(Phase.EXPAND), running={"v1": 2}), Phase.BACKFILL,
     "BackfillRunning", "False", "BackfillPending", 0.0),
    ("a paused backfill looks again after the pause",
     observed(applied(Phase.EXPAND), definition=PAUSED), Phase.BACKFILL,
     "BackfillRunning", "False", "BackfillPending", 2.0),
    ("the old version still runs: wait for a change",
     observed(BOTH, LATER, running={"v1": 2, "v2": 1}), None,
     "Expanded", "False", "OldVersionsRunning", None),
    ("soaking: look again when the soak ends",
     observed(BOTH, T0 + timedelta(minutes=5), **GATES_HOLD), None,
     "AwaitingContract", "False", "Soaking", 6 * 60 + 0.5),
    ("verify false: ask again soon",
     observed(BOTH, LATER, **{**GATES_HOLD, "verify_result": False}), None,
     "AwaitingContract", "False", "VerifyFailed", 10.0),
    ("no approval: wait for one",
     observed(BOTH, LATER, **{**GATES_HOLD, "approvals": ()}), None,
     "AwaitingContract", "False", "NotApproved", None),
    ("every gate holds: contract runs",
     observed(BOTH, LATER, **GATES_HOLD), Phase.CONTRACT,
     "Contracting", "False", "GatesHold", 0.0),
    ("contracted is final",
     observed((*BOTH, *applied(Phase.CONTRACT)), LATER, **GATES_HOLD), None,
     "Contracted", "True", "Contracted", None),
    ("a rollback keeps expand by default",
     observed(applied(Phase.EXPAND), rolled_back=True), None,
     "RolledBack", "True", "RolloutRolledBack", None),
    ("a rollback runs down when asked",
     observed(applied(Phase.EXPAND), definition=ROLLBACK_DOWN, rolled_back=True), Phase.DOWN,
     "RolledBack", "True", "RolloutRolledBack", 0.0),
    ("unsafe SQL is refused before it runs",
     observed(definition=UNSAFE), None, "Failed", "False", "UnsafeSql", None),
    ("another runner's lock keeps the phase and looks again",
     observed(status=SchemaMigrationStatus(phase="Expanded"), failure=DatabaseFailure.LOCKED,
              failure_message=LOCKED), None, "Expanded", "False", "MigrationLocked", 5.0),
    ("an unreachable server keeps the phase and looks again",
     observed(failure=DatabaseFailure.UNREACHABLE, failure_message="connection refused"),
     None, "Pending", "False", "ServerUnreachable", 5.0),
    ("a failed phase is retried later",
     observed(failure=DatabaseFailure.FAILED, failure_message="syntax error"),
     None, "Failed", "False", "PhaseFailed", 30.0),
    ("a checksum mismatch the engine saw is final",
     observed(failure=DatabaseFailure.CHECKSUM_MISMATCH, failure_message="expand changed"),
     None, "Failed", "False", "ChecksumMismatch", None),
]


def ready(plan: MigrationPlan) -> tuple[str, str]:
    (cond,) = [c for c in plan.status.conditions if c.type == "Ready"]
    return cond.status, cond.reason


@pytest.mark.parametrize(("obs", "run", "phase", "status", "reason", "next_look"),
                         [case[1:] for case in PLANS], ids=[case[0] for case in PLANS])
def test_plans(obs: MigrationObservation, run: Phase | None, phase: str, status: str,
               reason: str, next_look: float | None) -> None:
    plan = plan_migration(obs)
    assert (plan.run.phase if plan.run else None) == run
    assert plan.status.phase == phase
    assert ready(plan) == (status, reason)
    assert plan.next_look == pytest.approx(next_look) if next_look is not None \
        else plan.next_look is None
    assert plan.status.observed_generation == obs.generation


def test_a_run_carries_what_the_engine_needs() -> None:
    contract = plan_migration(observed(BOTH, LATER, **GATES_HOLD)).run
    assert contract is not None
    assert (contract.migration, contract.sql) == ("users-full-name", CONTRACT)
    assert contract.applied_by == "pilotboat; contract approved by alice"
    assert (contract.lock_timeout, contract.statement_timeout) == (
        DEFINITION.lock_timeout, DEFINITION.statement_timeout)
    backfill = plan_migration(observed(applied(Phase.EXPAND))).run
    assert backfill is not None
    assert (backfill.batch_size, backfill.max_batches) == (500, BATCHES_PER_PASS)
    paused = plan_migration(observed(applied(Phase.EXPAND), definition=PAUSED)).run
    assert paused is not None and paused.max_batches == 1
    down = plan_migration(observed(applied(Phase.EXPAND), definition=ROLLBACK_DOWN,
                                   rolled_back=True)).run
    assert down is not None and (down.sql, down.applied_by) == (
        DOWN, "pilotboat; the rollout was rolled back")


def test_no_phase_the_history_holds_is_planned_again() -> None:
    for phases in [(), (Phase.EXPAND,), (Phase.EXPAND, Phase.BACKFILL),
                   (Phase.EXPAND, Phase.BACKFILL, Phase.CONTRACT), (Phase.EXPAND, Phase.DOWN)]:
        for extra in [{}, GATES_HOLD, {"rolled_back": True}]:
            for definition in (DEFINITION, ROLLBACK_DOWN, PAUSED):
                plan = plan_migration(observed(applied(*phases), LATER, definition=definition,
                                               **extra))
                assert plan.run is None or plan.run.phase not in phases, (phases, extra)


def test_a_phase_in_the_history_but_not_in_status_is_told_once_by_a_named_event() -> None:
    plan = plan_migration(observed(applied(Phase.EXPAND), running={"v1": 1}))
    told = [e for e in plan.events if e.reason == "ExpandApplied"]
    assert len(told) == 1 and told[0].once_key == f"applied/expand/{checksum(EXPAND)}"
    assert told[0].message == f"expand applied (checksum {checksum(EXPAND)[:12]}) by pilotboat"
    again = plan_migration(observed(applied(Phase.EXPAND), running={"v1": 1},
                                    status=plan.status))
    assert [e for e in again.events if e.reason == "ExpandApplied"] == []


def test_a_steady_state_plans_no_event_and_the_same_status() -> None:
    first = plan_migration(observed(BOTH, LATER, running={"v1": 2, "v2": 1}))
    assert {"OldVersionsRunning", "NotApproved"} <= {e.reason for e in first.events}
    second = plan_migration(observed(BOTH, LATER + timedelta(minutes=1),
                                     running={"v1": 2, "v2": 1}, status=first.status))
    assert second.events == ()
    assert second.status == first.status


def test_gates_that_stop_holding_are_told_and_sql_warnings_warn() -> None:
    plan = plan_migration(observed(definition=UNSAFE))
    by_reason = {e.reason: e for e in plan.events}
    assert by_reason["UnsafeSql"].warning
    assert by_reason["UnsafeSql"].message.startswith("SqlSafe: ")


def test_status_messages_carry_no_relative_time() -> None:
    plan = plan_migration(observed(BOTH, T0 + timedelta(minutes=5), **GATES_HOLD))
    soak = next(g for g in plan.status.gates if g.name == "SoakElapsed")
    assert soak.message == "soak of 10m ends at 12:11:00"
    texts = [plan.status.message or "", *(c.message for c in plan.status.conditions)]
    assert not [t for t in texts if "from now" in t]


def test_the_soak_counts_from_a_retired_version_only() -> None:
    """The gate and the next look agree on when the soak ends (one place computes it)."""
    only_v1 = replace(DEFINITION, contract=ContractSpec(CONTRACT, timedelta(minutes=10), ("v1",)))
    status = SchemaMigrationStatus(versions_seen=[
        VersionSeen(version="v1", last_seen="2025-03-01T12:04:00Z", pods=0),
        VersionSeen(version="v3", last_seen="2025-03-01T12:08:00Z", pods=0)])
    plan = plan_migration(observed(BOTH, T0 + timedelta(minutes=6), **{
        **GATES_HOLD, "status": status, "definition": only_v1}))
    soak = next(g for g in plan.status.gates if g.name == "SoakElapsed")
    assert soak.message == "soak of 10m ends at 12:14:00"
    assert plan.next_look == pytest.approx(8 * 60 + 0.5)


def test_a_hold_keeps_what_it_does_not_know() -> None:
    before = plan_migration(observed(BOTH, LATER, running={"v1": 2, "v2": 1},
                                     backfill=BackfillProgress(rows_processed=25, batches=2,
                                                               done=True)))
    held = plan_migration(observed(BOTH, LATER, status=before.status,
                                   failure=DatabaseFailure.UNREACHABLE,
                                   failure_message="connection refused"))
    assert held.status.gates == before.status.gates
    assert held.status.backfill == before.status.backfill
    assert held.status.phase == "Expanded"
    assert held.blocked == before.blocked and ("Approved", "NotApproved") in held.blocked


def test_final_states_keep_the_last_gates() -> None:
    waiting = plan_migration(observed(BOTH, LATER, **GATES_HOLD))
    done = plan_migration(observed((*BOTH, *applied(Phase.CONTRACT)), LATER,
                                   **{**GATES_HOLD, "status": waiting.status}))
    assert done.status.gates == waiting.status.gates
    assert [p.phase for p in done.status.applied_phases] == ["expand", "backfill", "contract"]


# --- what the handler asks before the plan --------------------------------------------------

VERIFY_DUE = [
    ("no definition", MigrationObservation("m", 1, EMPTY, T0), False),
    ("before expand", observed(), False),
    ("backfill not done", observed(applied(Phase.EXPAND)), False),
    ("old version runs", observed(BOTH, LATER, running={"v1": 1, "v2": 1}), False),
    ("soaking", observed(BOTH, T0 + timedelta(minutes=5), running={"v2": 1}), False),
    ("the gates before it hold", observed(BOTH, LATER, running={"v2": 1}), True),
    ("already answered", observed(BOTH, LATER, running={"v2": 1}, verify_result=False), False),
    ("no verify query", observed(BOTH, LATER, running={"v2": 1},
                                 definition=replace(DEFINITION, verify_sql=None)), False),
    ("rolled back", observed(BOTH, LATER, running={"v2": 1}, rolled_back=True), False),
]


@pytest.mark.parametrize(("obs", "due"), [c[1:] for c in VERIFY_DUE],
                         ids=[c[0] for c in VERIFY_DUE])
def test_verify_due(obs: MigrationObservation, due: bool) -> None:
    assert verify_due(obs) is due


SEEN = [VersionSeen(version="v1", last_seen="2025-03-01T11:00:00Z", pods=2),
        VersionSeen(version="v0", last_seen="2025-03-01T10:00:00Z", pods=0)]
# (id, running, versionsSeen after, versions gone and when)
VERSIONS = [
    ("same counts change nothing", {"v1": 2}, SEEN,
     {"v0": datetime(2025, 3, 1, 10, tzinfo=UTC)}),
    ("a count that changed is seen now", {"v1": 1, "v2": 1},
     [SEEN[1], VersionSeen(version="v1", last_seen="2025-03-01T12:00:00Z", pods=1),
      VersionSeen(version="v2", last_seen="2025-03-01T12:00:00Z", pods=1)],
     {"v0": datetime(2025, 3, 1, 10, tzinfo=UTC)}),
    ("a version that went is gone from now on", {},
     [SEEN[1], VersionSeen(version="v1", last_seen="2025-03-01T12:00:00Z", pods=0)],
     {"v0": datetime(2025, 3, 1, 10, tzinfo=UTC), "v1": T0}),
]


@pytest.mark.parametrize(("running", "after", "gone"), [c[1:] for c in VERSIONS],
                         ids=[c[0] for c in VERSIONS])
def test_versions_seen(running: dict[str, int], after: list[VersionSeen],
                       gone: dict[str, datetime]) -> None:
    assert versions_seen(SEEN, running, T0) == (sorted(after, key=lambda e: e.version), gone)


@pytest.mark.parametrize(("status", "rolled_back"), [
    ({"phase": "Degraded", "canaryVersion": "v2"}, True),
    ({"phase": "Degraded", "canaryVersion": "v3"}, False),
    ({"phase": "Progressing", "canaryVersion": "v2"}, False),
    ({}, False),
])
def test_release_rolled_back(status: dict[str, str], rolled_back: bool) -> None:
    assert release_rolled_back(status, ServiceVersion("catalog", "v2")) is rolled_back
