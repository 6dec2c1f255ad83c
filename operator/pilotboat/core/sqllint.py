"""Lint of migration SQL: what may run while old and new versions of a service share a schema.

An expand/contract migration is safe only if every statement of ``expand`` leaves the schema
usable by the version that runs *now* (the old one) as well as by the version that needs it.
Anything that removes, renames, retypes or tightens what the old version reads or writes
belongs in ``contract``, which runs once no old version is left.

SQL is parsed with pglast (libpg_query, PostgreSQL's own parser), never with regular
expressions. Each finding carries a stable rule id (``PB001 drop-column``), a severity, the
statement it is about and the reason in words a DBA reads.

Severities:

* ``refuse`` — the migration must not run as written (the handler sets the migration to
  ``Failed`` with the findings);
* ``warn``   — it may run, but someone should look (reported as an Event and in status).

Decisions worth stating:

* ``ADD CONSTRAINT … FOREIGN KEY`` / ``CHECK`` without ``NOT VALID`` is **refused**
  (PB040): validating scans the whole table while holding a lock that blocks the old
  version's writes. Add it ``NOT VALID`` in expand, ``VALIDATE CONSTRAINT`` in contract.
* ``ADD CONSTRAINT … UNIQUE`` / ``PRIMARY KEY`` / ``EXCLUDE`` cannot be ``NOT VALID`` in
  PostgreSQL; it builds an index under an ``ACCESS EXCLUSIVE`` lock, so it is **refused**
  (PB041) unless it attaches an index built beforehand (``… UNIQUE USING INDEX i``, after
  ``CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS i …``).
* ``CREATE INDEX`` without ``CONCURRENTLY`` is a **warning** (PB050): it blocks writes for
  the duration of the build, which is harmless on a small table and an outage on a big one.
  An index on a table created earlier in the same phase draws no warning.
* Statements PostgreSQL refuses inside a transaction (``CREATE INDEX CONCURRENTLY`` …) run
  outside the phase's transaction, so a crash can leave them half done and a re-run repeats
  them: they must be idempotent (``IF NOT EXISTS`` / ``IF EXISTS``), or they are refused
  (PB051) — in every phase, contract included.

Example:

>>> [f.rule for f in lint_expand("ALTER TABLE users DROP COLUMN name;")]
['PB001 drop-column']
>>> lint_expand("ALTER TABLE users ADD COLUMN full_name text;")
()
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum

from pglast import ast, parse_sql, scan
from pglast.enums import AlterTableType, ConstrType, ObjectType
from pglast.parser import ParseError

__all__ = [
    "BATCH_SIZE_PARAMETER",
    "RULES",
    "LintFinding",
    "Rule",
    "Severity",
    "SqlParseError",
    "SqlStatement",
    "has_refusal",
    "lint_backfill",
    "lint_contract",
    "lint_down",
    "lint_expand",
    "lint_verify",
    "split_on_batch_size",
    "split_statements",
]

BATCH_SIZE_PARAMETER = ":batch_size"
"""The placeholder a backfill statement uses for its batch size."""


class Severity(StrEnum):
    REFUSE = "refuse"
    WARN = "warn"


@dataclass(frozen=True)
class Rule:
    """A lint rule: a stable code, a short name, a severity and the reason it exists."""

    code: str
    name: str
    severity: Severity
    why: str

    @property
    def id(self) -> str:
        """``"PB001 drop-column"``: how the rule is named in messages and status."""
        return f"{self.code} {self.name}"


_R, _W = Severity.REFUSE, Severity.WARN
_CONTRACT = "it breaks the version still running; it belongs in contract"

PARSE_ERROR = Rule("PB000", "parse-error", _R, "PostgreSQL's parser rejects it")
DROP_COLUMN = Rule(
    "PB001", "drop-column", _R, f"the old version still reads or writes the column; {_CONTRACT}"
)
DROP_TABLE = Rule("PB002", "drop-table", _R, f"the old version still uses the table; {_CONTRACT}")
DROP_INDEX = Rule(
    "PB003", "drop-index", _R, f"the old version's queries may depend on the index; {_CONTRACT}"
)
DROP_CONSTRAINT = Rule(
    "PB004",
    "drop-constraint",
    _R,
    f"the old version may rely on what the constraint guarantees; {_CONTRACT}",
)
DROP_OBJECT = Rule(
    "PB005", "drop-object", _R, f"dropping removes what the old version may use; {_CONTRACT}"
)
DROP_DEFAULT = Rule(
    "PB006",
    "drop-default",
    _R,
    f"the old version inserts rows without the column and relies on its default; {_CONTRACT}",
)
RENAME_TABLE = Rule(
    "PB010",
    "rename-table",
    _R,
    "the old version still uses the old name; create the new table in "
    "expand, copy in backfill, drop the old one in contract",
)
RENAME_COLUMN = Rule(
    "PB011",
    "rename-column",
    _R,
    "the old version still uses the old name; add the new column in expand, "
    "copy in backfill, drop the old one in contract",
)
RENAME_OBJECT = Rule(
    "PB012",
    "rename-object",
    _R,
    f"the old version may refer to the object by its old name; {_CONTRACT}",
)
ALTER_COLUMN_TYPE = Rule(
    "PB020",
    "alter-column-type",
    _R,
    "it rewrites the table under an exclusive lock and changes what the "
    "old version reads; add a new column in expand instead",
)
SET_NOT_NULL = Rule(
    "PB021", "set-not-null", _R, f"the old version may still write NULLs; {_CONTRACT}"
)
ADD_COLUMN_NOT_NULL = Rule(
    "PB022",
    "add-column-not-null-without-default",
    _R,
    "the old version inserts rows without the new column, which then "
    "fail; give it a DEFAULT or add NOT NULL in contract",
)
TRUNCATE = Rule("PB030", "truncate", _R, f"it deletes the old version's data; {_CONTRACT}")
DELETE = Rule(
    "PB031",
    "delete-outside-backfill",
    _R,
    "deleting data is a backfill (batched, resumable) or a contract step, never part of expand",
)
UPDATE = Rule(
    "PB032",
    "update-outside-backfill",
    _R,
    "a table-wide UPDATE in expand holds row locks for the whole transaction; "
    "put it in backfill, which runs in resumable batches",
)
ADD_CONSTRAINT_VALIDATING = Rule(
    "PB040",
    "add-constraint-validating",
    _R,
    "validating scans the whole table while blocking the old "
    "version's writes; add it NOT VALID in expand and VALIDATE "
    "CONSTRAINT in contract",
)
ADD_UNIQUE_CONSTRAINT = Rule(
    "PB041",
    "add-unique-constraint",
    _R,
    "it builds an index under an ACCESS EXCLUSIVE lock; build it with "
    "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS and attach it "
    "with USING INDEX, or add it in contract",
)
CREATE_INDEX_BLOCKING = Rule(
    "PB050",
    "create-index-blocking",
    _W,
    "CREATE INDEX without CONCURRENTLY blocks writes while it "
    "builds; use CREATE INDEX CONCURRENTLY IF NOT EXISTS",
)
NOT_IDEMPOTENT = Rule(
    "PB051",
    "non-transactional-not-idempotent",
    _R,
    "it cannot run in a transaction, so a crash may leave it half done and "
    "the re-run repeats it; write IF NOT EXISTS / IF EXISTS",
)
PHASE_NOT_ATOMIC = Rule(
    "PB052",
    "phase-not-atomic",
    _W,
    "the phase mixes statements that cannot run in a transaction with "
    "others, so it commits in parts; every statement must be safe to "
    "re-run (IF NOT EXISTS), or split the migration",
)
TRANSACTION_CONTROL = Rule(
    "PB060",
    "transaction-control",
    _R,
    "the runner owns the transaction of each phase; remove BEGIN/COMMIT/ROLLBACK/SAVEPOINT",
)
EMPTY_PHASE = Rule("PB061", "empty-phase", _R, "the phase has no statement")
BACKFILL_SINGLE = Rule(
    "PB070",
    "backfill-not-single-statement",
    _R,
    "a backfill is one statement run repeatedly until it affects no row",
)
BACKFILL_NOT_DML = Rule(
    "PB071",
    "backfill-not-dml",
    _R,
    "a backfill is an INSERT, UPDATE or DELETE whose row count tells when it is done",
)
BACKFILL_NO_BATCH_SIZE = Rule(
    "PB072",
    "backfill-without-batch-size",
    _W,
    f"without {BATCH_SIZE_PARAMETER} one batch touches every row in one long transaction",
)
VERIFY_NOT_SELECT = Rule(
    "PB080", "verify-not-single-select", _R, "verify is one SELECT that returns one boolean"
)

RULES: tuple[Rule, ...] = (
    PARSE_ERROR,
    DROP_COLUMN,
    DROP_TABLE,
    DROP_INDEX,
    DROP_CONSTRAINT,
    DROP_OBJECT,
    DROP_DEFAULT,
    RENAME_TABLE,
    RENAME_COLUMN,
    RENAME_OBJECT,
    ALTER_COLUMN_TYPE,
    SET_NOT_NULL,
    ADD_COLUMN_NOT_NULL,
    TRUNCATE,
    DELETE,
    UPDATE,
    ADD_CONSTRAINT_VALIDATING,
    ADD_UNIQUE_CONSTRAINT,
    CREATE_INDEX_BLOCKING,
    NOT_IDEMPOTENT,
    PHASE_NOT_ATOMIC,
    TRANSACTION_CONTROL,
    EMPTY_PHASE,
    BACKFILL_SINGLE,
    BACKFILL_NOT_DML,
    BACKFILL_NO_BATCH_SIZE,
    VERIFY_NOT_SELECT,
)
"""Every rule, in code order. Codes are stable: a retired rule's code is never reused."""


@dataclass(frozen=True)
class LintFinding:
    """One problem found in one statement of one phase."""

    rule: str
    """Rule id, e.g. ``"PB001 drop-column"``."""
    severity: Severity
    phase: str
    statement: str
    """The statement's text as written (stripped), or the whole SQL for a parse error."""
    message: str

    @property
    def refuses(self) -> bool:
        return self.severity is Severity.REFUSE


@dataclass(frozen=True)
class SqlStatement:
    """One statement of a phase, as PostgreSQL's parser delimits it."""

    text: str
    transactional: bool
    """False for statements PostgreSQL refuses inside a transaction block."""
    concurrent_index: str | None = None
    """For ``CREATE INDEX CONCURRENTLY``: the index name (schema-qualified if written so)."""


class SqlParseError(ValueError):
    """The SQL does not parse; ``location`` is the character offset the parser reports."""

    def __init__(self, message: str, location: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.location = location


def split_statements(sql: str) -> tuple[SqlStatement, ...]:
    """Split ``sql`` into statements with PostgreSQL's parser.

    Raises :class:`SqlParseError`. ``:batch_size`` is accepted (as a parameter).

    >>> [(s.text, s.transactional) for s in split_statements(
    ...     "CREATE TABLE t (a int); VACUUM t;")]
    [('CREATE TABLE t (a int)', True), ('VACUUM t', False)]
    """
    return tuple(
        SqlStatement(text, not _runs_outside_transaction(node), _concurrent_index(node))
        for text, node in _parse(sql)
    )


def split_on_batch_size(sql: str) -> tuple[str, ...]:
    """The text of ``sql`` cut at each ``:batch_size`` placeholder (outside literals).

    The adapter joins the pieces with its driver's placeholder.

    >>> split_on_batch_size("UPDATE t SET b = ':batch_size' WHERE id < :batch_size")
    ("UPDATE t SET b = ':batch_size' WHERE id < ", '')
    """
    name = BATCH_SIZE_PARAMETER[1:]
    tokens = scan(sql)
    cuts: list[tuple[int, int]] = []
    for colon, ident in zip(tokens, tokens[1:], strict=False):
        if (
            colon.name == "ASCII_58"
            and ident.name == "IDENT"
            and ident.start == colon.end + 1
            and sql[ident.start : ident.end + 1].lower() == name
        ):
            cuts.append((colon.start, ident.end + 1))
    pieces, at = [], 0
    for start, end in cuts:
        pieces.append(sql[at:start])
        at = end
    pieces.append(sql[at:])
    return tuple(pieces)


def has_refusal(findings: tuple[LintFinding, ...]) -> bool:
    return any(f.refuses for f in findings)


def lint_expand(sql: str) -> tuple[LintFinding, ...]:
    """Findings for an ``expand`` phase: everything that would break the running version.

    >>> [f.rule for f in lint_expand("ALTER TABLE t RENAME COLUMN a TO b")]
    ['PB011 rename-column']
    >>> [f.rule for f in lint_expand("CREATE INDEX i ON t (a)")]
    ['PB050 create-index-blocking']
    >>> [f.rule for f in lint_expand("CREATE TABLE n (a int); CREATE INDEX i ON n (a)")]
    []
    """
    return _lint_phase("expand", sql, _expand_checks)


def lint_contract(sql: str) -> tuple[LintFinding, ...]:
    """Findings for a ``contract`` phase: parse, transaction control, crash safety only."""
    return _lint_phase("contract", sql, None)


def lint_down(sql: str) -> tuple[LintFinding, ...]:
    """Findings for ``expand.down``, which undoes expand after a rollback (drops are its job)."""
    return _lint_phase("down", sql, None)


def lint_backfill(sql: str) -> tuple[LintFinding, ...]:
    """Findings for a backfill statement: one DML statement, batched with ``:batch_size``.

    >>> lint_backfill("UPDATE t SET b = a WHERE id IN "
    ...               "(SELECT id FROM t WHERE b IS NULL LIMIT :batch_size)")
    ()
    """
    parsed = _parse_or_finding("backfill", sql)
    if isinstance(parsed, LintFinding):
        return (parsed,)
    if len(parsed) != 1:
        return (
            _finding(BACKFILL_SINGLE, "backfill", sql.strip(), f"found {len(parsed)} statements"),
        )
    text, node = parsed[0]
    if not isinstance(node, ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt):
        return (_finding(BACKFILL_NOT_DML, "backfill", text, f"found {_kind(node)}"),)
    if len(split_on_batch_size(sql)) == 1:
        return (_finding(BACKFILL_NO_BATCH_SIZE, "backfill", text),)
    return ()


def lint_verify(sql: str) -> tuple[LintFinding, ...]:
    """Findings for a verify query: exactly one SELECT."""
    parsed = _parse_or_finding("verify", sql)
    if isinstance(parsed, LintFinding):
        return (parsed,)
    if len(parsed) != 1 or not isinstance(parsed[0][1], ast.SelectStmt):
        kinds = ", ".join(_kind(node) for _, node in parsed) or "no statement"
        return (_finding(VERIFY_NOT_SELECT, "verify", sql.strip(), f"found {kinds}"),)
    return ()


# --- internals -------------------------------------------------------------------------------

_Parsed = tuple[tuple[str, ast.Node], ...]
_Check = Callable[[str, ast.Node, set[str]], Iterator[tuple[Rule, str]]]


def _parse(sql: str) -> _Parsed:
    pieces = split_on_batch_size(sql) if BATCH_SIZE_PARAMETER in sql else (sql,)
    # "$1" (padded to keep offsets) parses, and is what the placeholder becomes on the wire.
    parseable = "$1".ljust(len(BATCH_SIZE_PARAMETER)).join(pieces)
    try:
        raw = parse_sql(parseable)
    except ParseError as error:
        message, location = error.args[0], error.args[1] if len(error.args) > 1 else None
        raise SqlParseError(str(message), location) from None
    out: list[tuple[str, ast.Node]] = []
    for item in raw:
        start = item.stmt_location or 0
        end = start + item.stmt_len if item.stmt_len else len(parseable)
        if item.stmt is not None:
            out.append((sql[start:end].strip(), item.stmt))
    return tuple(out)


def _parse_or_finding(phase: str, sql: str) -> _Parsed | LintFinding:
    try:
        return _parse(sql)
    except SqlParseError as error:
        where = f" at character {error.location + 1}" if error.location is not None else ""
        return _finding(PARSE_ERROR, phase, sql.strip(), f"{error.message}{where}")


def _finding(rule: Rule, phase: str, statement: str, detail: str = "") -> LintFinding:
    message = f"{rule.why} ({detail})" if detail else rule.why
    return LintFinding(rule.id, rule.severity, phase, statement, message)


def _lint_phase(phase: str, sql: str, checks: _Check | None) -> tuple[LintFinding, ...]:
    parsed = _parse_or_finding(phase, sql)
    if isinstance(parsed, LintFinding):
        return (parsed,)
    if not parsed:
        return (_finding(EMPTY_PHASE, phase, sql.strip()),)
    findings: list[LintFinding] = []
    created: set[str] = set()
    for text, node in parsed:
        for rule, detail in _common_checks(node):
            findings.append(_finding(rule, phase, text, detail))
        if checks is not None:
            for rule, detail in checks(text, node, created):
                findings.append(_finding(rule, phase, text, detail))
    outside = [not _runs_outside_transaction(node) for _, node in parsed]
    if len(parsed) > 1 and not all(outside) and any(outside):
        findings.append(_finding(PHASE_NOT_ATOMIC, phase, sql.strip()))
    return tuple(findings)


def _common_checks(node: ast.Node) -> Iterator[tuple[Rule, str]]:
    if isinstance(node, ast.TransactionStmt):
        kind = node.kind.name if node.kind is not None else "TRANS_STMT_?"
        yield TRANSACTION_CONTROL, kind.removeprefix("TRANS_STMT_")
    if isinstance(node, ast.IndexStmt) and node.concurrent and not node.if_not_exists:
        yield NOT_IDEMPOTENT, "CREATE INDEX CONCURRENTLY without IF NOT EXISTS"
    if isinstance(node, ast.DropStmt) and node.concurrent and not node.missing_ok:
        yield NOT_IDEMPOTENT, "DROP INDEX CONCURRENTLY without IF EXISTS"


def _expand_checks(text: str, node: ast.Node, created: set[str]) -> Iterator[tuple[Rule, str]]:
    if isinstance(node, ast.CreateStmt) and node.relation is not None:
        created.add(_relname(node.relation))
    elif isinstance(node, ast.DropStmt):
        yield _drop_rule(node), ""
    elif isinstance(node, ast.RenameStmt):
        yield _rename_rule(node), ""
    elif type(node) in _DATA_RULES:
        yield _DATA_RULES[type(node)], ""
    elif isinstance(node, ast.IndexStmt):
        table = _relname(node.relation) if node.relation is not None else ""
        if not node.concurrent and table not in created:
            yield CREATE_INDEX_BLOCKING, f"on {table}"
    elif isinstance(node, ast.AlterTableStmt):
        table = _relname(node.relation) if node.relation is not None else ""
        if table not in created:
            for cmd in node.cmds or ():
                if isinstance(cmd, ast.AlterTableCmd):
                    yield from _alter_table_checks(cmd)


def _alter_table_checks(cmd: ast.AlterTableCmd) -> Iterator[tuple[Rule, str]]:
    subtype = cmd.subtype
    column = f"column {cmd.name}" if cmd.name else ""
    if subtype is AlterTableType.AT_DropColumn:
        yield DROP_COLUMN, column
    elif subtype is AlterTableType.AT_DropConstraint:
        yield DROP_CONSTRAINT, f"constraint {cmd.name}"
    elif subtype is AlterTableType.AT_AlterColumnType:
        yield ALTER_COLUMN_TYPE, column
    elif subtype is AlterTableType.AT_SetNotNull:
        yield SET_NOT_NULL, column
    elif subtype is AlterTableType.AT_ColumnDefault and cmd.def_ is None:
        yield DROP_DEFAULT, column
    elif subtype is AlterTableType.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef):
        yield from _add_column_checks(cmd.def_)
    elif subtype is AlterTableType.AT_AddConstraint and isinstance(cmd.def_, ast.Constraint):
        yield from _constraint_checks(cmd.def_)


_PROVIDES_VALUE = {
    ConstrType.CONSTR_DEFAULT,
    ConstrType.CONSTR_IDENTITY,
    ConstrType.CONSTR_GENERATED,
}


def _add_column_checks(column: ast.ColumnDef) -> Iterator[tuple[Rule, str]]:
    kinds = {c.contype for c in column.constraints or () if isinstance(c, ast.Constraint)}
    not_null = column.is_not_null or kinds & {ConstrType.CONSTR_NOTNULL, ConstrType.CONSTR_PRIMARY}
    if not_null and not kinds & _PROVIDES_VALUE:
        yield ADD_COLUMN_NOT_NULL, f"column {column.colname}"
    if kinds & {ConstrType.CONSTR_PRIMARY, ConstrType.CONSTR_UNIQUE}:
        yield ADD_UNIQUE_CONSTRAINT, f"column {column.colname}"


def _constraint_checks(constraint: ast.Constraint) -> Iterator[tuple[Rule, str]]:
    kind = constraint.contype
    name = f"constraint {constraint.conname}" if constraint.conname else "unnamed constraint"
    if kind in {ConstrType.CONSTR_FOREIGN, ConstrType.CONSTR_CHECK}:
        if not constraint.skip_validation:
            yield ADD_CONSTRAINT_VALIDATING, f"{name} without NOT VALID"
    elif (
        kind in {ConstrType.CONSTR_UNIQUE, ConstrType.CONSTR_PRIMARY, ConstrType.CONSTR_EXCLUSION}
        and not constraint.indexname
    ):
        yield ADD_UNIQUE_CONSTRAINT, name


_DATA_RULES: dict[type[ast.Node], Rule] = {
    ast.TruncateStmt: TRUNCATE,
    ast.DeleteStmt: DELETE,
    ast.UpdateStmt: UPDATE,
}
_DROP_RULES = {ObjectType.OBJECT_TABLE: DROP_TABLE, ObjectType.OBJECT_INDEX: DROP_INDEX}
_RENAME_RULES = {ObjectType.OBJECT_TABLE: RENAME_TABLE, ObjectType.OBJECT_COLUMN: RENAME_COLUMN}


def _drop_rule(node: ast.DropStmt) -> Rule:
    return _DROP_RULES.get(node.removeType, DROP_OBJECT) if node.removeType else DROP_OBJECT


def _rename_rule(node: ast.RenameStmt) -> Rule:
    return _RENAME_RULES.get(node.renameType, RENAME_OBJECT) if node.renameType else RENAME_OBJECT


def _runs_outside_transaction(node: ast.Node) -> bool:
    if isinstance(node, ast.IndexStmt | ast.DropStmt):
        return bool(node.concurrent)
    if isinstance(node, ast.ReindexStmt):
        return any(
            isinstance(p, ast.DefElem) and p.defname == "concurrently" for p in node.params or ()
        )
    if isinstance(node, ast.AlterTableStmt):
        return any(
            isinstance(cmd, ast.AlterTableCmd)
            and isinstance(cmd.def_, ast.PartitionCmd)
            and bool(cmd.def_.concurrent)
            for cmd in node.cmds or ()
        )
    return isinstance(
        node,
        ast.VacuumStmt
        | ast.CreatedbStmt
        | ast.DropdbStmt
        | ast.AlterSystemStmt
        | ast.CreateTableSpaceStmt
        | ast.DropTableSpaceStmt,
    )


def _concurrent_index(node: ast.Node) -> str | None:
    if not isinstance(node, ast.IndexStmt) or not node.concurrent or not node.idxname:
        return None
    schema = node.relation.schemaname if node.relation is not None else None
    return f"{schema}.{node.idxname}" if schema else node.idxname


def _relname(relation: ast.RangeVar) -> str:
    return ".".join(part for part in (relation.schemaname, relation.relname) if part)


def _kind(node: ast.Node) -> str:
    return type(node).__name__.removesuffix("Stmt").upper() or "statement"
