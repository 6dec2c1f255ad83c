"""The database engine contract: owned databases and the migration runner behind them.

One implementation per server kind (PostgreSQL first: :mod:`pilotboat.adapters.postgres`).
Handlers call an engine from a worker thread; every method blocks and is idempotent:

* ``ensure_database`` converges a role and a database owned by it; ``drop_database`` undoes
  both (``reclaimPolicy: Delete``). Both carry the :class:`DatabaseOwner` asking: the engine
  records it on the role and the database it creates, and checks it *before* changing
  either (a password, a grant, a drop), so an object of another owner is never touched;
  :class:`DatabaseOwnedByAnother` names the recorded owner.
* ``apply_phase`` applies one phase of a migration and its history row atomically, at most
  once; applying it again is a no-op, applying changed SQL raises :class:`ChecksumMismatch`.
* ``backfill`` runs batches until one affects no row, recording progress with each batch,
  so an interrupted backfill resumes where it stopped.
* ``verify`` answers the verify query.

Failures are the exceptions below, never a driver's own: their messages name no password
and show connection strings redacted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from pilotboat.core.migration import AppliedPhase, Phase

__all__ = [
    "DEFAULT_TIMEOUTS",
    "BackfillProgress",
    "ChecksumMismatch",
    "DatabaseEngine",
    "DatabaseError",
    "DatabaseOwnedByAnother",
    "DatabaseOwner",
    "DatabaseUnavailable",
    "MigrationLocked",
    "PhaseFailed",
    "PhaseOrderError",
    "PhaseResult",
    "Timeouts",
]


@dataclass(frozen=True)
class Timeouts:
    """``SET LOCAL lock_timeout`` / ``statement_timeout`` for every statement of a phase."""

    lock: timedelta = timedelta(seconds=5)
    statement: timedelta = timedelta(minutes=5)


DEFAULT_TIMEOUTS = Timeouts()


@dataclass(frozen=True)
class DatabaseOwner:
    """Who a role and a database belong to: an OwnedDatabase, by UID (names can be reused).

    ``name`` (``namespace/name``) is for messages only; ownership is decided by ``uid``.
    """

    uid: str
    name: str


@dataclass(frozen=True)
class PhaseResult:
    phase: Phase
    checksum: str
    applied: bool
    """False when the phase was already in the history (nothing ran)."""
    statements: int
    duration_ms: int


@dataclass(frozen=True)
class BackfillProgress:
    rows_processed: int
    batches: int
    done: bool


class DatabaseError(Exception):
    """Base of everything an engine raises."""


class DatabaseUnavailable(DatabaseError):
    """The server could not be reached or refused the connection."""


class DatabaseOwnedByAnother(DatabaseError):
    """The role or database exists and belongs to another owner; the engine will not take
    it over, nor change or drop it."""


class MigrationLocked(DatabaseError):
    """Another runner holds this database's migration lock."""


class PhaseOrderError(DatabaseError):
    """The phase cannot run given what the history holds (contract before expand …)."""


class PhaseFailed(DatabaseError):
    """A statement failed; the phase's transaction was rolled back."""


class ChecksumMismatch(DatabaseError):
    """The history holds the phase with another checksum than the SQL given now."""

    def __init__(self, migration: str, phase: Phase, recorded: str, current: str) -> None:
        super().__init__(
            f"migration {migration}: {phase} was applied with checksum {recorded}, "
            f"the SQL given now has checksum {current}")
        self.migration = migration
        self.phase = phase
        self.recorded = recorded
        self.current = current


class DatabaseEngine(Protocol):
    def ensure_database(self, admin_dsn: str, dbname: str, role: str, password: str, *,
                        owner: DatabaseOwner, runtime_password: str, readonly_password: str,
                        runtime_schema_changes: bool = False) -> None:
        """Create or converge ``role`` (LOGIN, ``password``) and ``dbname`` owned by it, and
        the runtime and read-only roles derived from ``role`` with their grants.

        Raises :class:`DatabaseOwnedByAnother`, having changed nothing, when either exists
        and was not recorded as ``owner``'s.
        """
        ...

    def drop_database(self, admin_dsn: str, dbname: str, role: str, *,
                      owner: DatabaseOwner) -> None:
        """Drop ``dbname`` (closing its sessions) and the three roles; absent ones are fine.

        Raises :class:`DatabaseOwnedByAnother`, having dropped nothing, when either is
        recorded as another owner's (or, for the database, belongs to another role).
        """
        ...

    def history(self, dsn: str, migration: str) -> tuple[AppliedPhase, ...]:
        ...

    def apply_phase(self, dsn: str, migration: str, phase: Phase, sql: str, *,
                    applied_by: str, timeouts: Timeouts = DEFAULT_TIMEOUTS) -> PhaseResult:
        ...

    def backfill(self, dsn: str, migration: str, sql: str, *, batch_size: int,
                 pause: timedelta, applied_by: str, timeouts: Timeouts = DEFAULT_TIMEOUTS,
                 max_batches: int | None = None) -> BackfillProgress:
        ...

    def backfill_progress(self, dsn: str, migration: str) -> BackfillProgress:
        ...

    def verify(self, dsn: str, sql: str, *, timeouts: Timeouts = DEFAULT_TIMEOUTS) -> bool:
        ...
