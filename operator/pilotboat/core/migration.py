"""Expand/contract migrations: which phase runs next, and why the others wait.

A migration goes ``expand`` → ``backfill`` (optional) → gates → ``contract``. Expand runs as
soon as the migration exists, before the rollout that needs it; contract runs only when
every gate holds:

==============  ==================================================================
gate            holds when
==============  ==================================================================
ExpandApplied   expand (and backfill, if defined) are in the history
OldVersionsGone no pod of a retired version runs, and the required version does
SoakElapsed     ``contract.soak`` has passed since expand/backfill were applied and
                since a retired version was last seen running
VerifyHolds     no verify query is defined, or it returned true
Approved        a MigrationApproval approved the *current* contract checksum
==============  ==================================================================

If the rollout that needed the migration was rolled back, contract never runs; ``down``
runs instead when ``runDownOnRollback`` asks for it.

Checksums are the sha256 (hex) of a phase's *normalized* SQL: line endings become ``\\n``,
trailing whitespace is stripped from every line, and blank lines before the first and after
the last non-blank line are dropped. Nothing else changes: a changed comment or a changed
indentation at the start of a line is a changed migration. Normalizing no further keeps the
rule easy to check by hand (``sed 's/[ \\t]*$//' | sha256sum`` on a trimmed file).

A phase already applied whose SQL has since changed makes the decision ``Refuse`` with reason
``ChecksumMismatch``: the database no longer matches what the resource says.

Everything here is pure: time comes in as ``now``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from pilotboat.core import reasons

if TYPE_CHECKING:
    # The linter (pglast) is loaded by the first lint, not by importing this module: an
    # operator with no SchemaMigration never pays for the parser.
    from pilotboat.core.sqllint import LintFinding

__all__ = [
    "Action",
    "AppliedPhase",
    "Approval",
    "BackfillSpec",
    "ContractSpec",
    "ExpandSpec",
    "GateName",
    "GateVerdict",
    "MigrationDecision",
    "MigrationDefinition",
    "MigrationObservations",
    "MigrationPhase",
    "Phase",
    "ServiceVersion",
    "checksum",
    "decide",
    "lint_migration",
    "normalize_sql",
    "phase_order_violation",
    "soak_ends",
]


class Phase(StrEnum):
    """A phase that changes the database and is recorded in the history."""

    EXPAND = "expand"
    BACKFILL = "backfill"
    CONTRACT = "contract"
    DOWN = "down"


class Action(StrEnum):
    APPLY_EXPAND = "ApplyExpand"
    RUN_BACKFILL_BATCH = "RunBackfillBatch"
    RUN_VERIFY = "RunVerify"
    APPLY_CONTRACT = "ApplyContract"
    APPLY_DOWN = "ApplyDown"
    WAIT = "Wait"
    REFUSE = "Refuse"


class MigrationPhase(StrEnum):
    """``status.phase`` of a SchemaMigration."""

    PENDING = "Pending"
    EXPANDING = "Expanding"
    EXPANDED = "Expanded"
    BACKFILL_RUNNING = "BackfillRunning"
    AWAITING_CONTRACT = "AwaitingContract"
    CONTRACTING = "Contracting"
    CONTRACTED = "Contracted"
    FAILED = "Failed"
    ROLLED_BACK = "RolledBack"


class GateName(StrEnum):
    EXPAND_APPLIED = "ExpandApplied"
    OLD_VERSIONS_GONE = "OldVersionsGone"
    SOAK_ELAPSED = "SoakElapsed"
    VERIFY_HOLDS = "VerifyHolds"
    APPROVED = "Approved"


# --- inputs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceVersion:
    service: str
    version: str


@dataclass(frozen=True)
class ExpandSpec:
    sql: str
    down: str | None = None


@dataclass(frozen=True)
class BackfillSpec:
    sql: str
    batch_size: int = 1000
    pause: timedelta = timedelta(0)


@dataclass(frozen=True)
class ContractSpec:
    sql: str
    soak: timedelta = timedelta(0)
    retired_versions: tuple[str, ...] | None = None
    """Versions that must be gone; None means every version except ``required_by.version``."""


@dataclass(frozen=True)
class MigrationDefinition:
    """What a SchemaMigration's spec asks for (the handler maps the resource onto it)."""

    name: str
    required_by: ServiceVersion
    expand: ExpandSpec
    contract: ContractSpec
    backfill: BackfillSpec | None = None
    verify_sql: str | None = None
    run_down_on_rollback: bool = False
    lock_timeout: timedelta = timedelta(seconds=5)
    statement_timeout: timedelta = timedelta(minutes=5)

    def sql_of(self, phase: Phase) -> str | None:
        """The SQL a phase runs, or None when the definition has no such phase."""
        if phase is Phase.EXPAND:
            return self.expand.sql
        if phase is Phase.BACKFILL:
            return self.backfill.sql if self.backfill else None
        if phase is Phase.CONTRACT:
            return self.contract.sql
        return self.expand.down


@dataclass(frozen=True)
class AppliedPhase:
    """One row of the database's history table."""

    phase: Phase
    checksum: str
    applied_at: datetime
    applied_by: str = ""


@dataclass(frozen=True)
class Approval:
    approver: str
    checksum: str
    """The contract checksum the approver saw; a different one makes the approval void."""


@dataclass(frozen=True)
class MigrationObservations:
    """What the handler saw just before asking.

    ``running`` counts pods per version of ``required_by.service`` (from ReplicaSets/Pods);
    ``last_seen`` is when each version was last seen running (kept in status across
    reconciles); ``verify_result`` is the verify query's answer for the current contract, or
    None when it has not been run since expand/backfill completed.
    """

    running: Mapping[str, int] = field(default_factory=dict)
    last_seen: Mapping[str, datetime] = field(default_factory=dict)
    verify_result: bool | None = None
    approvals: tuple[Approval, ...] = ()
    approved_phases: frozenset[str] = frozenset()
    """Phases whose SQL a valid approval covers: their findings that need approval pass."""
    rolled_back: bool = False


# --- outputs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class GateVerdict:
    name: GateName
    holds: bool
    reason: str
    message: str


@dataclass(frozen=True)
class MigrationDecision:
    action: Action
    phase: MigrationPhase
    reason: str
    message: str
    gates: tuple[GateVerdict, ...] = ()
    findings: tuple[LintFinding, ...] = ()

    def gate(self, name: GateName) -> GateVerdict:
        return next(g for g in self.gates if g.name is name)


# --- checksums -------------------------------------------------------------------------------


def normalize_sql(sql: str) -> str:
    """The text a checksum is taken of.

    >>> normalize_sql("\\n\\n  ALTER TABLE t ADD COLUMN c int;   \\r\\n\\n  ")
    '  ALTER TABLE t ADD COLUMN c int;'
    """
    lines = [line.rstrip() for line in sql.splitlines()]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def checksum(sql: str) -> str:
    """sha256 (hex) of :func:`normalize_sql`.

    >>> checksum("SELECT 1;  \\n") == checksum("\\nSELECT 1;")
    True
    >>> checksum("select 1;") == checksum("SELECT 1;")
    False
    """
    return hashlib.sha256(normalize_sql(sql).encode()).hexdigest()


def lint_migration(definition: MigrationDefinition) -> tuple[LintFinding, ...]:
    """Every finding of every phase of the definition, expand first."""
    from pilotboat.core.sqllint import (
        lint_backfill,
        lint_contract,
        lint_down,
        lint_expand,
        lint_verify,
    )

    findings = list(lint_expand(definition.expand.sql))
    if definition.expand.down is not None:
        findings += lint_down(definition.expand.down)
    if definition.backfill is not None:
        findings += lint_backfill(definition.backfill.sql)
    if definition.verify_sql is not None:
        findings += lint_verify(definition.verify_sql)
    findings += lint_contract(definition.contract.sql)
    return tuple(findings)


def phase_order_violation(phase: Phase, applied: frozenset[Phase]) -> str | None:
    """Why ``phase`` may not be applied after ``applied``, or None when it may.

    The runner checks this too, so a bug in a caller cannot contract before expanding.

    >>> phase_order_violation(Phase.CONTRACT, frozenset())
    'contract needs expand applied first'
    >>> phase_order_violation(Phase.DOWN, frozenset({Phase.EXPAND, Phase.CONTRACT}))
    'down cannot run after contract'
    >>> phase_order_violation(Phase.BACKFILL, frozenset({Phase.EXPAND})) is None
    True
    """
    if phase is not Phase.EXPAND and Phase.EXPAND not in applied:
        return f"{phase} needs expand applied first"
    if phase is Phase.DOWN and Phase.CONTRACT in applied:
        return "down cannot run after contract"
    if phase is not Phase.DOWN and Phase.DOWN in applied:
        return f"{phase} cannot run after down"
    if phase is Phase.BACKFILL and Phase.CONTRACT in applied:
        return "backfill cannot run after contract"
    return None


# --- the decision ----------------------------------------------------------------------------


def decide(
    definition: MigrationDefinition,
    history: tuple[AppliedPhase, ...],
    observations: MigrationObservations,
    now: datetime,
) -> MigrationDecision:
    """The next thing to do for one migration.

    Worked examples (``v1`` is old, ``v2`` needs the migration; see the tests for the table):

    * empty history → ``ApplyExpand``, phase ``Expanding``;
    * expand applied, a backfill defined and not applied → ``RunBackfillBatch``;
    * expand applied, ``v1`` runs in 2 pods → ``Wait``, phase ``Expanded``, gate
      OldVersionsGone says "version v1 still runs in 2 pods (last seen 12:03:10)";
    * ``v1`` gone, soak passed, verify true, an approval of the current contract checksum →
      ``ApplyContract``, phase ``Contracting``;
    * the same but the approval names another checksum → ``Wait``, gate Approved says the
      approval is void;
    * the rollout was rolled back and ``runDownOnRollback`` → ``ApplyDown``;
    * the expand SQL changed after it was applied → ``Refuse``, reason ``ChecksumMismatch``.
    """
    applied = {entry.phase: entry for entry in history}
    mismatch = _checksum_mismatch(definition, history)
    if mismatch is not None:
        return mismatch
    if Phase.DOWN in applied:
        return _decision(
            Action.WAIT,
            MigrationPhase.ROLLED_BACK,
            reasons.DOWN_APPLIED,
            f"down was applied at {_clock(applied[Phase.DOWN].applied_at)}",
        )
    if Phase.CONTRACT in applied:
        return _decision(
            Action.WAIT,
            MigrationPhase.CONTRACTED,
            reasons.CONTRACTED,
            f"contract was applied at {_clock(applied[Phase.CONTRACT].applied_at)}",
        )
    if observations.rolled_back:
        return _after_rollback(definition, applied)
    from pilotboat.core.sqllint import blocking

    findings = lint_migration(definition)
    # Findings about phases already applied are history; the rest can still be stopped.
    refused = [
        f for f in blocking(findings, observations.approved_phases) if f.phase not in set(applied)
    ]
    if refused:
        return MigrationDecision(
            Action.REFUSE,
            MigrationPhase.FAILED,
            reasons.UNSAFE_SQL,
            "; ".join(f"{f.phase}: {f.rule}: {f.statement}" for f in refused),
            findings=findings,
        )
    gates = evaluate_gates(definition, applied, observations, now)
    return _next_step(definition, applied, observations, gates, findings)


def evaluate_gates(
    definition: MigrationDefinition,
    applied: Mapping[Phase, AppliedPhase],
    observations: MigrationObservations,
    now: datetime,
) -> tuple[GateVerdict, ...]:
    """The five gates, in order, each with a reason and a message for people."""
    before = (
        _expand_applied(definition, applied),
        _old_versions_gone(definition, observations),
        _soak_elapsed(definition, applied, observations, now),
    )
    verify = _verify_holds(definition, observations, runs=all(g.holds for g in before))
    return (*before, verify, _approved(definition, observations))


def _next_step(
    definition: MigrationDefinition,
    applied: Mapping[Phase, AppliedPhase],
    observations: MigrationObservations,
    gates: tuple[GateVerdict, ...],
    findings: tuple[LintFinding, ...],
) -> MigrationDecision:
    def decision(
        action: Action, phase: MigrationPhase, reason: str, message: str
    ) -> MigrationDecision:
        return MigrationDecision(action, phase, reason, message, gates, findings)

    if Phase.EXPAND not in applied:
        return decision(
            Action.APPLY_EXPAND,
            MigrationPhase.EXPANDING,
            reasons.EXPAND_PENDING,
            "expand has not been applied yet",
        )
    if definition.backfill is not None and Phase.BACKFILL not in applied:
        return decision(
            Action.RUN_BACKFILL_BATCH,
            MigrationPhase.BACKFILL_RUNNING,
            reasons.BACKFILL_PENDING,
            "backfill has not finished",
        )
    old_gone = next(g for g in gates if g.name is GateName.OLD_VERSIONS_GONE).holds
    waiting = MigrationPhase.AWAITING_CONTRACT if old_gone else MigrationPhase.EXPANDED
    if definition.verify_sql is not None and observations.verify_result is None:
        before = [g for g in gates if g.name in _BEFORE_VERIFY and not g.holds]
        if not before:
            return decision(
                Action.RUN_VERIFY,
                MigrationPhase.AWAITING_CONTRACT,
                reasons.VERIFY_PENDING,
                "the verify query has not been run yet",
            )
        # The verify query waits for the gates before it: they are what the wait is about.
        verify = next(g for g in gates if g.name is GateName.VERIFY_HOLDS)
        blocking = [*before, verify]
        return decision(
            Action.WAIT, waiting, before[0].reason, "; ".join(g.message for g in blocking)
        )
    blocking = [g for g in gates if not g.holds]
    if not blocking:
        return decision(
            Action.APPLY_CONTRACT,
            MigrationPhase.CONTRACTING,
            reasons.GATES_HOLD,
            "every gate holds",
        )
    return decision(
        Action.WAIT, waiting, blocking[0].reason, "; ".join(g.message for g in blocking)
    )


def _after_rollback(
    definition: MigrationDefinition, applied: Mapping[Phase, AppliedPhase]
) -> MigrationDecision:
    if Phase.EXPAND not in applied or not definition.run_down_on_rollback:
        return _decision(
            Action.WAIT,
            MigrationPhase.ROLLED_BACK,
            reasons.ROLLOUT_ROLLED_BACK,
            "the rollout was rolled back; expand stays (it is compatible with the old version)"
            if Phase.EXPAND in applied
            else "the rollout was rolled back before expand was applied",
        )
    if definition.expand.down is None:
        return _decision(
            Action.REFUSE,
            MigrationPhase.FAILED,
            reasons.DOWN_MISSING,
            "the rollout was rolled back and runDownOnRollback is set, but expand has no down SQL",
        )
    return _decision(
        Action.APPLY_DOWN,
        MigrationPhase.ROLLED_BACK,
        reasons.ROLLOUT_ROLLED_BACK,
        "the rollout was rolled back; applying expand's down SQL",
    )


def _checksum_mismatch(
    definition: MigrationDefinition, history: tuple[AppliedPhase, ...]
) -> MigrationDecision | None:
    for entry in history:
        sql = definition.sql_of(entry.phase)
        current = checksum(sql) if sql is not None else "(no SQL: the phase was removed)"
        if current != entry.checksum:
            return _decision(
                Action.REFUSE,
                MigrationPhase.FAILED,
                reasons.CHECKSUM_MISMATCH,
                f"{entry.phase} was applied with checksum {entry.checksum} at "
                f"{_clock(entry.applied_at)}, but its SQL now has checksum {current}; "
                f"an applied phase cannot change (write a new migration)",
            )
    return None


def _expand_applied(
    definition: MigrationDefinition, applied: Mapping[Phase, AppliedPhase]
) -> GateVerdict:
    name = GateName.EXPAND_APPLIED
    if Phase.EXPAND not in applied:
        return GateVerdict(name, False, reasons.EXPAND_NOT_APPLIED, "expand has not been applied")
    done = f"expand applied at {_clock(applied[Phase.EXPAND].applied_at)}"
    if definition.backfill is None:
        return GateVerdict(name, True, reasons.EXPAND_APPLIED, done)
    if Phase.BACKFILL not in applied:
        return GateVerdict(
            name, False, reasons.BACKFILL_NOT_FINISHED, f"{done}; backfill has not finished"
        )
    return GateVerdict(
        name,
        True,
        reasons.EXPAND_APPLIED,
        f"{done}; backfill finished at {_clock(applied[Phase.BACKFILL].applied_at)}",
    )


def _retired(definition: MigrationDefinition, version: str) -> bool:
    retired = definition.contract.retired_versions
    if retired is None:
        return version != definition.required_by.version
    return version in retired


def _old_versions_gone(
    definition: MigrationDefinition, observations: MigrationObservations
) -> GateVerdict:
    name = GateName.OLD_VERSIONS_GONE
    still = sorted(
        (v, n) for v, n in observations.running.items() if n > 0 and _retired(definition, v)
    )
    if still:
        return GateVerdict(
            name,
            False,
            reasons.OLD_VERSIONS_RUNNING,
            "; ".join(
                f"version {v} still runs in {_pods(n)}"
                + (
                    f" (last seen {_clock(observations.last_seen[v])})"
                    if v in observations.last_seen
                    else ""
                )
                for v, n in still
            ),
        )
    required = definition.required_by
    if observations.running.get(required.version, 0) <= 0:
        return GateVerdict(
            name,
            False,
            reasons.REQUIRED_VERSION_NOT_RUNNING,
            f"no pod of {required.service} {required.version} runs yet; "
            f"contract waits until it does",
        )
    return GateVerdict(
        name,
        True,
        reasons.OLD_VERSIONS_GONE,
        f"only {required.service} {required.version} runs "
        f"({_pods(observations.running[required.version])})",
    )


def _soak_elapsed(
    definition: MigrationDefinition,
    applied: Mapping[Phase, AppliedPhase],
    observations: MigrationObservations,
    now: datetime,
) -> GateVerdict:
    # No relative time ("3s from now") in the message: a status that changed on every pass
    # would wake the watch that triggers the next one.
    name = GateName.SOAK_ELAPSED
    soak = definition.contract.soak
    ends = soak_ends(definition, applied, observations.last_seen)
    if ends is None:
        return GateVerdict(
            name, False, reasons.SOAK_NOT_STARTED, "soak starts once expand is applied"
        )
    if ends > now:
        return GateVerdict(
            name, False, reasons.SOAKING, f"soak of {_duration(soak)} ends at {_clock(ends)}"
        )
    return GateVerdict(
        name, True, reasons.SOAK_ELAPSED, f"soak of {_duration(soak)} ended at {_clock(ends)}"
    )


def soak_ends(
    definition: MigrationDefinition,
    applied: Mapping[Phase, AppliedPhase],
    last_seen: Mapping[str, datetime],
) -> datetime | None:
    """When the soak before contract ends: ``contract.soak`` after the latest of expand (and
    backfill) applied and a retired version last seen running; None before expand.

    >>> from datetime import UTC
    >>> d = MigrationDefinition("m", ServiceVersion("s", "v2"), ExpandSpec("x"),
    ...                         ContractSpec("y", soak=timedelta(minutes=10)))
    >>> at = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
    >>> expand = {Phase.EXPAND: AppliedPhase(Phase.EXPAND, "c", at)}
    >>> soak_ends(d, expand, {"v1": at + timedelta(minutes=3), "v2": at + timedelta(hours=1)})
    datetime.datetime(2025, 1, 1, 12, 13, tzinfo=datetime.timezone.utc)
    >>> soak_ends(d, {}, {}) is None
    True
    """
    if Phase.EXPAND not in applied:
        return None
    starts = [e.applied_at for p, e in applied.items() if p in (Phase.EXPAND, Phase.BACKFILL)]
    starts += [at for v, at in last_seen.items() if _retired(definition, v)]
    return max(starts) + definition.contract.soak


def _verify_holds(
    definition: MigrationDefinition, observations: MigrationObservations, *, runs: bool
) -> GateVerdict:
    """``runs``: the gates before it hold, so the verify query is due (it runs only then)."""
    name = GateName.VERIFY_HOLDS
    if definition.verify_sql is None:
        return GateVerdict(name, True, reasons.NO_VERIFY_QUERY, "no verify query is defined")
    if observations.verify_result is None and not runs:
        return GateVerdict(
            name,
            False,
            reasons.VERIFY_WAITING,
            "the verify query runs once expand is applied, old versions are gone and the soak "
            "has elapsed",
        )
    if observations.verify_result is None:
        return GateVerdict(name, False, reasons.VERIFY_NOT_RUN, "the verify query has not run yet")
    if not observations.verify_result:
        return GateVerdict(name, False, reasons.VERIFY_FAILED, "the verify query returned false")
    return GateVerdict(name, True, reasons.VERIFY_HOLDS, "the verify query returned true")


def _approved(definition: MigrationDefinition, observations: MigrationObservations) -> GateVerdict:
    name = GateName.APPROVED
    current = checksum(definition.contract.sql)
    valid = sorted({a.approver for a in observations.approvals if a.checksum == current})
    if valid:
        return GateVerdict(name, True, reasons.APPROVED, f"contract approved by {', '.join(valid)}")
    void = sorted({(a.approver, a.checksum) for a in observations.approvals})
    if void:
        return GateVerdict(
            name,
            False,
            reasons.APPROVAL_VOID,
            "; ".join(
                f"the approval by {who} is void: it approved contract checksum {_short(seen)}, "
                f"the contract SQL now has checksum {_short(current)}"
                for who, seen in void
            ),
        )
    return GateVerdict(
        name, False, reasons.NOT_APPROVED, f"no approval of contract checksum {_short(current)} yet"
    )


_BEFORE_VERIFY = (GateName.EXPAND_APPLIED, GateName.OLD_VERSIONS_GONE, GateName.SOAK_ELAPSED)


def _decision(
    action: Action, phase: MigrationPhase, reason: str, message: str
) -> MigrationDecision:
    return MigrationDecision(action, phase, reason, message)


def _pods(n: int) -> str:
    return f"{n} pod" if n == 1 else f"{n} pods"


def _clock(at: datetime) -> str:
    return at.strftime("%H:%M:%S")


def _short(digest: str) -> str:
    return digest[:12]


def _duration(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
        f"{secs}s" if secs or not (hours or minutes) else "",
    ]
    return "".join(parts)
