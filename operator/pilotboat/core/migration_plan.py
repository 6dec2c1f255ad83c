"""One pass over a SchemaMigration as a value: what was observed in, what to do out.

`plan_migration(observation) -> MigrationPlan` is the whole decision of a pass. The handler
gathers one :class:`MigrationObservation` (the spec as a :class:`MigrationDefinition`, the
trusted status as its model, the database's history and backfill progress, the pods per
version of the required service, the approvals, whether the release that needs the
migration was rolled back, the verify query's answer when :func:`verify_due` says it is due,
the time), asks for the plan, and applies it: at most one phase (:class:`PhaseRun`), then the
Events, then the status once, and when to look again. Nothing here reads a clock, the API
server or the database.

Crash safety rests on the database, not here: the engine commits a phase with its history
row, under an advisory lock, and refuses a phase the history already holds. A plan is made
from the history *before* its phase runs, so the pass that runs a phase reports the state
it started from and looks again at once; the next pass reports what the history says then.
Its "…Applied" Event has a name derived from the phase and its checksum
(:attr:`MigrationEvent.once_key`): a pass repeated after a crash posts it once.

Status messages carry no relative time ("3s from now"): a status that changed on every pass
would wake the watch that triggers the next pass. Time-based waits (the soak, a paused
backfill, a failing verify query) are :attr:`MigrationPlan.next_look` instead.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from pilotboat.api.migration import (
    BackfillProgress,
    GateStatus,
    SchemaMigrationStatus,
    VersionSeen,
)
from pilotboat.core import reasons
from pilotboat.core.conditions import DesiredCondition, find_condition, flipped, set_conditions
from pilotboat.core.migration import (
    Action,
    AppliedPhase,
    Approval,
    GateName,
    MigrationDecision,
    MigrationDefinition,
    MigrationObservations,
    MigrationPhase,
    Phase,
    ServiceVersion,
    checksum,
    decide,
    lint_migration,
    soak_ends,
)

__all__ = [
    "BATCHES_PER_PASS",
    "DatabaseFailure",
    "MigrationEvent",
    "MigrationObservation",
    "MigrationPlan",
    "PhaseRun",
    "plan_migration",
    "release_rolled_back",
    "verify_due",
    "versions_seen",
]

DATABASE_RECHECK_SECONDS = 5.0
"""The OwnedDatabase is not ready, the server is unreachable or another runner has the lock."""
FAILED_RETRY_SECONDS = 30.0
VERIFY_RECHECK_SECONDS = 10.0
"""A failing verify query is asked again after this long (the data may be fixed)."""
SOAK_MARGIN_SECONDS = 0.5
BATCHES_PER_PASS = 50
"""Backfill batches one pass runs when no pause is asked for between them."""


class DatabaseFailure(StrEnum):
    """What the database said instead of doing what the pass asked (its Ready reason)."""

    CHECKSUM_MISMATCH = reasons.CHECKSUM_MISMATCH
    LOCKED = reasons.MIGRATION_LOCKED
    UNREACHABLE = reasons.SERVER_UNREACHABLE
    FAILED = reasons.PHASE_FAILED


@dataclass(frozen=True)
class MigrationObservation:
    """Everything one pass knows about a SchemaMigration."""

    name: str
    generation: int
    status: SchemaMigrationStatus
    """The status fields the operator wrote itself (a forged field reads as absent)."""
    now: _dt.datetime
    definition: MigrationDefinition | None = None
    spec_problem: str | None = None
    """Why the spec cannot be used (the definition is None then)."""
    database: str = ""
    """The OwnedDatabase's name."""
    database_ready: bool = False
    """It is Ready and its owner credentials can be read: the engine can be asked."""
    history: tuple[AppliedPhase, ...] = ()
    """The database's history rows of this migration: the truth about what ran."""
    backfill: BackfillProgress | None = None
    """The backfill's progress, when the definition has one."""
    running: Mapping[str, int] = field(default_factory=dict)
    """Pods per version of the required service."""
    approvals: tuple[Approval, ...] = ()
    """The contract's approvals (void ones too)."""
    approved_phases: frozenset[str] = frozenset()
    rolled_back: bool = False
    """The release that needs the migration was rolled back (:func:`release_rolled_back`)."""
    verify_result: bool | None = None
    """The verify query's answer, asked only when :func:`verify_due`."""
    failure: DatabaseFailure | None = None
    """The database refused this pass (reading, verifying or running a phase)."""
    failure_message: str = ""


@dataclass(frozen=True)
class PhaseRun:
    """One phase for the engine to run (a backfill: up to ``max_batches`` batches of it)."""

    migration: str
    phase: Phase
    sql: str
    applied_by: str
    lock_timeout: _dt.timedelta
    statement_timeout: _dt.timedelta
    batch_size: int = 0
    pause: _dt.timedelta = _dt.timedelta(0)
    max_batches: int | None = None


@dataclass(frozen=True)
class MigrationEvent:
    reason: str
    message: str
    warning: bool = False
    once_key: str | None = None
    """Set for an Event whose name derives from it: posting it twice posts it once."""


@dataclass(frozen=True)
class MigrationPlan:
    """What one pass does, in order: `run`, then `events`, then `status` (written once)."""

    status: SchemaMigrationStatus
    run: PhaseRun | None = None
    events: tuple[MigrationEvent, ...] = ()
    next_look: float | None = None
    """Seconds until time alone can change the plan (None: only a change will)."""

    @property
    def blocked(self) -> tuple[tuple[str, str], ...]:
        """(gate, reason) of each gate that holds the contract: the metrics' input."""
        return tuple((g.name, g.reason) for g in self.status.gates if not g.holds)


# --- observations the plan needs before the pass -------------------------------------------


def release_rolled_back(status: Mapping[str, Any], required: ServiceVersion) -> bool:
    """Whether the release of ``required`` was rolled back, by its Microservice's status
    (only the fields the operator wrote: a forged phase could otherwise run ``down``)."""
    return bool(
        status.get("phase") == "Degraded" and status.get("canaryVersion") == required.version
    )


def verify_due(obs: MigrationObservation) -> bool:
    """Whether the pass should ask the verify query: it is defined, not answered yet, and
    every gate before it holds (expand applied, old versions gone, soak elapsed)."""
    if obs.definition is None:
        return False
    _, inputs = _inputs(obs)
    return decide(obs.definition, obs.history, inputs, obs.now).action is Action.RUN_VERIFY


def versions_seen(
    previous: Sequence[VersionSeen], running: Mapping[str, int], now: _dt.datetime
) -> tuple[list[VersionSeen], dict[str, _dt.datetime]]:
    """The ``status.versionsSeen`` to write, and the last sightings of versions now gone.

    An entry changes only when a version's pod count changes, so a steady state writes
    nothing; the sighting of a version that has gone is when it was first seen gone, which
    is never earlier than when it really went: the soak is never shortened.
    """
    old = {e.version: e for e in previous}
    entries: dict[str, VersionSeen] = {}
    for version in sorted({*old, *running}):
        count = running.get(version, 0)
        before = old.get(version)
        same = before is not None and before.pods == count
        entries[version] = (
            before if before is not None and same
            else VersionSeen(version=version, last_seen=_rfc3339(now), pods=count)
        )  # fmt: skip
    gone = {v: _parse_time(e.last_seen) for v, e in entries.items() if e.pods == 0}
    return [entries[v] for v in sorted(entries)], gone


# --- the plan --------------------------------------------------------------------------------


def plan_migration(obs: MigrationObservation) -> MigrationPlan:
    """The whole of one pass: the first hold that applies, else the migration's next step.

    Holds, in order: an unusable spec; a database not ready; the database refusing the pass.
    Otherwise :func:`pilotboat.core.migration.decide` says what runs (at most one phase) and
    the status is rebuilt from the history, never accumulated, so it cannot drift.
    """
    if obs.definition is None:
        return _hold(obs, reasons.INVALID_SPEC, obs.spec_problem or "the spec is invalid",
                     "Failed", None, warn=True)  # fmt: skip
    if not obs.database_ready:
        return _hold(obs, reasons.DATABASE_NOT_READY,
                     f"OwnedDatabase {obs.database} is not ready", "Pending",
                     DATABASE_RECHECK_SECONDS)  # fmt: skip
    if obs.failure is not None:
        return _failed(obs, obs.failure)
    return _step(obs, obs.definition)


def _failed(obs: MigrationObservation, failure: DatabaseFailure) -> MigrationPlan:
    """The database refused: Failed for a phase that failed or changed, the phase as it was
    while the server is unreachable or another runner holds the lock."""
    same = obs.status.phase or "Pending"
    message = obs.failure_message
    if failure is DatabaseFailure.CHECKSUM_MISMATCH:
        return _hold(obs, failure.value, message, "Failed", None, warn=True)
    if failure is DatabaseFailure.FAILED:
        message = f"{message} (retrying in {FAILED_RETRY_SECONDS:g}s)"
        return _hold(obs, failure.value, message, "Failed", FAILED_RETRY_SECONDS, warn=True)
    return _hold(obs, failure.value, message, same, DATABASE_RECHECK_SECONDS)


def _hold(
    obs: MigrationObservation,
    reason: str,
    message: str,
    phase: str,
    next_look: float | None,
    *,
    warn: bool = False,
) -> MigrationPlan:
    """Status only: `Ready=False <reason>`, the phase and the message; the rest as it was."""
    desired = [DesiredCondition(reasons.READY, "False", reason, message)]
    fields = {"observedGeneration": obs.generation, "phase": phase, "message": message}
    status = _status(obs, desired, fields)
    return MigrationPlan(status, events=_flips(obs, desired, warn=warn), next_look=next_look)


def _inputs(obs: MigrationObservation) -> tuple[list[VersionSeen], MigrationObservations]:
    seen, gone = versions_seen(obs.status.versions_seen, obs.running, obs.now)
    return seen, MigrationObservations(
        running=obs.running,
        last_seen=gone,
        verify_result=obs.verify_result,
        approvals=obs.approvals,
        approved_phases=obs.approved_phases,
        rolled_back=obs.rolled_back,
    )


def _step(obs: MigrationObservation, definition: MigrationDefinition) -> MigrationPlan:
    seen, inputs = _inputs(obs)
    decision = decide(definition, obs.history, inputs, obs.now)
    conditions = _conditions(definition, obs.history, decision)
    gates = [
        GateStatus(name=str(g.name), holds=g.holds, reason=g.reason, message=g.message)
        for g in decision.gates
    ]
    fields: dict[str, Any] = {
        "observedGeneration": obs.generation,
        "phase": str(decision.phase),
        "message": decision.message,
        "appliedPhases": [_applied(e) for e in obs.history],
        "checksums": _checksums(definition, obs.history),
        "versionsSeen": seen,
        # Final states have no gates: the last ones evaluated stay.
        "gates": gates or obs.status.gates,
        "backfill": obs.backfill or obs.status.backfill,
    }
    status = _status(obs, conditions, fields)
    applied = _applied_events(obs)
    warn = decision.action is Action.REFUSE
    events = applied + _gate_events(obs, conditions)
    events += _flips(obs, conditions, warn=warn, emitted=events)
    run = _phase_run(definition, decision)
    return MigrationPlan(status, run, events, _next_look(definition, obs, inputs, decision, run))


def _phase_run(definition: MigrationDefinition, decision: MigrationDecision) -> PhaseRun | None:
    """The phase the decision runs, with what the engine needs to run it."""
    run = PhaseRun(
        definition.name, Phase.EXPAND, definition.expand.sql, "pilotboat",
        definition.lock_timeout, definition.statement_timeout,
    )  # fmt: skip
    backfill = definition.backfill
    if decision.action is Action.APPLY_EXPAND:
        return run
    if decision.action is Action.RUN_BACKFILL_BATCH and backfill is not None:
        paused = backfill.pause > _dt.timedelta(0)
        return replace(run, phase=Phase.BACKFILL, sql=backfill.sql,
                       batch_size=backfill.batch_size, pause=backfill.pause,
                       max_batches=1 if paused else BATCHES_PER_PASS)  # fmt: skip
    if decision.action is Action.APPLY_CONTRACT:
        approvers = decision.gate(GateName.APPROVED).message
        return replace(run, phase=Phase.CONTRACT, sql=definition.contract.sql,
                       applied_by=f"pilotboat; {approvers}")  # fmt: skip
    if decision.action is Action.APPLY_DOWN:
        return replace(run, phase=Phase.DOWN, sql=definition.expand.down or "",
                       applied_by="pilotboat; the rollout was rolled back")  # fmt: skip
    return None


def _next_look(
    definition: MigrationDefinition,
    obs: MigrationObservation,
    inputs: MigrationObservations,
    decision: MigrationDecision,
    run: PhaseRun | None,
) -> float | None:
    """At once after a phase (after the pause, between a paused backfill's batches); when
    the soak ends; soon again while the verify query says false; else on the next change."""
    if run is not None:
        return run.pause.total_seconds()
    if decision.action is not Action.WAIT or not decision.gates:
        return None
    soak = decision.gate(GateName.SOAK_ELAPSED)
    ends = soak_ends(definition, {e.phase: e for e in obs.history}, inputs.last_seen)
    if not soak.holds and soak.reason == reasons.SOAKING and ends is not None:
        return max((ends - obs.now).total_seconds(), 0.0) + SOAK_MARGIN_SECONDS
    if decision.gate(GateName.VERIFY_HOLDS).reason == reasons.VERIFY_FAILED:
        return VERIFY_RECHECK_SECONDS
    return None


# --- status ----------------------------------------------------------------------------------


def _applied(entry: AppliedPhase) -> dict[str, Any]:
    return {
        "phase": str(entry.phase),
        "checksum": entry.checksum,
        "appliedAt": _rfc3339(entry.applied_at),
        "appliedBy": entry.applied_by,
    }


def _checksums(
    definition: MigrationDefinition, history: tuple[AppliedPhase, ...]
) -> dict[str, str]:
    """The expand checksum as applied (the SQL's own until it is), the contract's as now."""
    applied = {e.phase: e.checksum for e in history}
    return {
        "expand": applied.get(Phase.EXPAND) or checksum(definition.expand.sql),
        "contract": checksum(definition.contract.sql),
    }


def _lint_condition(definition: MigrationDefinition, applied: set[Phase]) -> DesiredCondition:
    findings = [f for f in lint_migration(definition) if f.phase not in {str(p) for p in applied}]
    refused = [f for f in findings if f.refuses]
    text = "; ".join(f"{f.phase}: {f.rule}: {f.message}: {f.statement}" for f in findings)
    if refused:
        return DesiredCondition(reasons.SQL_SAFE, "False", reasons.UNSAFE_SQL, text)
    if findings:
        return DesiredCondition(reasons.SQL_SAFE, "True", reasons.SQL_WARNINGS, text)
    return DesiredCondition(reasons.SQL_SAFE, "True", reasons.SQL_CLEAN, "no lint findings")


def _conditions(
    definition: MigrationDefinition,
    history: tuple[AppliedPhase, ...],
    decision: MigrationDecision,
) -> list[DesiredCondition]:
    """One condition per gate, SqlSafe, and Ready (True once contracted or rolled back)."""
    done = decision.phase in (MigrationPhase.CONTRACTED, MigrationPhase.ROLLED_BACK)
    return [
        *(
            DesiredCondition(str(g.name), "True" if g.holds else "False", g.reason, g.message)
            for g in decision.gates
        ),
        _lint_condition(definition, {e.phase for e in history}),
        DesiredCondition(
            reasons.READY, "True" if done else "False", decision.reason, decision.message
        ),
    ]


def _dump(status: SchemaMigrationStatus) -> dict[str, Any]:
    dumped: dict[str, Any] = status.model_dump(by_alias=True, exclude_none=True, mode="json")
    return dumped


def _status(
    obs: MigrationObservation, desired: Sequence[DesiredCondition], fields: Mapping[str, Any]
) -> SchemaMigrationStatus:
    """The observed status with `fields` (by their wire names) set and `desired` merged into
    its conditions (a transition time moves only when a condition's status flips)."""
    before = _dump(obs.status)
    conditions = set_conditions(
        before.get("conditions"), desired, generation=obs.generation, now=_rfc3339(obs.now)
    )
    wire = {k: _wire(v) for k, v in fields.items()}
    return SchemaMigrationStatus.model_validate({**before, **wire, "conditions": conditions})


def _wire(value: Any) -> Any:
    if isinstance(value, list):
        return [_wire(v) for v in value]
    if hasattr(value, "model_dump"):
        return value.model_dump(by_alias=True, exclude_none=True, mode="json")
    return value


# --- events ----------------------------------------------------------------------------------


def _applied_events(obs: MigrationObservation) -> tuple[MigrationEvent, ...]:
    """An Event "<Phase>Applied" for each history row the status does not list yet."""
    recorded = {p.phase for p in obs.status.applied_phases}
    return tuple(
        MigrationEvent(
            reasons.phase_applied(str(e.phase)),
            f"{e.phase} applied (checksum {e.checksum[:12]}) by {e.applied_by}",
            once_key=f"applied/{e.phase}/{e.checksum}",
        )
        for e in obs.history
        if str(e.phase) not in recorded
    )


def _gate_events(
    obs: MigrationObservation, desired: Sequence[DesiredCondition]
) -> tuple[MigrationEvent, ...]:
    """An Event when a gate (or SqlSafe) stops holding, or holds back for another reason."""
    old = _dump(obs.status).get("conditions")
    events = []
    for want in desired:
        if want.type == reasons.READY or want.status == "True":
            continue
        before = find_condition(old, want.type) or {}
        if (before.get("status"), before.get("reason")) != (want.status, want.reason):
            events.append(MigrationEvent(want.reason, f"{want.type}: {want.message}",
                                         warning=want.type == reasons.SQL_SAFE))  # fmt: skip
    return tuple(events)


def _flips(
    obs: MigrationObservation,
    desired: Sequence[DesiredCondition],
    *,
    warn: bool,
    emitted: Sequence[MigrationEvent] = (),
) -> tuple[MigrationEvent, ...]:
    """An Event when `Ready` (or, with `warn`, any condition) changes status or reason,
    unless an Event of that reason is already part of the pass."""
    changes = flipped(_dump(obs.status).get("conditions"), desired, warn=warn,
                      seen_reasons=(e.reason for e in emitted))  # fmt: skip
    return tuple(MigrationEvent(c.reason, c.message, warning=w) for c, w in changes)


def _rfc3339(at: _dt.datetime) -> str:
    return at.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str) -> _dt.datetime:
    return _dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.UTC)
