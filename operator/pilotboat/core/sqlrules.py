"""The migration linter's rules: what each rule id means, and which statements break it.

:mod:`pilotboat.core.sqllint` splits a phase into statements and turns what this module
finds into findings; this module judges one parsed statement (a pglast node) at a time and
answers ``(rule, construct)`` pairs, the construct naming the offending part of the
statement (``"DROP COLUMN name"``, ``"calls evil()"``).

Two kinds of judgement:

* **Guards**, in every phase (expand, backfill, verify, contract, down): what a migration
  never does, because the operator owns it — session timeouts and identity (PB090),
  privileges (PB091), roles (PB092), databases and the server (PB093), anonymous code that
  runs dynamic SQL (PB094), the migration history's schema ``pilotboat`` (PB095). No
  directive allows them.
* **The expand allow-list**: expand runs while the old version serves traffic, so a
  statement passes only if its kind is one the linter can show leaves that version working.
  Known-dangerous kinds get their own rule (DROP COLUMN is PB001, LOCK TABLE is PB034); any
  kind the list does not name is refused as PB100, so a statement kind the linter never
  heard of is refused, not waved through.

Tables (and sequences) created in the same phase by a plain ``CREATE TABLE`` are invisible
to the old version, so most expand rules do not apply to them. ``CREATE TABLE IF NOT
EXISTS`` earns no such exemption: the table may well be an old one.

What the linter cannot see: bodies of functions it lets be created (they run when a
trigger fires, or when something calls them), and functions reached indirectly (through a
view, a trigger, a column default, a cast or an operator). It checks function calls by
name, in the statements that evaluate them while the phase runs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pglast import ast, parse_plpgsql, parse_sql, scan
from pglast.enums import (
    AlterTableType,
    CmdType,
    ConstrType,
    DiscardMode,
    ObjectType,
    VariableSetKind,
)
from pglast.parser import ParseError

__all__ = [
    "BATCH_SIZE_PARAMETER",
    "HISTORY_SCHEMA",
    "RULES",
    "SAFE_FUNCTIONS",
    "ExpandScope",
    "Hit",
    "Rule",
    "Severity",
    "common_hits",
    "expand_hits",
    "guard_hits",
    "statement_kind",
    "walk",
]

HISTORY_SCHEMA = "pilotboat"
"""The schema of the migration history (the runner's; no migration may name it)."""
_HISTORY_TABLES = ("pilotboat_schema_history", "pilotboat_backfill_progress")
_HISTORY_IN_TEXT = re.compile(
    rf'(?<![\w$])"?{HISTORY_SCHEMA}"?\s*\.|{"|".join(_HISTORY_TABLES)}', re.IGNORECASE)

BATCH_SIZE_PARAMETER = ":batch_size"
"""The placeholder a backfill statement uses for its batch size."""


class Severity(StrEnum):
    REFUSE = "refuse"
    """The migration must not run as written."""
    APPROVE = "approve"
    """It must not run until someone approves it (a ``pilotboat:allow`` directive, or a
    backfill DELETE): the reconciler treats it as a refusal until an approval lifts it."""
    WARN = "warn"
    """It may run, but someone should look."""


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

    @property
    def allowable(self) -> bool:
        """Whether a ``pilotboat:allow`` directive may turn a refusal of this rule into a
        finding that needs approval: refusals only, and not the guards, the phase's shape
        or its parse."""
        return self.severity is Severity.REFUSE and self.code not in _NOT_ALLOWABLE


Hit = tuple[Rule, str]
"""A rule a statement breaks, and the construct that breaks it."""

_R, _A, _W = Severity.REFUSE, Severity.APPROVE, Severity.WARN
_CONTRACT = "it breaks the version still running; it belongs in contract"
_OPERATOR_OWNS = "the operator owns it; a migration never changes it, in any phase"

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
CHANGE_DEFAULT = Rule(
    "PB007",
    "change-default",
    _R,
    "the old version inserts rows without the column and gets the new default instead of "
    "the one it expects; set defaults only on columns added in this phase",
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
SET_SCHEMA = Rule(
    "PB013",
    "set-schema",
    _R,
    "moving an object to another schema hides it from the old version's search_path, "
    f"as a rename would; {_CONTRACT}",
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
ADD_COLUMN_SERIAL = Rule(
    "PB023",
    "add-column-serial",
    _R,
    "a serial or identity column is filled from a sequence for every existing row, which "
    "rewrites the table under an ACCESS EXCLUSIVE lock; add a nullable column, fill it in "
    "backfill, attach the sequence default afterwards",
)
ADD_COLUMN_VOLATILE_DEFAULT = Rule(
    "PB024",
    "add-column-volatile-default",
    _R,
    "a default that is not a constant (or a generated column) is computed for every "
    "existing row, which rewrites the table under an ACCESS EXCLUSIVE lock; use a constant "
    "default, or fill the column in backfill",
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
INSERT = Rule(
    "PB033",
    "insert-outside-backfill",
    _R,
    "writing rows into a table the old version uses is data migration; put it in backfill, "
    "or insert only into tables created in this phase",
)
EXPLICIT_LOCK = Rule(
    "PB034",
    "explicit-lock",
    _R,
    "an explicit lock held for the rest of the phase blocks the old version's queries",
)
TABLE_REWRITE = Rule(
    "PB035",
    "table-rewrite",
    _R,
    "it rewrites the whole table under an ACCESS EXCLUSIVE lock, blocking the old version "
    "for as long as the rewrite takes",
)
FUNCTION_CALL = Rule(
    "PB036",
    "function-call",
    _R,
    "a function or procedure may do anything (DDL, DELETE, SET ROLE) where the linter "
    "cannot see it; expand calls only built-in functions the linter knows",
)
CREATE_RULE = Rule(
    "PB037",
    "create-rule",
    _R,
    "a rule rewrites the old version's queries on the table (an INSERT may become a DELETE)",
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
ALLOW_INVALID = Rule(
    "PB062",
    "allow-directive-invalid",
    _R,
    "a pilotboat:allow directive names one or more refusal codes that may be allowed, "
    "then the reason: -- pilotboat:allow PB001 why it is safe here",
)
ALLOW_UNUSED = Rule(
    "PB063",
    "allow-directive-unused",
    _W,
    "the directive allows nothing: its statement breaks no rule it names (a directive "
    "belongs to the statement it stands above or inside, or after whose semicolon it "
    "stands on the same line)",
)
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
BACKFILL_DELETE = Rule(
    "PB073",
    "backfill-delete",
    _A,
    "a backfill that deletes rows destroys data the old version may still read; "
    "it runs only once approved",
)
VERIFY_NOT_SELECT = Rule(
    "PB080", "verify-not-single-select", _R, "verify is one SELECT that returns one boolean"
)
SESSION_SETTINGS = Rule(
    "PB090",
    "session-settings",
    _R,
    "the runner sets lock_timeout and statement_timeout from the spec and runs as the "
    f"database's owner role; {_OPERATOR_OWNS}",
)
PRIVILEGES = Rule(
    "PB091",
    "privileges",
    _R,
    f"privileges and ownership belong to the OwnedDatabase's one owner; {_OPERATOR_OWNS}",
)
ROLES = Rule("PB092", "roles", _R, f"roles are the OwnedDatabase's; {_OPERATOR_OWNS}")
DATABASE_OR_SERVER = Rule(
    "PB093",
    "database-or-server",
    _R,
    f"databases, tablespaces and server settings are the operator's; {_OPERATOR_OWNS}",
)
DYNAMIC_SQL = Rule(
    "PB094",
    "dynamic-sql",
    _R,
    "an anonymous code block that builds SQL at run time hides what it does from the "
    "linter; write the statements out",
)
HISTORY_SCHEMA_NAMED = Rule(
    "PB095",
    "history-schema",
    _R,
    f"schema {HISTORY_SCHEMA} holds the migration history, which only the runner writes; "
    f"{_OPERATOR_OWNS}",
)
NOT_ALLOWED_IN_EXPAND = Rule(
    "PB100",
    "not-on-expand-allow-list",
    _R,
    "expand runs beside the old version, so it takes only statement kinds the linter can "
    "show are safe for it (docs/migrations.md lists them); move it to contract, or allow "
    "it with approval",
)

RULES: tuple[Rule, ...] = (
    PARSE_ERROR,
    DROP_COLUMN,
    DROP_TABLE,
    DROP_INDEX,
    DROP_CONSTRAINT,
    DROP_OBJECT,
    DROP_DEFAULT,
    CHANGE_DEFAULT,
    RENAME_TABLE,
    RENAME_COLUMN,
    RENAME_OBJECT,
    SET_SCHEMA,
    ALTER_COLUMN_TYPE,
    SET_NOT_NULL,
    ADD_COLUMN_NOT_NULL,
    ADD_COLUMN_SERIAL,
    ADD_COLUMN_VOLATILE_DEFAULT,
    TRUNCATE,
    DELETE,
    UPDATE,
    INSERT,
    EXPLICIT_LOCK,
    TABLE_REWRITE,
    FUNCTION_CALL,
    CREATE_RULE,
    ADD_CONSTRAINT_VALIDATING,
    ADD_UNIQUE_CONSTRAINT,
    CREATE_INDEX_BLOCKING,
    NOT_IDEMPOTENT,
    PHASE_NOT_ATOMIC,
    TRANSACTION_CONTROL,
    EMPTY_PHASE,
    ALLOW_INVALID,
    ALLOW_UNUSED,
    BACKFILL_SINGLE,
    BACKFILL_NOT_DML,
    BACKFILL_NO_BATCH_SIZE,
    BACKFILL_DELETE,
    VERIFY_NOT_SELECT,
    SESSION_SETTINGS,
    PRIVILEGES,
    ROLES,
    DATABASE_OR_SERVER,
    DYNAMIC_SQL,
    HISTORY_SCHEMA_NAMED,
    NOT_ALLOWED_IN_EXPAND,
)
"""Every rule, in code order. Codes are stable: a retired rule's code is never reused."""

_NOT_ALLOWABLE = frozenset(
    rule.code
    for rule in (
        PARSE_ERROR,
        TRANSACTION_CONTROL,
        EMPTY_PHASE,
        ALLOW_INVALID,
        BACKFILL_SINGLE,
        BACKFILL_NOT_DML,
        VERIFY_NOT_SELECT,
        SESSION_SETTINGS,
        PRIVILEGES,
        ROLES,
        DATABASE_OR_SERVER,
        DYNAMIC_SQL,
        HISTORY_SCHEMA_NAMED,
    )
)

# fmt: off
SAFE_FUNCTIONS = frozenset(
    {
        # time
        "now", "clock_timestamp", "statement_timestamp", "transaction_timestamp",
        "date_trunc", "date_part", "extract", "age", "make_date", "make_interval",
        "make_timestamp", "make_timestamptz", "to_timestamp", "to_date", "to_char",
        "to_number",
        # waiting: holds the phase's transaction open, nothing else
        "pg_sleep", "pg_sleep_for",
        # aggregates
        "count", "sum", "min", "max", "avg", "bool_and", "bool_or", "every", "array_agg",
        "string_agg", "json_agg", "jsonb_agg", "json_object_agg", "jsonb_object_agg",
        # text
        "lower", "upper", "initcap", "length", "char_length", "octet_length", "substr",
        "substring", "left", "right", "split_part", "concat", "concat_ws", "format", "btrim",
        "ltrim", "rtrim", "lpad", "rpad", "replace", "repeat", "reverse", "strpos",
        "starts_with", "md5", "regexp_replace", "regexp_match", "string_to_array",
        "array_to_string", "quote_ident", "quote_literal", "quote_nullable",
        # numbers, ids
        "abs", "round", "ceil", "ceiling", "floor", "trunc", "mod", "power", "sqrt", "random",
        "gen_random_uuid",
        # arrays, JSON, rows
        "array_length", "cardinality", "unnest", "generate_series", "array_append",
        "array_cat", "array_position", "to_json", "to_jsonb", "json_build_object",
        "jsonb_build_object", "json_build_array", "jsonb_build_array", "jsonb_set",
        "jsonb_strip_nulls",
        # read-only lookups
        "current_setting", "current_schema", "to_regclass", "to_regtype", "to_regproc",
        "to_regnamespace", "pg_typeof", "version",
    }
)
# fmt: on
"""Built-in functions expand may call (unqualified or in ``pg_catalog``): none writes,
locks, or changes the session."""

_NON_VOLATILE_DEFAULTS = frozenset({"now", "transaction_timestamp", "statement_timestamp"})
_GUARDED_SETTINGS = frozenset(
    {
        "lock_timeout",
        "statement_timeout",
        "idle_in_transaction_session_timeout",
        "idle_session_timeout",
        "transaction_timeout",
        "role",
        "session_authorization",
    }
)
_HARMLESS_SETTINGS = frozenset(
    {"work_mem", "maintenance_work_mem", "max_parallel_maintenance_workers"}
)
_SERIAL_TYPES = frozenset({"serial", "serial2", "serial4", "serial8", "smallserial", "bigserial"})


# --- walking the tree -------------------------------------------------------------------------


def walk(node: Any) -> Iterator[ast.Node]:
    """Every node under ``node`` (itself first), depth first."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, ast.Node):
            yield item
            stack.extend(reversed([getattr(item, name) for name in item]))
        elif isinstance(item, tuple):
            stack.extend(reversed(item))


def statement_kind(node: ast.Node) -> str:
    """``CreateExtensionStmt`` → ``"CREATE EXTENSION"``: how messages name a statement."""
    if isinstance(node, ast.VariableSetStmt):
        return f"SET {node.name}" if node.name else "SET"
    if isinstance(node, ast.CreateTableAsStmt):
        if node.objtype is ObjectType.OBJECT_MATVIEW:
            return "CREATE MATERIALIZED VIEW"
        return "CREATE TABLE AS"
    name = type(node).__name__.removesuffix("Stmt")
    return _KIND_NAMES.get(name, _words(name))


def _words(camel: str) -> str:
    """``ReplicaIdentity`` → ``REPLICA IDENTITY``."""
    return "".join(f" {c}" if c.isupper() and i else c for i, c in enumerate(camel)).upper()


_KIND_NAMES = {
    "Do": "DO block",
    "Select": "SELECT",
    "Vacuum": "VACUUM",
    "Createdb": "CREATE DATABASE",
    "Dropdb": "DROP DATABASE",
    "AlterSeq": "ALTER SEQUENCE",
    "CreateSeq": "CREATE SEQUENCE",
    "CreateTrig": "CREATE TRIGGER",
    "CreateEventTrig": "CREATE EVENT TRIGGER",
    "RefreshMatView": "REFRESH MATERIALIZED VIEW",
}


def _relname(relation: ast.RangeVar | None) -> str:
    if relation is None:
        return ""
    return ".".join(part for part in (relation.schemaname, relation.relname) if part)


def _names(parts: Any) -> str:
    return ".".join(str(p.sval) for p in parts or () if isinstance(p, ast.String))


def _role(spec: Any) -> str:
    if isinstance(spec, ast.RoleSpec):
        if spec.rolename:
            return str(spec.rolename)
        if spec.roletype is not None:
            return spec.roletype.name.removeprefix("ROLESPEC_")
    return "?"


# --- guards: every phase ----------------------------------------------------------------------


def guard_hits(node: ast.Node) -> Iterator[Hit]:
    """What no phase may do: change the session's timeouts or identity, privileges, roles,
    databases or the server, or run dynamic SQL in an anonymous code block."""
    handler = _GUARDS.get(type(node))
    if handler is not None:
        yield from handler(node)
    elif isinstance(node, ast.AlterTableStmt):
        for cmd in node.cmds or ():
            if isinstance(cmd, ast.AlterTableCmd) and cmd.subtype is AlterTableType.AT_ChangeOwner:
                yield PRIVILEGES, f"OWNER TO {_role(cmd.newowner)}"
    elif isinstance(node, ast.RenameStmt):
        if node.renameType is ObjectType.OBJECT_ROLE:
            yield ROLES, f"ALTER ROLE {node.subname} RENAME"
        elif node.renameType is ObjectType.OBJECT_DATABASE:
            yield DATABASE_OR_SERVER, f"ALTER DATABASE {node.subname} RENAME"
    for call in walk(node):
        if isinstance(call, ast.FuncCall) and _names(call.funcname) in {
            "set_config",
            "pg_catalog.set_config",
        }:
            setting = _constant_text(call.args[0]) if call.args else None
            if setting is None or setting.lower() in _GUARDED_SETTINGS:
                yield SESSION_SETTINGS, f"set_config({setting or '…'!r}, …)"
    named = _history_named(node)
    if named is not None:
        yield HISTORY_SCHEMA_NAMED, named


def _history_named(node: ast.Node) -> str | None:
    """How ``node`` names the history schema or its tables, if it does: as a schema
    (qualifier, CREATE/ALTER/DROP/GRANT … SCHEMA, SET SCHEMA), as a table, or in text
    (a string, a search_path, a function body). A column that happens to be called
    ``pilotboat`` is refused too: cheaper than an escape."""
    for item in walk(node):
        if isinstance(item, ast.RangeVar):
            if item.schemaname == HISTORY_SCHEMA:
                return f"table {_relname(item)}"
            if (item.relname or "") in _HISTORY_TABLES:
                return f"table {item.relname}"
        elif isinstance(item, ast.CreateSchemaStmt) and item.schemaname == HISTORY_SCHEMA:
            return f"CREATE SCHEMA {HISTORY_SCHEMA}"
        elif isinstance(item, ast.AlterObjectSchemaStmt) and item.newschema == HISTORY_SCHEMA:
            return f"SET SCHEMA {HISTORY_SCHEMA}"
        elif isinstance(item, ast.RenameStmt) and HISTORY_SCHEMA in (item.subname,
                                                                    item.newname):
            return f"RENAME … {HISTORY_SCHEMA}"
        elif isinstance(item, ast.String):
            text = str(item.sval or "")
            if text == HISTORY_SCHEMA or text in _HISTORY_TABLES:
                return f"the name {text}"
            if _HISTORY_IN_TEXT.search(text):
                return f"{HISTORY_SCHEMA} in the text {text[:40]!r}"
    return None


def common_hits(node: ast.Node) -> Iterator[Hit]:
    """The guards, plus what the runner cannot run in any phase: transaction control, and
    statements outside a transaction that a re-run could not repeat."""
    yield from guard_hits(node)
    if isinstance(node, ast.TransactionStmt):
        kind = node.kind.name if node.kind is not None else "TRANS_STMT_?"
        yield TRANSACTION_CONTROL, kind.removeprefix("TRANS_STMT_")
    if isinstance(node, ast.IndexStmt) and node.concurrent and not node.if_not_exists:
        yield NOT_IDEMPOTENT, "CREATE INDEX CONCURRENTLY without IF NOT EXISTS"
    if isinstance(node, ast.DropStmt) and node.concurrent and not node.missing_ok:
        yield NOT_IDEMPOTENT, "DROP INDEX CONCURRENTLY without IF EXISTS"


def _set_hits(node: ast.VariableSetStmt) -> Iterator[Hit]:
    name = (node.name or "").lower()
    if node.kind is VariableSetKind.VAR_RESET_ALL:
        yield SESSION_SETTINGS, "RESET ALL"
    elif name in _GUARDED_SETTINGS:
        verb = "RESET" if node.kind is VariableSetKind.VAR_RESET else "SET"
        shown = {"role": "ROLE", "session_authorization": "SESSION AUTHORIZATION"}.get(name, name)
        yield SESSION_SETTINGS, f"{verb} {shown}"


def _discard_hits(node: ast.DiscardStmt) -> Iterator[Hit]:
    if node.target is DiscardMode.DISCARD_ALL:
        yield SESSION_SETTINGS, "DISCARD ALL"


def _grant_hits(node: ast.GrantStmt) -> Iterator[Hit]:
    yield PRIVILEGES, "GRANT" if node.is_grant else "REVOKE"


def _grant_role_hits(node: ast.GrantRoleStmt) -> Iterator[Hit]:
    yield PRIVILEGES, "GRANT role membership" if node.is_grant else "REVOKE role membership"


def _constant(rule: Rule, construct: Callable[[Any], str]) -> Callable[[Any], Iterator[Hit]]:
    def hits(node: Any) -> Iterator[Hit]:
        yield rule, construct(node)

    return hits


def _do_hits(node: ast.DoStmt) -> Iterator[Hit]:
    options = {d.defname: d.arg for d in node.args or () if isinstance(d, ast.DefElem)}
    language = options.get("language")
    body = options.get("as")
    lang = str(language.sval) if isinstance(language, ast.String) else "plpgsql"
    code = str(body.sval) if isinstance(body, ast.String) else ""
    if lang.lower() != "plpgsql":
        yield DYNAMIC_SQL, f"DO block in language {lang}"
        return
    tag = "pb"
    while f"${tag}" in code:
        tag += "_"
    try:
        tree = parse_plpgsql(
            f"CREATE FUNCTION pilotboat_do() RETURNS void LANGUAGE plpgsql AS ${tag}${code}${tag}$"
        )
    except (ParseError, ValueError) as error:
        yield PARSE_ERROR, f"DO block: {error.args[0] if error.args else error}"
        return
    if _has_dynamic_sql(tree):
        yield DYNAMIC_SQL, "DO block that EXECUTEs dynamic SQL"
    for query in _plpgsql_queries(tree):
        for nested in _parse_quietly(query):
            for rule, construct in guard_hits(nested):
                if rule is not HISTORY_SCHEMA_NAMED:  # the block's text already drew it
                    yield rule, f"{construct} inside a DO block"


def _has_dynamic_sql(tree: Any) -> bool:
    if isinstance(tree, dict):
        if {"PLpgSQL_stmt_dynexecute", "PLpgSQL_stmt_dynfors", "dynquery"} & set(tree):
            return True
        return any(_has_dynamic_sql(v) for v in tree.values())
    if isinstance(tree, list):
        return any(_has_dynamic_sql(v) for v in tree)
    return False


def _plpgsql_queries(tree: Any) -> Iterator[str]:
    """Each SQL statement or expression of a PL/pgSQL body, as SQL that parses alone."""
    if isinstance(tree, list):
        for item in tree:
            yield from _plpgsql_queries(item)
    elif isinstance(tree, dict):
        expr = tree.get("PLpgSQL_expr")
        if isinstance(expr, dict) and isinstance(expr.get("query"), str):
            query, mode = expr["query"], expr.get("parseMode", 0)
            yield query if mode == 0 else f"SELECT {_assigned(query) if mode >= 3 else query}"
        for value in tree.values():
            yield from _plpgsql_queries(value)


def _assigned(assignment: str) -> str:
    """``x := f(y)`` → ``f(y)``: the expression of a PL/pgSQL assignment."""
    try:
        tokens = scan(assignment)
    except ParseError:
        return assignment
    for token in tokens:
        if token.name in {"COLON_EQUALS", "ASCII_61"}:
            return assignment[token.end + 1 :]
    return assignment


def _parse_quietly(sql: str) -> tuple[ast.Node, ...]:
    try:
        return tuple(raw.stmt for raw in parse_sql(sql) if raw.stmt is not None)
    except ParseError:
        return ()


_GUARDS: dict[type[ast.Node], Callable[[Any], Iterator[Hit]]] = {
    ast.VariableSetStmt: _set_hits,
    ast.DiscardStmt: _discard_hits,
    ast.GrantStmt: _grant_hits,
    ast.GrantRoleStmt: _grant_role_hits,
    ast.AlterDefaultPrivilegesStmt: _constant(PRIVILEGES, lambda n: "ALTER DEFAULT PRIVILEGES"),
    ast.AlterOwnerStmt: _constant(PRIVILEGES, lambda n: f"OWNER TO {_role(n.newowner)}"),
    ast.ReassignOwnedStmt: _constant(PRIVILEGES, lambda n: "REASSIGN OWNED"),
    ast.DropOwnedStmt: _constant(PRIVILEGES, lambda n: "DROP OWNED"),
    ast.CreateRoleStmt: _constant(ROLES, lambda n: f"CREATE ROLE {n.role}"),
    ast.AlterRoleStmt: _constant(ROLES, lambda n: f"ALTER ROLE {_role(n.role)}"),
    ast.AlterRoleSetStmt: _constant(ROLES, lambda n: f"ALTER ROLE {_role(n.role)} SET"),
    ast.DropRoleStmt: _constant(
        ROLES, lambda n: "DROP ROLE " + ", ".join(_role(r) for r in n.roles or ())
    ),
    ast.CreatedbStmt: _constant(DATABASE_OR_SERVER, lambda n: f"CREATE DATABASE {n.dbname}"),
    ast.DropdbStmt: _constant(DATABASE_OR_SERVER, lambda n: f"DROP DATABASE {n.dbname}"),
    ast.AlterDatabaseStmt: _constant(DATABASE_OR_SERVER, lambda n: f"ALTER DATABASE {n.dbname}"),
    ast.AlterDatabaseSetStmt: _constant(
        DATABASE_OR_SERVER, lambda n: f"ALTER DATABASE {n.dbname} SET"
    ),
    ast.AlterDatabaseRefreshCollStmt: _constant(
        DATABASE_OR_SERVER, lambda n: f"ALTER DATABASE {n.dbname} REFRESH COLLATION VERSION"
    ),
    ast.AlterSystemStmt: _constant(DATABASE_OR_SERVER, lambda n: "ALTER SYSTEM"),
    ast.CreateTableSpaceStmt: _constant(DATABASE_OR_SERVER, lambda n: "CREATE TABLESPACE"),
    ast.DropTableSpaceStmt: _constant(DATABASE_OR_SERVER, lambda n: "DROP TABLESPACE"),
    ast.AlterTableSpaceOptionsStmt: _constant(DATABASE_OR_SERVER, lambda n: "ALTER TABLESPACE"),
    ast.LoadStmt: _constant(DATABASE_OR_SERVER, lambda n: f"LOAD {n.filename!r}"),
    ast.DoStmt: _do_hits,
}


# --- expand: the allow-list -------------------------------------------------------------------


@dataclass
class ExpandScope:
    """What earlier statements of the same expand phase created: invisible to the old
    version, so most rules do not apply to them. Only plain ``CREATE TABLE`` / ``CREATE
    SEQUENCE`` / ``ADD COLUMN`` count; their ``IF NOT EXISTS`` forms may meet old objects."""

    created: set[str] = field(default_factory=set)
    added_columns: set[tuple[str, str]] = field(default_factory=set)


_ALLOWED_AS_IS: tuple[type[ast.Node], ...] = (
    ast.ViewStmt,
    ast.CreateFunctionStmt,
    ast.CreateTrigStmt,
    ast.CompositeTypeStmt,
    ast.CreateEnumStmt,
    ast.CreateRangeStmt,
    ast.CreateDomainStmt,
    ast.CommentStmt,
    ast.CreateStatsStmt,
)


def expand_hits(node: ast.Node, scope: ExpandScope) -> Iterator[Hit]:
    """Findings for one expand statement, after the guards: nothing for a kind on the
    allow-list used safely; a specific rule for a known-dangerous kind; PB100 otherwise.
    Records in ``scope`` what the statement creates."""
    if isinstance(node, _ALLOWED_AS_IS):
        return
    handler = _EXPAND.get(type(node))
    if handler is not None:
        yield from handler(node, scope)
    else:
        yield NOT_ALLOWED_IN_EXPAND, statement_kind(node)


def _create_table(node: ast.CreateStmt, scope: ExpandScope) -> Iterator[Hit]:
    parents = [_relname(p) for p in node.inhRelations or () if isinstance(p, ast.RangeVar)]
    foreign = [p for p in parents if p not in scope.created]
    if foreign:
        how = "PARTITION OF" if node.partbound is not None else "INHERITS"
        yield NOT_ALLOWED_IN_EXPAND, f"CREATE TABLE {_relname(node.relation)} {how} {foreign[0]}"
    if not node.if_not_exists:
        scope.created.add(_relname(node.relation))


def _create_sequence(node: ast.CreateSeqStmt, scope: ExpandScope) -> Iterator[Hit]:
    if not node.if_not_exists:
        scope.created.add(_relname(node.sequence))
    yield from ()


def _alter_sequence(node: ast.AlterSeqStmt, scope: ExpandScope) -> Iterator[Hit]:
    if _relname(node.sequence) not in scope.created:
        yield NOT_ALLOWED_IN_EXPAND, f"ALTER SEQUENCE {_relname(node.sequence)}"


def _create_index(node: ast.IndexStmt, scope: ExpandScope) -> Iterator[Hit]:
    table = _relname(node.relation)
    if not node.concurrent and table not in scope.created:
        yield CREATE_INDEX_BLOCKING, f"CREATE INDEX on {table}"


def _drop(node: ast.DropStmt, scope: ExpandScope) -> Iterator[Hit]:
    rule = _DROP_RULES.get(node.removeType, DROP_OBJECT) if node.removeType else DROP_OBJECT
    names = ", ".join(_object_name(o) for o in node.objects or ())
    yield rule, f"DROP {_object_kind(node.removeType)} {names}".rstrip()


def _rename(node: ast.RenameStmt, scope: ExpandScope) -> Iterator[Hit]:
    rule = _RENAME_RULES.get(node.renameType, RENAME_OBJECT) if node.renameType else RENAME_OBJECT
    what = node.subname or _relname(node.relation) or _object_name(node.object)
    yield rule, f"RENAME {_object_kind(node.renameType)} {what} TO {node.newname}"


def _object_kind(kind: ObjectType | None) -> str:
    name = kind.name.removeprefix("OBJECT_") if kind is not None else "OBJECT"
    return {"TABCONSTRAINT": "CONSTRAINT"}.get(name, name.replace("_", " "))


def _object_name(obj: Any) -> str:
    if isinstance(obj, tuple):
        return _names(obj)
    if isinstance(obj, ast.ObjectWithArgs):
        return _names(obj.objname)
    if isinstance(obj, ast.String):
        return str(obj.sval)
    return ""


def _set_schema(node: ast.AlterObjectSchemaStmt, scope: ExpandScope) -> Iterator[Hit]:
    what = _relname(node.relation) or _object_name(node.object)
    kind = _object_kind(node.objectType)
    yield SET_SCHEMA, f"ALTER {kind} {what} SET SCHEMA {node.newschema}"


def _alter_enum(node: ast.AlterEnumStmt, scope: ExpandScope) -> Iterator[Hit]:
    if node.oldVal is not None:
        yield RENAME_OBJECT, f"ALTER TYPE {_names(node.typeName)} RENAME VALUE {node.oldVal!r}"


def _vacuum(node: ast.VacuumStmt, scope: ExpandScope) -> Iterator[Hit]:
    options = {o.defname for o in node.options or () if isinstance(o, ast.DefElem)}
    tables = ", ".join(
        _relname(r.relation) for r in node.rels or () if isinstance(r, ast.VacuumRelation)
    )
    if "full" in options:
        yield TABLE_REWRITE, f"VACUUM FULL {tables}".rstrip()
    elif node.is_vacuumcmd:
        yield NOT_ALLOWED_IN_EXPAND, f"VACUUM {tables}".rstrip()


def _setting(node: ast.VariableSetStmt, scope: ExpandScope) -> Iterator[Hit]:
    if not (node.name and node.name.lower() in _HARMLESS_SETTINGS):
        yield NOT_ALLOWED_IN_EXPAND, statement_kind(node)


def _select(node: ast.SelectStmt, scope: ExpandScope) -> Iterator[Hit]:
    if node.intoClause is not None:
        yield NOT_ALLOWED_IN_EXPAND, f"SELECT … INTO {_relname(node.intoClause.rel)}"
    yield from _evaluated(node, scope)


def _dml(node: ast.Node, scope: ExpandScope) -> Iterator[Hit]:
    yield from _writes(node, scope)
    yield from _evaluated(node, scope)


def _writes(node: ast.Node, scope: ExpandScope) -> Iterator[Hit]:
    """The rules a data-changing statement (or a writable CTE) breaks by its target."""
    table = _relname(getattr(node, "relation", None))
    if table in scope.created:
        return
    if isinstance(node, ast.DeleteStmt):
        yield DELETE, f"DELETE FROM {table}"
    elif isinstance(node, ast.UpdateStmt):
        yield UPDATE, f"UPDATE {table}"
    elif isinstance(node, ast.InsertStmt):
        yield INSERT, f"INSERT INTO {table}"
    elif isinstance(node, ast.MergeStmt):
        for clause in node.mergeWhenClauses or ():
            rule = _MERGE_RULES.get(clause.commandType) if clause.commandType else None
            if rule is not None:
                action = clause.commandType.name.removeprefix("CMD_")
                yield rule, f"MERGE INTO {table} … THEN {action}"


_MERGE_RULES = {CmdType.CMD_DELETE: DELETE, CmdType.CMD_UPDATE: UPDATE, CmdType.CMD_INSERT: INSERT}
_DML = (ast.DeleteStmt, ast.UpdateStmt, ast.InsertStmt, ast.MergeStmt)


def _evaluated(top: ast.Node, scope: ExpandScope) -> Iterator[Hit]:
    """What a statement that runs a query does inside it: writable CTEs, row locks, calls
    of functions the linter does not know."""
    for node in walk(top):
        if node is not top and isinstance(node, _DML):
            yield from ((rule, f"WITH … {construct}") for rule, construct in _writes(node, scope))
        elif isinstance(node, ast.LockingClause):
            strength = node.strength.name.removeprefix("LCS_FOR") if node.strength else ""
            yield EXPLICIT_LOCK, f"SELECT … FOR {strength.replace('KEY', ' KEY ').strip()}"
        elif isinstance(node, ast.FuncCall) and not _safe_function(node.funcname):
            yield FUNCTION_CALL, f"calls {_names(node.funcname)}()"
        elif isinstance(node, ast.A_Expr) and _names(node.name).count(".") == 1:
            if not _names(node.name).startswith("pg_catalog."):
                yield FUNCTION_CALL, f"OPERATOR({_names(node.name)})"


def _safe_function(funcname: Any) -> bool:
    parts = _names(funcname).split(".")
    if len(parts) == 2 and parts[0] == "pg_catalog":
        parts = parts[1:]
    return len(parts) == 1 and parts[0] in SAFE_FUNCTIONS


def _alter_table(node: ast.AlterTableStmt, scope: ExpandScope) -> Iterator[Hit]:
    table = _relname(node.relation)
    for cmd in node.cmds or ():
        if not isinstance(cmd, ast.AlterTableCmd) or cmd.subtype is None:
            continue
        if table in scope.created and cmd.subtype not in _REACHES_OTHER_TABLES:
            continue
        yield from _alter_table_cmd(cmd, table, scope)


def _alter_table_cmd(cmd: ast.AlterTableCmd, table: str, scope: ExpandScope) -> Iterator[Hit]:
    subtype = cmd.subtype
    fixed = _ALTER_TABLE_RULES.get(subtype) if subtype is not None else None
    if subtype in _ALTER_TABLE_SAFE or subtype is AlterTableType.AT_ChangeOwner:
        return
    if fixed is not None:
        yield fixed, _alter_construct(cmd)
    elif subtype is AlterTableType.AT_ColumnDefault:
        if cmd.def_ is None:
            yield DROP_DEFAULT, f"ALTER COLUMN {cmd.name} DROP DEFAULT"
        elif (table, cmd.name) not in scope.added_columns:
            yield CHANGE_DEFAULT, f"ALTER COLUMN {cmd.name} SET DEFAULT"
    elif subtype is AlterTableType.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef):
        yield from _add_column_checks(cmd.def_)
        if not cmd.missing_ok and cmd.def_.colname:
            scope.added_columns.add((table, cmd.def_.colname))
    elif subtype is AlterTableType.AT_AddConstraint and isinstance(cmd.def_, ast.Constraint):
        yield from _constraint_checks(cmd.def_)
    else:
        yield NOT_ALLOWED_IN_EXPAND, f"ALTER TABLE {table} {_alter_construct(cmd)}"


def _alter_construct(cmd: ast.AlterTableCmd) -> str:
    subtype = cmd.subtype
    words = _AT_WORDS.get(subtype) if subtype is not None else None
    if words is None:
        words = _words(subtype.name.removeprefix("AT_")) if subtype is not None else "?"
        return f"{words} {cmd.name}" if cmd.name else words
    return words.format(cmd.name or "").strip()


_AT_WORDS = {
    AlterTableType.AT_DropColumn: "DROP COLUMN {}",
    AlterTableType.AT_DropConstraint: "DROP CONSTRAINT {}",
    AlterTableType.AT_AlterColumnType: "ALTER COLUMN {} TYPE",
    AlterTableType.AT_SetNotNull: "ALTER COLUMN {} SET NOT NULL",
    AlterTableType.AT_SetTableSpace: "SET TABLESPACE {}",
    AlterTableType.AT_SetLogged: "SET LOGGED",
    AlterTableType.AT_SetUnLogged: "SET UNLOGGED",
    AlterTableType.AT_SetAccessMethod: "SET ACCESS METHOD {}",
    AlterTableType.AT_EnableRowSecurity: "ENABLE ROW LEVEL SECURITY",
    AlterTableType.AT_ForceRowSecurity: "FORCE ROW LEVEL SECURITY",
    AlterTableType.AT_DisableTrig: "DISABLE TRIGGER {}",
    AlterTableType.AT_AttachPartition: "ATTACH PARTITION",
    AlterTableType.AT_DetachPartition: "DETACH PARTITION",
}
_ALTER_TABLE_RULES = {
    AlterTableType.AT_DropColumn: DROP_COLUMN,
    AlterTableType.AT_DropConstraint: DROP_CONSTRAINT,
    AlterTableType.AT_AlterColumnType: ALTER_COLUMN_TYPE,
    AlterTableType.AT_SetNotNull: SET_NOT_NULL,
    AlterTableType.AT_SetTableSpace: TABLE_REWRITE,
    AlterTableType.AT_SetLogged: TABLE_REWRITE,
    AlterTableType.AT_SetUnLogged: TABLE_REWRITE,
    AlterTableType.AT_SetAccessMethod: TABLE_REWRITE,
}
_ALTER_TABLE_SAFE = frozenset(
    {
        AlterTableType.AT_DropNotNull,
        AlterTableType.AT_ValidateConstraint,
        AlterTableType.AT_SetStatistics,
        AlterTableType.AT_SetOptions,
        AlterTableType.AT_ResetOptions,
        AlterTableType.AT_SetRelOptions,
        AlterTableType.AT_ResetRelOptions,
    }
)
_REACHES_OTHER_TABLES = frozenset(
    {
        AlterTableType.AT_AttachPartition,
        AlterTableType.AT_DetachPartition,
        AlterTableType.AT_DetachPartitionFinalize,
        AlterTableType.AT_AddInherit,
        AlterTableType.AT_DropInherit,
    }
)

_PROVIDES_VALUE = {
    ConstrType.CONSTR_DEFAULT,
    ConstrType.CONSTR_IDENTITY,
    ConstrType.CONSTR_GENERATED,
}


def _add_column_checks(column: ast.ColumnDef) -> Iterator[Hit]:
    constraints = [c for c in column.constraints or () if isinstance(c, ast.Constraint)]
    kinds = {c.contype for c in constraints}
    name = f"ADD COLUMN {column.colname}"
    not_null = column.is_not_null or kinds & {ConstrType.CONSTR_NOTNULL, ConstrType.CONSTR_PRIMARY}
    type_name = _names(column.typeName.names if column.typeName else ()).lower()
    if not_null and not kinds & _PROVIDES_VALUE and type_name not in _SERIAL_TYPES:
        yield ADD_COLUMN_NOT_NULL, name
    if kinds & {ConstrType.CONSTR_PRIMARY, ConstrType.CONSTR_UNIQUE}:
        yield ADD_UNIQUE_CONSTRAINT, name
    if type_name in _SERIAL_TYPES:
        yield ADD_COLUMN_SERIAL, f"{name} {type_name}"
    for constraint in constraints:
        yield from _column_constraint_checks(name, constraint)


def _column_constraint_checks(name: str, constraint: ast.Constraint) -> Iterator[Hit]:
    kind = constraint.contype
    if kind is ConstrType.CONSTR_IDENTITY:
        yield ADD_COLUMN_SERIAL, f"{name} GENERATED … AS IDENTITY"
    elif kind is ConstrType.CONSTR_GENERATED:
        yield ADD_COLUMN_VOLATILE_DEFAULT, f"{name} GENERATED ALWAYS AS (…) STORED"
    elif kind is ConstrType.CONSTR_DEFAULT and not _is_constant(constraint.raw_expr):
        yield ADD_COLUMN_VOLATILE_DEFAULT, f"{name} DEFAULT (not a constant)"
    elif kind is ConstrType.CONSTR_FOREIGN:
        yield ADD_CONSTRAINT_VALIDATING, f"{name} REFERENCES (validated at once)"
    elif kind is ConstrType.CONSTR_CHECK:
        yield ADD_CONSTRAINT_VALIDATING, f"{name} CHECK (validated at once)"


def _is_constant(expr: Any) -> bool:
    """A default PostgreSQL evaluates once for the whole table (no rewrite): a literal, a
    cast of one, an array of them, or the transaction's clock."""
    if expr is None or isinstance(expr, ast.A_Const | ast.SQLValueFunction):
        return True
    if isinstance(expr, ast.TypeCast):
        return _is_constant(expr.arg)
    if isinstance(expr, ast.A_ArrayExpr):
        return all(_is_constant(e) for e in expr.elements or ())
    if isinstance(expr, ast.FuncCall):
        parts = _names(expr.funcname).split(".")
        return (
            parts[-1] in _NON_VOLATILE_DEFAULTS
            and not expr.args
            and (len(parts) == 1 or parts[0] == "pg_catalog")
        )
    return False


def _constant_text(expr: Any) -> str | None:
    if isinstance(expr, ast.TypeCast):
        return _constant_text(expr.arg)
    if isinstance(expr, ast.A_Const) and isinstance(expr.val, ast.String):
        return str(expr.val.sval)
    return None


def _constraint_checks(constraint: ast.Constraint) -> Iterator[Hit]:
    kind = constraint.contype
    name = f"constraint {constraint.conname}" if constraint.conname else "unnamed constraint"
    if kind in {ConstrType.CONSTR_FOREIGN, ConstrType.CONSTR_CHECK}:
        if not constraint.skip_validation:
            yield ADD_CONSTRAINT_VALIDATING, f"ADD {name} without NOT VALID"
    elif (
        kind in {ConstrType.CONSTR_UNIQUE, ConstrType.CONSTR_PRIMARY, ConstrType.CONSTR_EXCLUSION}
        and not constraint.indexname
    ):
        yield ADD_UNIQUE_CONSTRAINT, f"ADD {name}"


_DROP_RULES = {ObjectType.OBJECT_TABLE: DROP_TABLE, ObjectType.OBJECT_INDEX: DROP_INDEX}
_RENAME_RULES = {ObjectType.OBJECT_TABLE: RENAME_TABLE, ObjectType.OBJECT_COLUMN: RENAME_COLUMN}


def _fixed(
    rule: Rule, construct: Callable[[Any], str]
) -> Callable[[Any, ExpandScope], Iterator[Hit]]:
    def hits(node: Any, scope: ExpandScope) -> Iterator[Hit]:
        yield rule, construct(node)

    return hits


_EXPAND: dict[type[ast.Node], Callable[[Any, ExpandScope], Iterator[Hit]]] = {
    ast.CreateStmt: _create_table,
    ast.CreateSeqStmt: _create_sequence,
    ast.AlterSeqStmt: _alter_sequence,
    ast.IndexStmt: _create_index,
    ast.AlterTableStmt: _alter_table,
    ast.DropStmt: _drop,
    ast.RenameStmt: _rename,
    ast.AlterObjectSchemaStmt: _set_schema,
    ast.AlterEnumStmt: _alter_enum,
    ast.SelectStmt: _select,
    ast.InsertStmt: _dml,
    ast.UpdateStmt: _dml,
    ast.DeleteStmt: _dml,
    ast.MergeStmt: _dml,
    ast.VacuumStmt: _vacuum,
    ast.VariableSetStmt: _setting,
    ast.TruncateStmt: _fixed(
        TRUNCATE,
        lambda n: "TRUNCATE " + ", ".join(_relname(r) for r in n.relations or ()),
    ),
    ast.LockStmt: _fixed(
        EXPLICIT_LOCK,
        lambda n: "LOCK TABLE " + ", ".join(_relname(r) for r in n.relations or ()),
    ),
    ast.ClusterStmt: _fixed(TABLE_REWRITE, lambda n: f"CLUSTER {_relname(n.relation)}".rstrip()),
    ast.RuleStmt: _fixed(
        CREATE_RULE, lambda n: f"CREATE RULE {n.rulename} ON {_relname(n.relation)}"
    ),
    ast.CallStmt: _fixed(
        FUNCTION_CALL,
        lambda n: f"CALL {_names(n.funccall.funcname) if n.funccall else '?'}()",
    ),
}
