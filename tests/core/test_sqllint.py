"""The expand linter: each unsafe statement names its rule; safe ones pass.

The bypasses of issue 13 and the allow-list's properties are in test_sqllint_bypasses.py;
the ``pilotboat:allow`` escape hatch in test_sqllint_directives.py."""

from __future__ import annotations

import doctest

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pilotboat.core import sqllint
from pilotboat.core.sqllint import (
    RULES,
    Severity,
    blocking,
    has_refusal,
    lint_backfill,
    lint_contract,
    lint_down,
    lint_expand,
    lint_verify,
    split_on_batch_size,
    split_statements,
)

pytestmark = pytest.mark.core

EXPAND_TABLE = [
    # (statement, expected rule ids)
    ("ALTER TABLE users ADD COLUMN full_name text", []),
    ("ALTER TABLE users ADD COLUMN n int NOT NULL DEFAULT 0", []),
    ("ALTER TABLE users ADD COLUMN id2 bigint GENERATED ALWAYS AS IDENTITY",
     ["PB023 add-column-serial"]),
    ("CREATE TABLE orders_v2 (id bigint PRIMARY KEY, total numeric NOT NULL)", []),
    ("CREATE TABLE n (a int); CREATE INDEX n_a ON n (a)", []),
    ("CREATE INDEX CONCURRENTLY IF NOT EXISTS users_email ON users (email)", []),
    ("ALTER TABLE o ADD CONSTRAINT o_user FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID",
     []),
    ("ALTER TABLE o ADD CONSTRAINT o_pos CHECK (total >= 0) NOT VALID", []),
    ("ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE USING INDEX users_email", []),
    ("CREATE OR REPLACE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS "
     "$$ BEGIN NEW.b := NEW.a; RETURN NEW; END $$", []),
    ("INSERT INTO settings (k, v) VALUES ('a', 'b')", ["PB033 insert-outside-backfill"]),
    ("CREATE TABLE settings_v2 (k text, v text); INSERT INTO settings_v2 VALUES ('a', 'b')", []),
    ("ALTER TABLE users DROP COLUMN name", ["PB001 drop-column"]),
    ("DROP TABLE legacy", ["PB002 drop-table"]),
    ("DROP INDEX users_name_idx", ["PB003 drop-index"]),
    ("ALTER TABLE users DROP CONSTRAINT users_name_key", ["PB004 drop-constraint"]),
    ("DROP VIEW v_users", ["PB005 drop-object"]),
    ("DROP TRIGGER t ON users", ["PB005 drop-object"]),
    ("ALTER TABLE users ALTER COLUMN name DROP DEFAULT", ["PB006 drop-default"]),
    ("ALTER TABLE users RENAME TO people", ["PB010 rename-table"]),
    ("ALTER TABLE users RENAME COLUMN name TO full_name", ["PB011 rename-column"]),
    ("ALTER INDEX users_name_idx RENAME TO users_n", ["PB012 rename-object"]),
    ("ALTER TABLE users RENAME CONSTRAINT a TO b", ["PB012 rename-object"]),
    ("ALTER TABLE users ALTER COLUMN age TYPE bigint", ["PB020 alter-column-type"]),
    ("ALTER TABLE users ALTER COLUMN email SET NOT NULL", ["PB021 set-not-null"]),
    ("ALTER TABLE users ADD COLUMN tier text NOT NULL",
     ["PB022 add-column-not-null-without-default"]),
    ("ALTER TABLE users ADD COLUMN code text PRIMARY KEY",
     ["PB022 add-column-not-null-without-default", "PB041 add-unique-constraint"]),
    ("TRUNCATE audit", ["PB030 truncate"]),
    ("DELETE FROM users WHERE deleted", ["PB031 delete-outside-backfill"]),
    ("UPDATE users SET full_name = name", ["PB032 update-outside-backfill"]),
    ("ALTER TABLE o ADD CONSTRAINT o_user FOREIGN KEY (user_id) REFERENCES users (id)",
     ["PB040 add-constraint-validating"]),
    ("ALTER TABLE o ADD CONSTRAINT o_pos CHECK (total >= 0)",
     ["PB040 add-constraint-validating"]),
    ("ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE (email)",
     ["PB041 add-unique-constraint"]),
    ("ALTER TABLE users ADD PRIMARY KEY (id)", ["PB041 add-unique-constraint"]),
    ("CREATE INDEX users_email ON users (email)", ["PB050 create-index-blocking"]),
    ("CREATE UNIQUE INDEX users_email ON users (email)", ["PB050 create-index-blocking"]),
    ("CREATE INDEX CONCURRENTLY users_email ON users (email)",
     ["PB051 non-transactional-not-idempotent"]),
    ("ALTER TABLE users ADD COLUMN e text; "
     "CREATE INDEX CONCURRENTLY IF NOT EXISTS users_e ON users (e)", ["PB052 phase-not-atomic"]),
    ("BEGIN; ALTER TABLE users ADD COLUMN e text; COMMIT",
     ["PB060 transaction-control", "PB060 transaction-control"]),
    ("-- nothing but a comment", ["PB061 empty-phase"]),
    ("ALTER TABLE users ADD COLUMN", ["PB000 parse-error"]),
    ("ALTER TABLE users ADD COLUMN a text, DROP COLUMN b, ALTER COLUMN c SET NOT NULL",
     ["PB001 drop-column", "PB021 set-not-null"]),
]


@pytest.mark.parametrize(("statement", "expected"), EXPAND_TABLE,
                         ids=[s[:50] for s, _ in EXPAND_TABLE])
def test_expand_rules(statement: str, expected: list[str]) -> None:
    assert [f.rule for f in lint_expand(statement)] == expected


def test_every_rule_has_a_unique_code_and_a_reason() -> None:
    codes = [rule.code for rule in RULES]
    assert len(codes) == len(set(codes))
    assert codes == sorted(codes)
    assert all(rule.why and rule.id.startswith("PB") for rule in RULES)


# Ids that status, Events, admission warnings and CI logs have carried: they never change.
STABLE_IDS = [
    "PB000 parse-error", "PB001 drop-column", "PB002 drop-table", "PB003 drop-index",
    "PB004 drop-constraint", "PB005 drop-object", "PB006 drop-default", "PB010 rename-table",
    "PB011 rename-column", "PB012 rename-object", "PB020 alter-column-type",
    "PB021 set-not-null", "PB022 add-column-not-null-without-default", "PB030 truncate",
    "PB031 delete-outside-backfill", "PB032 update-outside-backfill",
    "PB040 add-constraint-validating", "PB041 add-unique-constraint",
    "PB050 create-index-blocking", "PB051 non-transactional-not-idempotent",
    "PB052 phase-not-atomic", "PB060 transaction-control", "PB061 empty-phase",
    "PB070 backfill-not-single-statement", "PB071 backfill-not-dml",
    "PB072 backfill-without-batch-size", "PB080 verify-not-single-select",
]


def test_existing_rule_ids_are_stable() -> None:
    assert set(STABLE_IDS) <= {rule.id for rule in RULES}


def test_finding_names_the_statement_and_why_it_belongs_in_contract() -> None:
    sql = "ALTER TABLE users ADD COLUMN full_name text;\nALTER TABLE users DROP COLUMN name;"
    (finding,) = lint_expand(sql)
    assert finding.rule == "PB001 drop-column"
    assert finding.severity is Severity.REFUSE
    assert finding.phase == "expand"
    assert finding.statement == "ALTER TABLE users DROP COLUMN name"
    assert finding.number == 2
    assert finding.message.startswith("statement 2: DROP COLUMN name: ")
    assert "contract" in finding.message


def test_parse_error_carries_the_parsers_message() -> None:
    (finding,) = lint_expand("ALTER TABLE users ADD COLUMN a text;\nSELEC 1;")
    assert finding.rule == "PB000 parse-error"
    assert 'syntax error at or near "SELEC"' in finding.message
    assert "at character 38" in finding.message
    assert finding.number == 2 and finding.message.startswith("statement 2: ")


def test_create_index_blocking_is_only_a_warning() -> None:
    (finding,) = lint_expand("CREATE INDEX i ON t (a)")
    assert finding.severity is Severity.WARN and not finding.refuses


@pytest.mark.parametrize(("sql", "expected"), [
    ("ALTER TABLE users DROP COLUMN name; DROP TABLE legacy", []),
    ("LOCK TABLE users; UPDATE users SET a = 1; SELECT cleanup()", []),
    ("DROP INDEX CONCURRENTLY IF EXISTS users_name", []),
    ("DROP INDEX CONCURRENTLY users_name", ["PB051 non-transactional-not-idempotent"]),
    ("ALTER TABLE users DROP COLUMN", ["PB000 parse-error"]),
    ("COMMIT", ["PB060 transaction-control"]),
])
def test_contract_is_only_checked_for_sanity(sql: str, expected: list[str]) -> None:
    assert [f.rule for f in lint_contract(sql)] == expected


def test_down_may_drop_what_expand_added() -> None:
    assert lint_down("ALTER TABLE users DROP COLUMN IF EXISTS full_name") == ()


@pytest.mark.parametrize(("sql", "expected"), [
    ("UPDATE u SET b = a WHERE id IN (SELECT id FROM u WHERE b IS NULL LIMIT :batch_size)", []),
    ("DELETE FROM u WHERE id IN (SELECT id FROM u WHERE old LIMIT :batch_size)",
     ["PB073 backfill-delete"]),
    ("WITH gone AS (DELETE FROM u_old RETURNING id) "
     "UPDATE u SET moved = true WHERE id IN (SELECT id FROM gone LIMIT :batch_size)",
     ["PB073 backfill-delete"]),
    ("INSERT INTO u2 SELECT * FROM u WHERE id NOT IN (SELECT id FROM u2) LIMIT :batch_size", []),
    ("MERGE INTO u USING v ON u.id = v.id WHEN MATCHED THEN DELETE", ["PB071 backfill-not-dml"]),
    ("UPDATE u SET b = set_config('statement_timeout', '0', true) WHERE id < :batch_size",
     ["PB090 session-settings"]),
    ("UPDATE u SET b = a WHERE b IS NULL", ["PB072 backfill-without-batch-size"]),
    ("SELECT 1", ["PB071 backfill-not-dml"]),
    ("UPDATE u SET b = 1; UPDATE u SET c = 1", ["PB070 backfill-not-single-statement"]),
    ("UPDATE u SET", ["PB000 parse-error"]),
    ("UPDATE u SET b = $$x WHERE id < :batch_size", ["PB000 parse-error"]),  # the lexer fails
])
def test_backfill_rules(sql: str, expected: list[str]) -> None:
    assert [f.rule for f in lint_backfill(sql)] == expected


def test_a_backfill_delete_needs_approval_and_an_approval_of_backfill_lifts_it() -> None:
    findings = lint_backfill("DELETE FROM u WHERE id IN (SELECT id FROM u LIMIT :batch_size)")
    (finding,) = findings
    assert finding.severity is Severity.APPROVE and finding.needs_approval
    assert finding.refuses and has_refusal(findings)  # until approved, it stops the migration
    assert blocking(findings) == findings
    assert blocking(findings, approved_phases={"expand"}) == findings
    assert blocking(findings, approved_phases={"backfill"}) == ()


def test_an_approval_never_lifts_a_refusal() -> None:
    findings = lint_expand("ALTER TABLE users DROP COLUMN name")
    assert blocking(findings, approved_phases={"expand"}) == findings


@pytest.mark.parametrize(("sql", "expected"), [
    ("SELECT count(*) = 0 FROM users WHERE full_name IS NULL", []),
    ("UPDATE users SET a = 1", ["PB080 verify-not-single-select"]),
    ("SELECT true; SELECT false", ["PB080 verify-not-single-select"]),
    ("SELECT set_config('role', 'postgres', false) IS NOT NULL", ["PB090 session-settings"]),
])
def test_verify_rules(sql: str, expected: list[str]) -> None:
    assert [f.rule for f in lint_verify(sql)] == expected


def test_split_marks_statements_that_cannot_run_in_a_transaction() -> None:
    statements = split_statements(
        "CREATE TABLE t (a int);\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS t_a ON public.t (a);\n"
        "REINDEX INDEX CONCURRENTLY t_a; VACUUM t; INSERT INTO t VALUES (1)")
    assert [s.transactional for s in statements] == [True, False, False, False, True]
    assert statements[1].concurrent_index == "public.t_a"
    assert statements[0].concurrent_index is None


def test_batch_size_placeholder_outside_literals_and_casts() -> None:
    sql = "UPDATE t SET b = ':batch_size', c = d::int WHERE id <= :batch_size"
    assert split_on_batch_size(sql) == (
        "UPDATE t SET b = ':batch_size', c = d::int WHERE id <= ", "")


@given(st.text(max_size=200))
def test_linting_never_raises(text: str) -> None:
    for lint in (lint_expand, lint_contract, lint_down, lint_backfill, lint_verify):
        for finding in lint(text):
            assert finding.rule in {rule.id for rule in RULES}
            assert finding.number >= 0
            assert finding.message.startswith(f"statement {finding.number}: ") == (
                finding.number > 0)


def test_docstring_examples() -> None:
    assert doctest.testmod(sqllint).failed == 0
