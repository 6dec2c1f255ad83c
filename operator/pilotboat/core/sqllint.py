"""Lint of migration SQL: what may run while old and new versions of a service share a schema.

An expand/contract migration is safe only if every statement of ``expand`` leaves the schema
usable by the version that runs *now* (the old one) as well as by the version that needs it.
Anything that removes, renames, retypes or tightens what the old version reads or writes
belongs in ``contract``, which runs once no old version is left.

SQL is parsed with pglast (libpg_query, PostgreSQL's own parser), never with regular
expressions. Each finding carries a stable rule id (``PB001 drop-column``), a severity, the
statement it is about, its 1-based number in the phase, and a message naming the statement
number and the offending construct before the reason in words a DBA reads. The rules and
what breaks them live in :mod:`pilotboat.core.sqlrules`.

What each phase takes:

* ``expand`` — an **allow-list**: a statement passes only if its kind is one the linter can
  show leaves the old version working (``CREATE TABLE``, ``ADD COLUMN`` nullable or with a
  constant default, ``ADD CONSTRAINT … NOT VALID``, ``CREATE INDEX CONCURRENTLY IF NOT
  EXISTS``, ``CREATE [OR REPLACE] VIEW / FUNCTION / TRIGGER`` …; docs/migrations.md has the
  list). Everything else is refused, with a specific rule where one fits and PB100 where
  none does.
* ``contract`` and ``down`` — destructive statements are what they are for; only the guards
  of every phase and the runner's needs (no transaction control, idempotent statements
  outside the transaction) apply.
* ``backfill`` — one INSERT or UPDATE; a DELETE is a finding that needs approval (PB073).
* ``verify`` — one SELECT.
* Every phase — no change of the session's timeouts or role, no privileges, roles,
  databases or server settings, no anonymous code block running dynamic SQL (PB090–PB094),
  nothing naming the migration history's schema ``pilotboat`` (PB095).

Severities:

* ``refuse``  — the migration must not run as written (the handler sets the migration to
  ``Failed`` with the findings);
* ``approve`` — it must not run until approved: :attr:`LintFinding.refuses` is true for it,
  so a caller that knows nothing of approvals refuses it; :func:`blocking` tells which
  findings an approval of their phase lifts;
* ``warn``    — it may run, but someone should look (reported as an Event and in status).

The escape hatch is a comment on the statement, ``-- pilotboat:allow PB001 reason`` (above
it, inside it, or after its semicolon on the same line; several codes may be given, then
the reason): each refusal of a named rule on that statement becomes a finding that needs
approval, its message carrying the reason. A directive without a reason, or naming a rule
that cannot be allowed (the every-phase guards, parse errors, the phase's shape) is itself
refused (PB062); one naming a rule the statement does not break is a warning (PB063).

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
* A table created earlier in the same expand phase by ``CREATE TABLE`` (not ``CREATE TABLE
  IF NOT EXISTS``, which may meet an old table) is invisible to the old version: ALTERs,
  indexes and INSERTs on it pass.
* Statements PostgreSQL refuses inside a transaction (``CREATE INDEX CONCURRENTLY`` …) run
  outside the phase's transaction, so a crash can leave them half done and a re-run repeats
  them: they must be idempotent (``IF NOT EXISTS`` / ``IF EXISTS``), or they are refused
  (PB051) — in every phase, contract included.

Example:

>>> [f.rule for f in lint_expand("ALTER TABLE users DROP COLUMN name;")]
['PB001 drop-column']
>>> lint_expand("ALTER TABLE users ADD COLUMN full_name text;")
()
>>> lint_expand("LOCK TABLE users;")[0].message.split(": ")[:2]
['statement 1', 'LOCK TABLE users']
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from pglast import ast, parse_sql, scan
from pglast.parser import ParseError

from pilotboat.core.sqlrules import (
    ALLOW_INVALID,
    ALLOW_UNUSED,
    BACKFILL_DELETE,
    BACKFILL_NO_BATCH_SIZE,
    BACKFILL_NOT_DML,
    BACKFILL_SINGLE,
    BATCH_SIZE_PARAMETER,
    EMPTY_PHASE,
    PARSE_ERROR,
    PHASE_NOT_ATOMIC,
    RULES,
    VERIFY_NOT_SELECT,
    ExpandScope,
    Hit,
    Rule,
    Severity,
    common_hits,
    expand_hits,
    guard_hits,
    statement_kind,
    walk,
)

__all__ = [
    "ALLOW_DIRECTIVE",
    "BATCH_SIZE_PARAMETER",
    "RULES",
    "LintFinding",
    "Rule",
    "Severity",
    "SqlParseError",
    "SqlStatement",
    "blocking",
    "has_refusal",
    "lint_backfill",
    "lint_contract",
    "lint_down",
    "lint_expand",
    "lint_verify",
    "split_on_batch_size",
    "split_statements",
]

ALLOW_DIRECTIVE = "pilotboat:allow"
"""The comment that turns a refusal into a finding that needs approval:
``-- pilotboat:allow PB001 the column was never read``."""


@dataclass(frozen=True)
class LintFinding:
    """One problem found in one statement of one phase."""

    rule: str
    """Rule id, e.g. ``"PB001 drop-column"``."""
    severity: Severity
    phase: str
    statement: str
    """The statement's text as written (stripped), or the whole SQL for a finding about the
    phase (a parse error, an empty phase, a phase that cannot be atomic)."""
    message: str
    """``statement N: <construct>: <why>``; without the number for a finding about the phase."""
    number: int = 0
    """The statement's 1-based number in its phase; 0 for a finding about the whole phase."""

    @property
    def refuses(self) -> bool:
        """Whether the finding stops the migration as it stands: a refusal, or a finding
        that needs an approval nobody has given yet (see :func:`blocking`)."""
        return self.severity in {Severity.REFUSE, Severity.APPROVE}

    @property
    def needs_approval(self) -> bool:
        """Whether an approval of the finding's phase lets the phase run despite it."""
        return self.severity is Severity.APPROVE


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
        SqlStatement(s.text, not _runs_outside_transaction(s.node), _concurrent_index(s.node))
        for s in _parse(sql)
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
    """Whether any finding stops the migration as it stands (approvals not considered)."""
    return any(f.refuses for f in findings)


def blocking(
    findings: Iterable[LintFinding], approved_phases: Collection[str] = ()
) -> tuple[LintFinding, ...]:
    """The findings that stop a migration: every refusal, and every finding that needs
    approval in a phase not in ``approved_phases``.

    >>> found = lint_backfill("DELETE FROM t WHERE id IN (SELECT id FROM t LIMIT :batch_size)")
    >>> [f.rule for f in blocking(found)], blocking(found, {"backfill"})
    (['PB073 backfill-delete'], ())
    """
    return tuple(
        f
        for f in findings
        if f.severity is Severity.REFUSE
        or (f.severity is Severity.APPROVE and f.phase not in approved_phases)
    )


def lint_expand(sql: str) -> tuple[LintFinding, ...]:
    """Findings for an ``expand`` phase: every statement outside the allow-list, and
    everything that would break the running version.

    >>> [f.rule for f in lint_expand("ALTER TABLE t RENAME COLUMN a TO b")]
    ['PB011 rename-column']
    >>> [f.rule for f in lint_expand("CREATE INDEX i ON t (a)")]
    ['PB050 create-index-blocking']
    >>> [f.rule for f in lint_expand("CREATE TABLE n (a int); CREATE INDEX i ON n (a)")]
    []
    >>> [f.rule for f in lint_expand("CREATE TABLE IF NOT EXISTS n (a int); DELETE FROM n")]
    ['PB031 delete-outside-backfill']
    >>> [(f.rule, f.severity.value) for f in lint_expand(
    ...     "-- pilotboat:allow PB001 nothing reads it since v7\\n"
    ...     "ALTER TABLE t DROP COLUMN legacy")]
    [('PB001 drop-column', 'approve')]
    """
    scope = ExpandScope()
    return _lint_phase("expand", sql, lambda node: expand_hits(node, scope))


def lint_contract(sql: str) -> tuple[LintFinding, ...]:
    """Findings for a ``contract`` phase: the guards of every phase, parse, transaction
    control and crash safety only (destruction is what contract is for).

    >>> [f.rule for f in lint_contract("ALTER TABLE t DROP COLUMN a; DROP ROLE app")]
    ['PB092 roles']
    """
    return _lint_phase("contract", sql, None)


def lint_down(sql: str) -> tuple[LintFinding, ...]:
    """Findings for ``expand.down``, which undoes expand after a rollback (drops are its job)."""
    return _lint_phase("down", sql, None)


def lint_backfill(sql: str) -> tuple[LintFinding, ...]:
    """Findings for a backfill statement: one INSERT or UPDATE, batched with ``:batch_size``;
    a DELETE needs approval (PB073).

    >>> lint_backfill("UPDATE t SET b = a WHERE id IN "
    ...               "(SELECT id FROM t WHERE b IS NULL LIMIT :batch_size)")
    ()
    """
    parsed = _parse_or_finding("backfill", sql)
    if isinstance(parsed, LintFinding):
        return (parsed,)
    if len(parsed) != 1:
        return (
            _finding(
                BACKFILL_SINGLE, "backfill", sql.strip(), 0, f"found {len(parsed)} statements"
            ),
        )
    batched = len(split_on_batch_size(sql)) > 1
    return _judge("backfill", sql, parsed, lambda node: _backfill_hits(node, batched), guard_hits)


def lint_verify(sql: str) -> tuple[LintFinding, ...]:
    """Findings for a verify query: exactly one SELECT."""
    parsed = _parse_or_finding("verify", sql)
    if isinstance(parsed, LintFinding):
        return (parsed,)
    if len(parsed) != 1 or not isinstance(parsed[0].node, ast.SelectStmt):
        kinds = ", ".join(statement_kind(s.node) for s in parsed) or "no statement"
        return (_finding(VERIFY_NOT_SELECT, "verify", sql.strip(), 0, f"found {kinds}"),)
    return _judge("verify", sql, parsed, None, guard_hits)


# --- internals -------------------------------------------------------------------------------


class _Statement(NamedTuple):
    text: str
    node: ast.Node
    start: int
    end: int


_Parsed = tuple[_Statement, ...]
_Checks = Callable[[ast.Node], Iterable[Hit]]


def _parse(sql: str) -> _Parsed:
    try:
        pieces = split_on_batch_size(sql) if BATCH_SIZE_PARAMETER in sql else (sql,)
        # "$1" (padded to keep offsets) parses, and is what the placeholder becomes on the wire.
        parseable = "$1".ljust(len(BATCH_SIZE_PARAMETER)).join(pieces)
        raw = parse_sql(parseable)
    except ParseError as error:
        message, location = error.args[0], error.args[1] if len(error.args) > 1 else None
        raise SqlParseError(str(message), location) from None
    out: list[_Statement] = []
    for item in raw:
        start = item.stmt_location or 0
        end = start + item.stmt_len if item.stmt_len else len(parseable)
        if item.stmt is not None:
            out.append(_Statement(sql[start:end].strip(), item.stmt, start, end))
    return tuple(out)


def _parse_or_finding(phase: str, sql: str) -> _Parsed | LintFinding:
    try:
        return _parse(sql)
    except SqlParseError as error:
        where = f" at character {error.location + 1}" if error.location is not None else ""
        number = _statement_at(sql, error.location) if error.location is not None else 0
        return _finding(PARSE_ERROR, phase, sql.strip(), number, f"{error.message}{where}")


def _statement_at(sql: str, location: int) -> int:
    """The 1-based number of the statement holding ``location``, 0 when the lexer fails."""
    try:
        tokens = scan(sql)
    except ParseError:
        return 0
    return 1 + sum(1 for t in tokens if t.name == "ASCII_59" and t.end < location)


def _finding(
    rule: Rule,
    phase: str,
    statement: str,
    number: int = 0,
    construct: str = "",
    *,
    allowed_because: str | None = None,
) -> LintFinding:
    where = f"statement {number}: " if number else ""
    what = f"{construct}: " if construct else ""
    message = f"{where}{what}{rule.why}"
    severity = rule.severity
    if allowed_because is not None:
        severity = Severity.APPROVE
        message += f" (allowed by {ALLOW_DIRECTIVE}, needs approval: {allowed_because})"
    return LintFinding(rule.id, severity, phase, statement, message, number)


def _lint_phase(phase: str, sql: str, checks: _Checks | None) -> tuple[LintFinding, ...]:
    parsed = _parse_or_finding(phase, sql)
    if isinstance(parsed, LintFinding):
        return (parsed,)
    if not parsed:
        return (_finding(EMPTY_PHASE, phase, sql.strip()),)
    findings = list(_judge(phase, sql, parsed, checks, common_hits))
    outside = [not _runs_outside_transaction(s.node) for s in parsed]
    if len(parsed) > 1 and not all(outside) and any(outside):
        findings.append(_finding(PHASE_NOT_ATOMIC, phase, sql.strip()))
    return tuple(findings)


def _judge(
    phase: str,
    sql: str,
    parsed: _Parsed,
    checks: _Checks | None,
    base: Callable[[ast.Node], Iterable[Hit]],
) -> tuple[LintFinding, ...]:
    """Each statement's findings: ``base`` first; ``checks`` (the phase's own) only when
    ``base`` refused nothing; then what the statement's directives make of them."""
    directives, stray = _directives(sql, parsed)
    findings: list[LintFinding] = []
    for number, statement in enumerate(parsed, 1):
        hits = list(base(statement.node))
        if checks is not None and not any(r.severity is Severity.REFUSE for r, _ in hits):
            hits += list(checks(statement.node))
        found = _apply_directives(
            phase, number, statement.text, list(dict.fromkeys(hits)), directives.get(number, [])
        )
        findings += found
    for directive in stray:
        construct = f"{ALLOW_DIRECTIVE} {' '.join(directive.codes)} after the last statement"
        findings.append(_finding(ALLOW_UNUSED, phase, sql.strip(), 0, construct))
    return tuple(findings)


def _backfill_hits(node: ast.Node, batched: bool) -> Iterator[Hit]:
    if not isinstance(node, ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt):
        yield BACKFILL_NOT_DML, f"found {statement_kind(node)}"
        return
    for inner in walk(node):
        if isinstance(inner, ast.DeleteStmt):
            table = inner.relation.relname if inner.relation is not None else "?"
            yield BACKFILL_DELETE, f"{'' if inner is node else 'WITH … '}DELETE FROM {table}"
    if not batched:
        yield BACKFILL_NO_BATCH_SIZE, f"no {BATCH_SIZE_PARAMETER}"


# --- the escape hatch ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Directive:
    codes: tuple[str, ...]
    reason: str

    def problem(self) -> str | None:
        """Why the directive is invalid, or None."""
        if not self.codes:
            return f"{ALLOW_DIRECTIVE} names no rule code"
        for code in self.codes:
            rule = _BY_CODE.get(code)
            if rule is None:
                return f"{ALLOW_DIRECTIVE} {code}: no such rule"
            if not (rule.allowable or rule.severity is Severity.APPROVE):
                return f"{ALLOW_DIRECTIVE} {code}: {rule.id} cannot be allowed"
        if not self.reason:
            return f"{ALLOW_DIRECTIVE} {' '.join(self.codes)} gives no reason"
        return None


_BY_CODE = {rule.code: rule for rule in RULES}


def _apply_directives(
    phase: str, number: int, text: str, hits: list[Hit], directives: list[_Directive]
) -> list[LintFinding]:
    findings: list[LintFinding] = []
    allowed: dict[str, str] = {}
    for directive in directives:
        problem = directive.problem()
        if problem is not None:
            findings.append(_finding(ALLOW_INVALID, phase, text, number, problem))
        else:
            allowed.update(dict.fromkeys(directive.codes, directive.reason))
    used: set[str] = set()
    for rule, construct in hits:
        reason = allowed.get(rule.code)
        if reason is not None:
            used.add(rule.code)
        lifts = rule.allowable or rule.severity is Severity.APPROVE
        because = reason if reason is not None and lifts else None
        findings.append(_finding(rule, phase, text, number, construct, allowed_because=because))
    for code in allowed.keys() - used:
        construct = f"{ALLOW_DIRECTIVE} {code}"
        findings.append(_finding(ALLOW_UNUSED, phase, text, number, construct))
    return findings


def _directives(sql: str, parsed: _Parsed) -> tuple[dict[int, list[_Directive]], list[_Directive]]:
    """The directives in ``sql``'s comments, by the 1-based number of their statement, and
    those after the last statement."""
    by_statement: dict[int, list[_Directive]] = {}
    stray: list[_Directive] = []
    if ALLOW_DIRECTIVE not in sql.lower():
        return by_statement, stray
    for token in scan(sql):
        if token.name not in {"SQL_COMMENT", "C_COMMENT"}:
            continue
        directive = _directive(sql[token.start : token.end + 1])
        if directive is None:
            continue
        number = _owner(sql, parsed, token.start)
        if number:
            by_statement.setdefault(number, []).append(directive)
        else:
            stray.append(directive)
    return by_statement, stray


def _directive(comment: str) -> _Directive | None:
    body = comment[2:-2] if comment.startswith("/*") else comment[2:]
    body = body.strip()
    if not body.lower().startswith(ALLOW_DIRECTIVE):
        return None
    rest = body[len(ALLOW_DIRECTIVE) :]
    if rest and not rest[0].isspace():
        return None
    words = rest.replace(",", " ").split()
    codes: list[str] = []
    while words and words[0].upper().startswith("PB") and words[0][2:].isdigit():
        codes.append(words.pop(0).upper())
    return _Directive(tuple(codes), " ".join(words))


def _owner(sql: str, parsed: _Parsed, offset: int) -> int:
    """The statement a comment at ``offset`` belongs to: the one whose line it ends (a
    comment after ``;`` on the same line), else the one it is inside or above; 0 after the
    last statement."""
    before = [n for n, s in enumerate(parsed, 1) if s.end <= offset]
    if before and "\n" not in sql[parsed[before[-1] - 1].end : offset]:
        return before[-1]
    return next((n for n, s in enumerate(parsed, 1) if s.end > offset), 0)


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
