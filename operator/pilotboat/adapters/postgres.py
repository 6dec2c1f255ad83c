"""PostgreSQL implementation of :class:`~pilotboat.adapters.database.DatabaseEngine` (psycopg 3).

Sync on purpose: handlers call it from a worker thread.

Guarantees of the migration runner:

* **One runner per database.** Every migration call takes a session-level advisory lock
  (``pg_try_advisory_lock``) keyed on the database's OID, retrying until ``lock_wait`` has
  passed; then it raises :class:`MigrationLocked` naming the holder's pid instead of hanging.
* **A phase is applied once, or not at all.** Its statements and its row in
  ``pilotboat.pilotboat_schema_history`` (unique on migration, phase) commit in one
  transaction, with ``SET LOCAL lock_timeout`` and ``statement_timeout``. A crash or a
  failed statement leaves nothing of the phase behind; the re-run applies it once.
  Re-running an applied phase is a no-op; running changed SQL for it raises
  :class:`ChecksumMismatch`.
* **Except what PostgreSQL cannot run in a transaction.** ``CREATE INDEX CONCURRENTLY`` and
  its kin (detected by the parser, :func:`pilotboat.core.sqllint.split_statements`) run on
  their own, between the transactional parts of the phase, and the history row commits with
  the last part. A crash between parts leaves the earlier parts committed and no history row,
  so the re-run repeats them: such statements must be idempotent (``IF NOT EXISTS``), which
  the linter demands (PB051), and a phase mixing both kinds draws a warning (PB052). A crash
  *inside* ``CREATE INDEX CONCURRENTLY`` leaves an INVALID index that ``IF NOT EXISTS`` would
  keep; the runner drops invalid indexes named by the statement before re-running it.
* **Backfills resume.** Each batch commits with its progress row in
  ``pilotboat_backfill_progress``; after a crash the next call continues the counts, and the
  batch statement (which selects rows still to do) continues the work.

Three login roles per owned database (:func:`role_names`): the **owner** owns the database,
its schemas and every table migrations create, and runs the migrations; the operator alone
holds its password. The **runtime** role (the service's) gets DML on schema ``public`` and
default privileges for the owner's future tables, no CREATE (unless the OwnedDatabase opts
in) and no membership in the owner, so it cannot run DDL on migration tables. The
**read-only** role gets SELECT. The history lives in schema ``pilotboat``
(:data:`HISTORY_SCHEMA`), owned by the owner and revoked from PUBLIC, runtime and read-only.

Passwords never reach a log or an exception: roles get a SCRAM-SHA-256 verifier computed
here (the cleartext never goes to the server, its logs or ``pg_stat_activity``), and
connection strings in messages are redacted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, LiteralString

import psycopg
from psycopg import errors, sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pilotboat.adapters.database import (
    DEFAULT_TIMEOUTS,
    BackfillProgress,
    ChecksumMismatch,
    DatabaseError,
    DatabaseOwnedByAnother,
    DatabaseOwner,
    DatabaseUnavailable,
    MigrationLocked,
    PhaseFailed,
    PhaseOrderError,
    PhaseResult,
    Timeouts,
)
from pilotboat.core.migration import AppliedPhase, Phase, checksum, phase_order_violation
from pilotboat.core.sqllint import (
    SqlParseError,
    SqlStatement,
    split_on_batch_size,
    split_statements,
)

__all__ = [
    "BACKFILL_PROGRESS_TABLE",
    "HISTORY_SCHEMA",
    "HISTORY_TABLE",
    "PostgresEngine",
    "RoleNames",
    "owner_marker",
    "recorded_owner_name",
    "recorded_owner_uid",
    "redact_dsn",
    "role_dsn",
    "role_names",
    "scram_sha256_verifier",
]

log = logging.getLogger(__name__)

HISTORY_SCHEMA = "pilotboat"
"""Schema of the migration history: owned by the owner role, revoked from everyone else."""
_HISTORY_NAME = "pilotboat_schema_history"
_PROGRESS_NAME = "pilotboat_backfill_progress"
HISTORY_TABLE = f"{HISTORY_SCHEMA}.{_HISTORY_NAME}"
BACKFILL_PROGRESS_TABLE = f"{HISTORY_SCHEMA}.{_PROGRESS_NAME}"
_RUNTIME_SUFFIX = "_rw"
_READONLY_SUFFIX = "_ro"
_HASH_TAIL = 11  # "_" and the 10 hex digits that end every name database_names makes
_LOCK_NAMESPACE = 0x70620001  # "pb" + 1: the high 32 bits of the advisory lock key
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

_HISTORY_DDL = f"""
CREATE TABLE IF NOT EXISTS {HISTORY_TABLE} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    migration text NOT NULL,
    phase text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    applied_by text NOT NULL,
    statements integer NOT NULL,
    duration_ms bigint NOT NULL,
    UNIQUE (migration, phase)
)"""
_PROGRESS_DDL = f"""
CREATE TABLE IF NOT EXISTS {BACKFILL_PROGRESS_TABLE} (
    migration text PRIMARY KEY,
    checksum text NOT NULL,
    rows_processed bigint NOT NULL DEFAULT 0,
    batches bigint NOT NULL DEFAULT 0,
    done boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
)"""
_LOCK_KEY = f"(({_LOCK_NAMESPACE}::bigint << 32) | d.oid::bigint)"


_MARKER_PREFIX = "pilotboat owner: OwnedDatabase"
_MARKER = re.compile(r"^pilotboat owner: OwnedDatabase (?P<name>\S+) uid=(?P<uid>[0-9A-Za-z-]+)$")


def owner_marker(owner: DatabaseOwner) -> str:
    """The comment recorded on a role and a database: whose they are.

    >>> owner_marker(DatabaseOwner("1f0c", "shop/orders-db"))
    'pilotboat owner: OwnedDatabase shop/orders-db uid=1f0c'
    """
    return f"{_MARKER_PREFIX} {owner.name} uid={owner.uid}"


def recorded_owner_uid(comment: str | None) -> str | None:
    match = _MARKER.match(comment or "")
    return match["uid"] if match else None


def recorded_owner_name(comment: str | None) -> str | None:
    match = _MARKER.match(comment or "")
    return f"OwnedDatabase {match['name']}" if match else None


def redact_dsn(dsn: str) -> str:
    """``dsn`` with its password replaced by ``***`` (key=value or URI form alike).

    >>> redact_dsn("postgresql://admin:s3cret@db:5432/postgres")
    'user=admin password=*** host=db port=5432 dbname=postgres'
    """
    try:
        params: dict[str, Any] = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparseable connection string>"
    if "password" in params:
        params["password"] = "***"
    return make_conninfo(**params)


@dataclass(frozen=True)
class RoleNames:
    """The three login roles of one owned database."""

    owner: str
    runtime: str
    readonly: str

    def all(self) -> tuple[str, str, str]:
        return (self.owner, self.runtime, self.readonly)


def _derived(owner_role: str, suffix: str) -> str:
    if len(owner_role) + len(suffix) <= 63:
        return f"{owner_role}{suffix}"
    # Cut the readable middle, keep the "_<hash>" tail that makes the owner name unique.
    head = owner_role[: 63 - len(suffix) - _HASH_TAIL]
    return f"{head}{owner_role[-_HASH_TAIL:]}{suffix}"


def role_names(owner_role: str) -> RoleNames:
    """The runtime and read-only roles that go with ``owner_role``, at most 63 bytes each.

    Unique by construction for the owner names ``database_names`` makes (they end in ``_``
    and a hash of the OwnedDatabase's namespace/name): the derived names keep that hash and
    end in ``_rw`` or ``_ro``, which no owner name does (it ends in a hex digit).

    >>> role_names("pb_shop_orders_db_2eb24b4a4c")
    RoleNames(owner='pb_shop_orders_db_2eb24b4a4c', runtime='pb_shop_orders_db_2eb24b4a4c_rw', \
readonly='pb_shop_orders_db_2eb24b4a4c_ro')
    >>> len(role_names("pb_" + "x" * 49 + "_2eb24b4a4c").runtime)
    63
    """
    return RoleNames(owner_role, _derived(owner_role, _RUNTIME_SUFFIX),
                     _derived(owner_role, _READONLY_SUFFIX))


def role_dsn(admin_dsn: str, *, user: str, password: str, dbname: str) -> str:
    """``admin_dsn`` with user, password and dbname replaced; host, port, sslmode,
    sslrootcert, require_auth and the rest are kept."""
    params: dict[str, Any] = conninfo_to_dict(admin_dsn)
    params.update(user=user, password=password, dbname=dbname)
    return make_conninfo(**params)


def scram_sha256_verifier(password: str, *, salt: bytes | None = None,
                          iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (RFC 5802/7677).

    Sent instead of the cleartext in ``CREATE/ALTER ROLE … PASSWORD``. Passwords are expected
    to be printable ASCII (the operator generates them), for which SASLprep is the identity.
    """
    salt = os.urandom(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = base64.b64encode
    return (f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}$"
            f"{b64(stored_key).decode()}:{b64(server_key).decode()}")


def _trusted(text: str) -> LiteralString:
    # Running SQL written by the migration's author is the point of a migration runner.
    # (mypy treats LiteralString as str; the annotation documents intent for other checkers.)
    return text


def _ms(span: timedelta) -> str:
    return f"{max(int(span.total_seconds() * 1000), 0)}ms"


@contextmanager
def _failures_named(where: str) -> Iterator[None]:
    """A statement's failure (a concurrent ``ALTER ROLE``, a missing privilege) as a
    :class:`DatabaseError` naming where it happened; PostgreSQL's messages carry no password
    (roles get verifiers)."""
    try:
        yield
    except psycopg.Error as error:
        raise DatabaseError(f"{where}: {type(error).__name__}: {error}") from None


def _check_name(kind: str, name: str) -> None:
    if not _NAME.match(name):
        raise DatabaseError(f"{kind} name {name!r} must match {_NAME.pattern}")


class PostgresEngine:
    """Owned databases and migrations on PostgreSQL.

    ``sleep`` throttles backfill batches (tests pass a fake); ``lock_wait`` bounds how long a
    runner waits for another one on the same database.
    """

    def __init__(
        self,
        *,
        sleep: Callable[[float], None] = time.sleep,
        lock_wait: timedelta = timedelta(seconds=30),
        lock_poll: timedelta = timedelta(milliseconds=200),
        connect_timeout: int = 10,
        application_name: str = "pilotboat",
    ) -> None:
        self._sleep = sleep
        self._lock_wait = lock_wait
        self._lock_poll = lock_poll
        self._connect_timeout = connect_timeout
        self._application_name = application_name

    # --- owned databases ---------------------------------------------------------------------

    def ensure_database(self, admin_dsn: str, dbname: str, role: str, password: str, *,
                        owner: DatabaseOwner, runtime_password: str, readonly_password: str,
                        runtime_schema_changes: bool = False) -> None:
        """Converge the three roles (:func:`role_names` of ``role``, the owner), ``dbname``
        owned by the owner, the history schema and every grant.

        Each role is checked against ``owner``'s marker before it is altered or granted to.
        """
        _check_name("database", dbname)
        names = role_names(role)
        for name in names.all():
            _check_name("role", name)
        with _failures_named(f"database {dbname}"), self._session(admin_dsn) as conn:
            # All three are checked before any is created or altered: a derived name held by
            # another owner stops the pass before the owner's password changes.
            for name in names.all():
                row = conn.execute("SELECT shobj_description(oid, 'pg_authid') FROM pg_roles "
                                   "WHERE rolname = %s", (name,)).fetchone()
                if row is not None:
                    self._check_recorded(conn, "role", name, row[0], owner)
            for name, secret in ((names.owner, password), (names.runtime, runtime_password),
                                 (names.readonly, readonly_password)):
                self._ensure_role(conn, name, scram_sha256_verifier(secret), owner)
            self._ensure_owned_database(conn, dbname, role, owner)
            self._ensure_memberships(conn, names)
            ident = sql.Identifier(dbname)
            conn.execute(sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC")
                         .format(ident))
            conn.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}")
                         .format(ident, sql.Identifier(names.owner)))
            conn.execute(sql.SQL("REVOKE CREATE, TEMPORARY ON DATABASE {} FROM {}, {}")
                         .format(ident, sql.Identifier(names.runtime),
                                 sql.Identifier(names.readonly)))
            conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}, {}")
                         .format(ident, sql.Identifier(names.runtime),
                                 sql.Identifier(names.readonly)))
        # Inside the database, as the owner: it owns what it grants, no superuser needed.
        owner_dsn = role_dsn(admin_dsn, user=names.owner, password=password, dbname=dbname)
        with _failures_named(f"database {dbname}, as {names.owner}"), \
                self._session(owner_dsn) as conn:
            self._ensure_history_schema(conn)
            self._converge_privileges(conn, names, runtime_schema_changes)

    def drop_database(self, admin_dsn: str, dbname: str, role: str, *,
                      owner: DatabaseOwner) -> None:
        """Drop ``dbname`` and the three roles of ``role``; every existing one is checked
        against ``owner``'s marker first, and nothing is dropped if a role is another's."""
        _check_name("database", dbname)
        names = role_names(role)
        for name in names.all():
            _check_name("role", name)
        with self._session(admin_dsn) as conn:
            for name in names.all():
                role_row = conn.execute(
                    "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles "
                    "WHERE rolname = %s", (name,)).fetchone()
                if role_row is not None:
                    self._check_recorded(conn, "role", name, role_row[0], owner)
            db_row = self._database_row(conn, dbname)
            foreign: DatabaseOwnedByAnother | None = None
            if db_row is not None:
                db_owner, comment = db_row
                try:
                    self._check_recorded(conn, "database", dbname, comment, owner,
                                         unrecorded_ok=db_owner == role)
                    if db_owner != role:
                        raise DatabaseOwnedByAnother(
                            f"database {dbname} is owned by {db_owner}, not {role}; "
                            "not dropping it")
                except DatabaseOwnedByAnother as error:
                    foreign = error
            if foreign is None:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                             .format(sql.Identifier(dbname)))
            for name in (names.runtime, names.readonly, names.owner):
                try:
                    conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
                except errors.DependentObjectsStillExist as error:
                    raise DatabaseError(f"cannot drop role {name}: {error}") from None
            if foreign is not None:
                log.info("dropped roles of %s; database %s is another owner's", role, dbname)
                raise foreign
            log.info("dropped database %s and roles %s", dbname, ", ".join(names.all()))

    @staticmethod
    def _ensure_memberships(conn: psycopg.Connection[Any], names: RoleNames) -> None:
        """The owner is a member of the runtime role (so migrations may alter tables the
        service created with ``runtimeSchemaChanges``); no role is a member of the owner."""
        members = conn.execute(
            "SELECT r.rolname, m.rolname FROM pg_auth_members a "
            "JOIN pg_roles r ON r.oid = a.roleid JOIN pg_roles m ON m.oid = a.member "
            "WHERE r.rolname = ANY(%s) AND m.rolname = ANY(%s)",
            (list(names.all()), list(names.all()))).fetchall()
        have = {(str(r), str(m)) for r, m in members}
        for granted in (names.owner, names.readonly):
            for member in names.all():
                if (granted, member) in have:
                    conn.execute(sql.SQL("REVOKE {} FROM {}").format(
                        sql.Identifier(granted), sql.Identifier(member)))
        if (names.runtime, names.readonly) in have:
            conn.execute(sql.SQL("REVOKE {} FROM {}").format(
                sql.Identifier(names.runtime), sql.Identifier(names.readonly)))
        if (names.runtime, names.owner) not in have:
            conn.execute(sql.SQL("GRANT {} TO {}").format(
                sql.Identifier(names.runtime), sql.Identifier(names.owner)))

    def _ensure_history_schema(self, conn: psycopg.Connection[Any]) -> None:
        """Schema ``pilotboat`` and its tables, owned by the connected role (the owner, or
        the superuser a test connects as), usable by nobody else; a history left in
        ``public`` by an older operator is moved there."""
        row = conn.execute("SELECT pg_get_userbyid(nspowner) = current_user FROM pg_namespace "
                           "WHERE nspname = %s", (HISTORY_SCHEMA,)).fetchone()
        if row is not None and not row[0]:
            is_super = conn.execute("SELECT rolsuper FROM pg_roles "
                                    "WHERE rolname = current_user").fetchone()
            if not (is_super and is_super[0]):
                raise DatabaseError(
                    f"schema {HISTORY_SCHEMA} exists and is not owned by the owner role; "
                    "the migration history cannot be kept there")
        schema = sql.Identifier(HISTORY_SCHEMA)
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
        conn.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(schema))
        for table in (_HISTORY_NAME, _PROGRESS_NAME):
            legacy = conn.execute(
                "SELECT to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NULL",
                (f"public.{table}", f"{HISTORY_SCHEMA}.{table}")).fetchone()
            if legacy and legacy[0]:
                conn.execute(sql.SQL("ALTER TABLE public.{} SET SCHEMA {}").format(
                    sql.Identifier(table), schema))
                log.info("moved public.%s to schema %s", table, HISTORY_SCHEMA)
        conn.execute(_trusted(_HISTORY_DDL))
        conn.execute(_trusted(_PROGRESS_DDL))

    @staticmethod
    def _converge_privileges(conn: psycopg.Connection[Any], names: RoleNames,
                             runtime_schema_changes: bool) -> None:
        owner, rw, ro = (sql.Identifier(n) for n in names.all())
        others = sql.SQL("PUBLIC, {}, {}").format(rw, ro)
        history = sql.Identifier(HISTORY_SCHEMA)
        statements = [
            sql.SQL("REVOKE ALL ON SCHEMA {} FROM {}").format(history, others),
            sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {}").format(history, others),
            sql.SQL("REVOKE ALL ON ALL SEQUENCES IN SCHEMA {} FROM {}").format(history, others),
            sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC, {}").format(ro),
            sql.SQL("GRANT USAGE ON SCHEMA public TO {}, {}").format(rw, ro),
            sql.SQL("{} CREATE ON SCHEMA public {} {}").format(
                sql.SQL("GRANT" if runtime_schema_changes else "REVOKE"),
                sql.SQL("TO" if runtime_schema_changes else "FROM"), rw),
            sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public "
                    "TO {}").format(rw),
            sql.SQL("GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {}")
            .format(rw),
            sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(ro),
        ]
        # Tables migrations create later get the same grants.
        for creator in (owner, rw):
            statements += [
                sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA public GRANT SELECT, "
                        "INSERT, UPDATE, DELETE ON TABLES TO {}").format(creator, rw),
                sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA public GRANT USAGE, "
                        "SELECT, UPDATE ON SEQUENCES TO {}").format(creator, rw),
                sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA public GRANT SELECT "
                        "ON TABLES TO {}").format(creator, ro),
            ]
        with conn.transaction():
            for statement in statements:
                conn.execute(statement)

    def _ensure_role(self, conn: psycopg.Connection[Any], role: str, verifier: str,
                     owner: DatabaseOwner) -> None:
        ident, secret = sql.Identifier(role), sql.Literal(verifier)
        row = conn.execute(
            "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = %s",
            (role,)).fetchone()
        if row is None:
            try:
                # One transaction: a role never exists without its recorded owner.
                with conn.transaction():
                    conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}")
                                 .format(ident, secret))
                    conn.execute(sql.SQL("COMMENT ON ROLE {} IS {}")
                                 .format(ident, sql.Literal(owner_marker(owner))))
                log.info("created role %s for %s", role, owner.name)
                return
            except errors.DuplicateObject:
                row = conn.execute(
                    "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles "
                    "WHERE rolname = %s", (role,)).fetchone()
        self._check_recorded(conn, "role", role, row[0] if row else None, owner)
        conn.execute(sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(ident, secret))

    def _ensure_owned_database(self, conn: psycopg.Connection[Any], dbname: str, role: str,
                               owner: DatabaseOwner) -> None:
        row = self._database_row(conn, dbname)
        if row is None:
            try:
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(dbname), sql.Identifier(role)))
                log.info("created database %s owned by %s", dbname, role)
            except errors.DuplicateDatabase:
                pass
            row = self._database_row(conn, dbname)
            if row is None:
                raise DatabaseError(f"database {dbname} vanished while being created")
        db_owner, comment = row
        # CREATE DATABASE cannot share a transaction with its COMMENT: a database owned by
        # this owner's role (recorded as this owner's) and not yet marked is this owner's.
        self._check_recorded(conn, "database", dbname, comment, owner,
                             unrecorded_ok=db_owner == role)
        if db_owner != role:
            raise DatabaseOwnedByAnother(
                f"database {dbname} exists and is owned by {db_owner}, not {role}")
        if recorded_owner_uid(comment) is None:
            conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                sql.Identifier(dbname), sql.Literal(owner_marker(owner))))

    @staticmethod
    def _check_recorded(conn: psycopg.Connection[Any], what: str, name: str,
                        comment: str | None, owner: DatabaseOwner, *,
                        unrecorded_ok: bool = False) -> None:
        """Raise unless ``owner`` may change ``name``; record ``owner`` on a successor.

        A successor is an OwnedDatabase of the same namespace and name as the recorded one
        with another UID: the recorded one was deleted with ``reclaimPolicy: Retain`` and
        this one takes its data back (only one object can hold a namespace/name at a time).
        """
        uid = recorded_owner_uid(comment)
        if uid == owner.uid or (uid is None and unrecorded_ok):
            return
        keyword = "ROLE" if what == "role" else "DATABASE"
        if uid is not None and recorded_owner_name(comment) == f"OwnedDatabase {owner.name}":
            conn.execute(sql.SQL("COMMENT ON {} {} IS {}").format(
                sql.SQL(keyword), sql.Identifier(name), sql.Literal(owner_marker(owner))))
            log.info("%s %s handed from %s uid %s to its successor uid %s", what, name,
                     owner.name, uid, owner.uid)
            return
        if uid is not None:
            raise DatabaseOwnedByAnother(
                f"{what} {name} belongs to {recorded_owner_name(comment)} (uid {uid}), "
                f"not to {owner.name}; it is left untouched")
        raise DatabaseOwnedByAnother(
            f"{what} {name} exists and no OwnedDatabase is recorded as its owner; it is left "
            f"untouched. To hand it to {owner.name}, an administrator runs: COMMENT ON "
            f"{keyword} {name} IS '{owner_marker(owner)}'")

    @staticmethod
    def _database_row(conn: psycopg.Connection[Any], dbname: str) -> tuple[str, str | None] | None:
        row = conn.execute(
            "SELECT pg_get_userbyid(datdba), shobj_description(oid, 'pg_database') "
            "FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        return None if row is None else (str(row[0]), row[1])

    # --- migrations --------------------------------------------------------------------------

    def history(self, dsn: str, migration: str) -> tuple[AppliedPhase, ...]:
        with self._session(dsn) as conn:
            return self._history(conn, migration)

    def apply_phase(self, dsn: str, migration: str, phase: Phase, sql_text: str, *,
                    applied_by: str, timeouts: Timeouts = DEFAULT_TIMEOUTS) -> PhaseResult:
        if phase is Phase.BACKFILL:
            raise PhaseOrderError("a backfill runs in batches: call backfill()")
        digest = checksum(sql_text)
        try:
            statements = split_statements(sql_text)
        except SqlParseError as error:
            raise PhaseFailed(f"{migration} {phase}: {error.message}") from None
        with self._session(dsn) as conn, self._migration_lock(conn, migration):
            applied = self._check_history(conn, migration, phase, digest)
            if applied:
                return PhaseResult(phase, digest, False, 0, 0)
            started = time.monotonic()
            try:
                self._run_statements(conn, statements, timeouts, record=lambda: self._record(
                    conn, migration, phase, digest, applied_by, len(statements), started))
            except psycopg.Error as error:
                raise PhaseFailed(f"{migration} {phase} failed, nothing of it was committed"
                                  f"{self._partial_note(statements)}: {error}") from error
            duration = int((time.monotonic() - started) * 1000)
            log.info("applied %s %s (%d statements, %d ms)", migration, phase,
                     len(statements), duration)
            return PhaseResult(phase, digest, True, len(statements), duration)

    def backfill(self, dsn: str, migration: str, sql_text: str, *, batch_size: int,
                 pause: timedelta, applied_by: str, timeouts: Timeouts = DEFAULT_TIMEOUTS,
                 max_batches: int | None = None) -> BackfillProgress:
        """Run batches until one affects no row (or ``max_batches`` ran); returns progress."""
        digest = checksum(sql_text)
        try:
            if len(split_statements(sql_text)) != 1:
                raise PhaseFailed(f"{migration} backfill must be exactly one statement")
        except SqlParseError as error:
            raise PhaseFailed(f"{migration} backfill: {error.message}") from None
        query = _trusted("%(batch_size)s".join(
            piece.replace("%", "%%") for piece in split_on_batch_size(sql_text)))
        with self._session(dsn) as conn, self._migration_lock(conn, migration):
            if self._check_history(conn, migration, Phase.BACKFILL, digest):
                return self._progress(conn, migration, digest)
            progress = self._progress(conn, migration, digest)
            started, ran = time.monotonic(), 0
            while max_batches is None or ran < max_batches:
                if ran and pause > timedelta(0):
                    self._sleep(pause.total_seconds())
                try:
                    progress = self._run_batch(conn, migration, query, batch_size, digest,
                                               applied_by, timeouts, started)
                except psycopg.Error as error:
                    raise PhaseFailed(f"{migration} backfill batch failed (earlier batches "
                                      f"are kept and counted): {error}") from error
                ran += 1
                if progress.done:
                    log.info("backfill of %s done: %d rows in %d batches", migration,
                             progress.rows_processed, progress.batches)
                    break
            return progress

    def backfill_progress(self, dsn: str, migration: str) -> BackfillProgress:
        with self._session(dsn) as conn:
            if not self._tables_exist(conn):
                return BackfillProgress(0, 0, False)
            return self._progress(conn, migration, None)

    def verify(self, dsn: str, sql_text: str, *, timeouts: Timeouts = DEFAULT_TIMEOUTS) -> bool:
        """The verify query's answer; it runs read-only and must return one boolean."""
        with self._session(dsn) as conn:
            try:
                with conn.transaction():
                    conn.execute("SET TRANSACTION READ ONLY")
                    self._set_timeouts(conn, timeouts, local=True)
                    row = conn.execute(_trusted(sql_text), prepare=False).fetchone()
            except psycopg.Error as error:
                raise PhaseFailed(f"verify query failed: {error}") from error
        if row is None or len(row) != 1 or not isinstance(row[0], bool | None):
            raise PhaseFailed(f"verify must return one boolean, it returned {row!r}")
        return row[0] is True

    # --- internals ---------------------------------------------------------------------------

    @contextmanager
    def _session(self, dsn: str) -> Iterator[psycopg.Connection[Any]]:
        try:
            conn = psycopg.connect(dsn, autocommit=True, connect_timeout=self._connect_timeout,
                                   application_name=self._application_name)
        except psycopg.Error as error:
            message = str(error)
            password = self._password_of(dsn)
            if password:
                message = message.replace(password, "***")
            raise DatabaseUnavailable(
                f"cannot connect to {redact_dsn(dsn)}: {message}") from None
        with conn:
            yield conn

    @staticmethod
    def _password_of(dsn: str) -> str | None:
        try:
            password = conninfo_to_dict(dsn).get("password")
            return None if password is None else str(password)
        except psycopg.ProgrammingError:
            return None

    @contextmanager
    def _migration_lock(self, conn: psycopg.Connection[Any], migration: str) -> Iterator[None]:
        deadline = time.monotonic() + self._lock_wait.total_seconds()
        try_lock = _trusted(f"SELECT pg_try_advisory_lock({_LOCK_KEY}) FROM pg_database d "
                            "WHERE d.datname = current_database()")
        while True:
            row = conn.execute(try_lock).fetchone()
            if row is not None and row[0]:
                break
            if time.monotonic() >= deadline:
                raise MigrationLocked(
                    f"migration {migration}: database locked by another migration "
                    f"({self._lock_holder(conn)}); waited {self._lock_wait.total_seconds():g}s")
            time.sleep(self._lock_poll.total_seconds())
        try:
            self._ensure_history_schema(conn)
            yield
        finally:
            if not conn.broken and not conn.closed:
                conn.execute(_trusted(f"SELECT pg_advisory_unlock({_LOCK_KEY}) FROM pg_database d"
                                      " WHERE d.datname = current_database()"))

    @staticmethod
    def _lock_holder(conn: psycopg.Connection[Any]) -> str:
        row = conn.execute(
            "SELECT l.pid, a.application_name FROM pg_locks l "
            "JOIN pg_database d ON d.oid = l.database AND d.datname = current_database() "
            "LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
            "AND l.classid::bigint = %s AND l.objid = d.oid", (_LOCK_NAMESPACE,)).fetchone()
        return "holder unknown" if row is None else f"held by pid {row[0]} ({row[1]})"

    @staticmethod
    def _tables_exist(conn: psycopg.Connection[Any]) -> bool:
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL",
                           (HISTORY_TABLE, BACKFILL_PROGRESS_TABLE)).fetchone()
        return bool(row and row[0])

    def _history(self, conn: psycopg.Connection[Any], migration: str
                 ) -> tuple[AppliedPhase, ...]:
        if not self._tables_exist(conn):
            return ()
        rows = conn.execute(_trusted(
            f"SELECT phase, checksum, applied_at, applied_by FROM {HISTORY_TABLE} "
            "WHERE migration = %s ORDER BY id"), (migration,)).fetchall()
        return tuple(AppliedPhase(Phase(r[0]), r[1], r[2], r[3]) for r in rows)

    def _check_history(self, conn: psycopg.Connection[Any], migration: str, phase: Phase,
                       digest: str) -> bool:
        """True when ``phase`` is applied with ``digest``; raises when it may not run."""
        history = {entry.phase: entry for entry in self._history(conn, migration)}
        if phase in history:
            if history[phase].checksum != digest:
                raise ChecksumMismatch(migration, phase, history[phase].checksum, digest)
            return True
        violation = phase_order_violation(phase, frozenset(history))
        if violation is not None:
            raise PhaseOrderError(f"migration {migration}: {violation}")
        return False

    def _run_statements(self, conn: psycopg.Connection[Any],
                        statements: tuple[SqlStatement, ...], timeouts: Timeouts,
                        record: Callable[[], None]) -> None:
        # Consecutive transactional statements share one transaction; the others run alone.
        segments: list[list[SqlStatement]] = []
        for statement in statements:
            if segments and segments[-1][0].transactional and statement.transactional:
                segments[-1].append(statement)
            else:
                segments.append([statement])
        for number, segment in enumerate(segments, start=1):
            if segment[0].transactional:
                with conn.transaction():
                    self._set_timeouts(conn, timeouts, local=True)
                    for statement in segment:
                        conn.execute(_trusted(statement.text), prepare=False)
                    if number == len(segments):
                        record()
                continue
            self._set_timeouts(conn, timeouts, local=False)
            try:
                for statement in segment:
                    self._drop_invalid_index(conn, statement.concurrent_index)
                    conn.execute(_trusted(statement.text), prepare=False)
            finally:
                if not conn.broken:
                    conn.execute("RESET lock_timeout")
                    conn.execute("RESET statement_timeout")
        if not segments or not segments[-1][0].transactional:
            with conn.transaction():
                record()

    @staticmethod
    def _drop_invalid_index(conn: psycopg.Connection[Any], name: str | None) -> None:
        # A CREATE INDEX CONCURRENTLY that died half way leaves an INVALID index that
        # IF NOT EXISTS would keep for good; drop it so the re-run builds a valid one.
        if name is None:
            return
        row = conn.execute("SELECT NOT i.indisvalid FROM pg_index i "
                           "WHERE i.indexrelid = to_regclass(%s)", (name,)).fetchone()
        if row is not None and row[0]:
            conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}")
                         .format(sql.Identifier(*name.split("."))))

    @staticmethod
    def _partial_note(statements: tuple[SqlStatement, ...]) -> str:
        if all(s.transactional for s in statements):
            return ""
        return (" (except statements that ran outside a transaction before the failure; "
                "they are idempotent and the re-run repeats them)")

    @staticmethod
    def _set_timeouts(conn: psycopg.Connection[Any], timeouts: Timeouts, *, local: bool) -> None:
        scope = sql.SQL("SET LOCAL" if local else "SET")
        for name, value in (("lock_timeout", timeouts.lock),
                            ("statement_timeout", timeouts.statement)):
            conn.execute(sql.SQL("{} {} = {}").format(
                scope, sql.Identifier(name), sql.Literal(_ms(value))))

    def _record(self, conn: psycopg.Connection[Any], migration: str, phase: Phase, digest: str,
                applied_by: str, statements: int, started: float) -> None:
        conn.execute(_trusted(
            f"INSERT INTO {HISTORY_TABLE} (migration, phase, checksum, applied_by, statements, "
            "duration_ms) VALUES (%s, %s, %s, %s, %s, %s)"),
            (migration, str(phase), digest, applied_by, statements,
             int((time.monotonic() - started) * 1000)))

    def _progress(self, conn: psycopg.Connection[Any], migration: str, digest: str | None
                  ) -> BackfillProgress:
        row = conn.execute(_trusted(
            f"SELECT checksum, rows_processed, batches, done FROM {BACKFILL_PROGRESS_TABLE} "
            "WHERE migration = %s"), (migration,)).fetchone()
        if row is None:
            return BackfillProgress(0, 0, False)
        if digest is not None and row[0] != digest:
            raise ChecksumMismatch(migration, Phase.BACKFILL, row[0], digest)
        return BackfillProgress(int(row[1]), int(row[2]), bool(row[3]))

    def _run_batch(self, conn: psycopg.Connection[Any], migration: str, query: LiteralString,
                   batch_size: int, digest: str, applied_by: str, timeouts: Timeouts,
                   started: float) -> BackfillProgress:
        with conn.transaction():
            self._set_timeouts(conn, timeouts, local=True)
            rows = max(conn.execute(query, {"batch_size": batch_size}).rowcount, 0)
            row = conn.execute(_trusted(
                f"INSERT INTO {BACKFILL_PROGRESS_TABLE} AS p (migration, checksum, "
                "rows_processed, batches, done) VALUES (%(m)s, %(c)s, %(r)s, 1, %(d)s) "
                "ON CONFLICT (migration) DO UPDATE SET rows_processed = p.rows_processed + "
                "EXCLUDED.rows_processed, batches = p.batches + 1, done = EXCLUDED.done, "
                "updated_at = clock_timestamp() RETURNING rows_processed, batches, done"),
                {"m": migration, "c": digest, "r": rows, "d": rows == 0}).fetchone()
            assert row is not None
            progress = BackfillProgress(int(row[0]), int(row[1]), bool(row[2]))
            if progress.done:
                self._record(conn, migration, Phase.BACKFILL, digest, applied_by,
                             progress.batches, started)
            return progress
