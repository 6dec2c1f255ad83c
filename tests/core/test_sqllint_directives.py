"""The escape hatch: ``-- pilotboat:allow PBxxx reason`` on a statement turns its refusals of
that rule into findings that need approval; nothing else, and never the guards."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pilotboat.core.sqllint import (
    Severity,
    blocking,
    lint_backfill,
    lint_contract,
    lint_expand,
    split_statements,
)
from pilotboat.core.sqlrules import RULES
from tests.core.test_sqllint_bypasses import BYPASSES

pytestmark = pytest.mark.core

DROP = "ALTER TABLE users DROP COLUMN legacy"


@pytest.mark.parametrize("sql", [
    f"-- pilotboat:allow PB001 nothing has read it since v7\n{DROP}",
    f"{DROP}; -- pilotboat:allow PB001 nothing has read it since v7",
    f"/* pilotboat:allow PB001 nothing has read it since v7 */ {DROP}",
    "ALTER TABLE users /* pilotboat:allow PB001 nothing has read it since v7 */ "
    "DROP COLUMN legacy",
    f"ALTER TABLE users ADD COLUMN a text;\n-- pilotboat:allow PB001 nothing has read it since v7\n"
    f"{DROP};",
    f"-- PILOTBOAT:ALLOW pb001, PB040 nothing has read it since v7\n"
    f"{DROP}, ADD CONSTRAINT c CHECK (a > 0)",
], ids=["above", "after the semicolon", "C comment", "inside", "second statement", "two codes"])
def test_a_directive_turns_the_refusal_into_a_finding_that_needs_approval(sql: str) -> None:
    findings = lint_expand(sql)
    assert findings, sql
    assert all(f.severity is Severity.APPROVE and f.needs_approval for f in findings), findings
    assert all("needs approval: nothing has read it since v7" in f.message for f in findings)
    assert blocking(findings, approved_phases={"expand"}) == ()
    assert blocking(findings) == findings  # not run before someone approves


def test_a_directive_allows_only_the_rules_it_names() -> None:
    sql = ("-- pilotboat:allow PB001 legacy is dead\n"
           "ALTER TABLE users DROP COLUMN legacy, ALTER COLUMN email SET NOT NULL")
    assert [(f.rule, f.severity) for f in lint_expand(sql)] == [
        ("PB001 drop-column", Severity.APPROVE),
        ("PB021 set-not-null", Severity.REFUSE),
    ]


def test_a_directive_belongs_to_one_statement() -> None:
    sql = f"{DROP}; -- pilotboat:allow PB001 legacy is dead\nALTER TABLE orders DROP COLUMN note"
    assert [(f.number, f.severity) for f in lint_expand(sql)] == [
        (1, Severity.APPROVE), (2, Severity.REFUSE)]


@pytest.mark.parametrize(("sql", "expected"), [
    (f"-- pilotboat:allow PB001\n{DROP}",
     [("PB062 allow-directive-invalid", "gives no reason"), ("PB001 drop-column", "")]),
    (f"-- pilotboat:allow because I say so\n{DROP}",
     [("PB062 allow-directive-invalid", "names no rule code"), ("PB001 drop-column", "")]),
    (f"-- pilotboat:allow PB999 typo\n{DROP}",
     [("PB062 allow-directive-invalid", "PB999: no such rule"), ("PB001 drop-column", "")]),
    ("-- pilotboat:allow PB090 we know best\nSET lock_timeout = 0",
     [("PB062 allow-directive-invalid", "PB090 session-settings cannot be allowed"),
      ("PB090 session-settings", "")]),
    ("-- pilotboat:allow PB091 reporting needs it\nGRANT SELECT ON users TO reporting",
     [("PB062 allow-directive-invalid", "cannot be allowed"), ("PB091 privileges", "")]),
    ("-- pilotboat:allow PB050 small table\nCREATE INDEX i ON users (a)",
     [("PB062 allow-directive-invalid", "cannot be allowed"),
      ("PB050 create-index-blocking", "")]),
    ("-- pilotboat:allow PB001 just in case\nALTER TABLE users ADD COLUMN a text",
     [("PB063 allow-directive-unused", "pilotboat:allow PB001")]),
    ("ALTER TABLE users ADD COLUMN a text;\n-- pilotboat:allow PB001 too late\n",
     [("PB063 allow-directive-unused", "after the last statement")]),
])
def test_a_directive_that_cannot_work_is_reported(
    sql: str, expected: list[tuple[str, str]]
) -> None:
    findings = lint_expand(sql)
    assert [f.rule for f in findings] == [rule for rule, _ in expected]
    for finding, (_, says) in zip(findings, expected, strict=True):
        assert says in finding.message


def test_a_directive_in_a_string_or_a_function_body_is_no_directive() -> None:
    sql = ("CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$\n"
           "-- pilotboat:allow PB001 inside the body\nBEGIN RETURN 1; END $$;\n"
           "ALTER TABLE users DROP COLUMN legacy")
    assert [(f.rule, f.severity) for f in lint_expand(sql)] == [
        ("PB001 drop-column", Severity.REFUSE)]


def test_a_directive_works_in_contract_and_backfill_too() -> None:
    delete = ("-- pilotboat:allow PB073 rows of closed accounts\n"
              "DELETE FROM u WHERE id IN (SELECT id FROM u WHERE closed LIMIT :batch_size)")
    (finding,) = lint_backfill(delete)
    assert finding.needs_approval and "rows of closed accounts" in finding.message
    assert [f.rule for f in lint_contract("-- pilotboat:allow PB094 x\nDO $$ BEGIN "
                                          "EXECUTE 'DROP TABLE t'; END $$")] == [
        "PB062 allow-directive-invalid", "PB094 dynamic-sql"]


ALLOWABLE = [(sql, ids) for _, sql, ids in BYPASSES
             if len(split_statements(sql)) == 1
             and all(next(r for r in RULES if r.id == i).allowable for i in ids)]
GUARDED = [(sql, ids) for _, sql, ids in BYPASSES
           if len(split_statements(sql)) == 1
           and not any(next(r for r in RULES if r.id == i).allowable for i in ids)]


@given(st.sampled_from(ALLOWABLE), st.sampled_from(["above", "after", "inside"]),
       st.text(alphabet="abcdefghij klmnop", min_size=1, max_size=30).filter(str.strip))
def test_allowing_every_rule_a_statement_breaks_leaves_no_refusal(
    bypass: tuple[str, list[str]], where: str, reason: str
) -> None:
    sql, ids = bypass
    codes = " ".join(dict.fromkeys(i.split()[0] for i in ids))
    if where == "above":
        text = f"-- pilotboat:allow {codes} {reason}\n{sql}"
    elif where == "after":
        text = f"{sql}; -- pilotboat:allow {codes} {reason}"
    else:
        text = f"/* pilotboat:allow {codes} {reason} */ {sql}"
    findings = lint_expand(text)
    assert [f.rule for f in findings] == ids
    assert all(f.severity is Severity.APPROVE for f in findings)


@given(st.sampled_from(GUARDED))
def test_no_directive_lifts_a_guard(bypass: tuple[str, list[str]]) -> None:
    sql, ids = bypass
    codes = " ".join(dict.fromkeys(i.split()[0] for i in ids))
    findings = lint_expand(f"-- pilotboat:allow {codes} trust me\n{sql}")
    assert [f.rule for f in findings if f.severity is Severity.REFUSE] == [
        "PB062 allow-directive-invalid", *ids]
