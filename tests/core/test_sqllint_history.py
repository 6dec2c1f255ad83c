"""Issue 13: no phase of a migration may name the migration history's schema (PB095).

The history lives in schema ``pilotboat``, owned by the owner role that migrations run as;
PostgreSQL would let a migration edit it, so the linter refuses every statement that names
it, in every phase, however it is spelt; names that merely start alike pass.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pilotboat.core.sqllint import (
    RULES,
    LintFinding,
    lint_backfill,
    lint_contract,
    lint_down,
    lint_expand,
    lint_verify,
)

pytestmark = pytest.mark.core

RULE = "PB095 history-schema"

NAMING = [
    "DELETE FROM pilotboat.pilotboat_schema_history",
    "UPDATE pilotboat.pilotboat_schema_history SET checksum = 'x'",
    "INSERT INTO pilotboat.pilotboat_schema_history (migration) VALUES ('m')",
    'TRUNCATE "pilotboat".pilotboat_backfill_progress',
    "DELETE FROM pilotboat_schema_history",  # unqualified, via a search_path
    "DROP SCHEMA pilotboat CASCADE",
    "ALTER SCHEMA pilotboat RENAME TO old_history",
    "ALTER SCHEMA pilotboat OWNER TO someone",
    "CREATE SCHEMA pilotboat",
    "ALTER TABLE orders SET SCHEMA pilotboat",
    "SET search_path = pilotboat, public",
    "CREATE TABLE pilotboat.shadow (id int)",
    "CREATE VIEW history AS SELECT * FROM pilotboat.pilotboat_schema_history",
    "SELECT count(*) FROM pilotboat.pilotboat_schema_history",
    "SELECT to_regclass('pilotboat.pilotboat_schema_history') IS NOT NULL",
    "CREATE FUNCTION wipe() RETURNS void LANGUAGE sql "
    "AS $$ DELETE FROM pilotboat.pilotboat_schema_history $$",
    "CREATE FUNCTION wipe() RETURNS void LANGUAGE sql SET search_path = pilotboat "
    "AS $$ SELECT 1 $$",
    "DO $$ BEGIN DELETE FROM pilotboat.pilotboat_backfill_progress; END $$",
    "COMMENT ON SCHEMA pilotboat IS 'mine now'",
]

NOT_NAMING = [
    "ALTER TABLE orders ADD COLUMN IF NOT EXISTS pilotboat_note text",
    "CREATE TABLE IF NOT EXISTS pilotboats (id int)",
    "CREATE TABLE IF NOT EXISTS public.history (id int)",
]

Lint = Callable[[str], tuple[LintFinding, ...]]
PHASES: list[tuple[str, Lint]] = [("expand", lint_expand), ("contract", lint_contract),
                                  ("down", lint_down)]


def test_the_rule_is_known_and_refuses() -> None:
    rule = next(r for r in RULES if r.id == RULE)
    assert rule.severity == "refuse"


@pytest.mark.parametrize("sql", NAMING, ids=[s[:50] for s in NAMING])
@pytest.mark.parametrize(("phase", "lint"), PHASES, ids=[p for p, _ in PHASES])
def test_every_phase_refuses_a_statement_naming_the_history(phase: str, lint: Lint,
                                                             sql: str) -> None:
    findings = [f for f in lint(sql) if f.rule == RULE]
    assert len(findings) == 1, lint(sql)
    assert findings[0].refuses and findings[0].phase == phase
    assert "pilotboat" in findings[0].message


def test_a_directive_cannot_allow_it() -> None:
    sql = "-- pilotboat:allow PB095 just this once\nDELETE FROM pilotboat.pilotboat_schema_history"
    assert RULE in [f.rule for f in lint_contract(sql) if f.refuses]


def test_backfill_and_verify_refuse_it_too() -> None:
    backfill = ("UPDATE pilotboat.pilotboat_backfill_progress SET done = true WHERE migration "
                "IN (SELECT migration FROM pilotboat.pilotboat_backfill_progress "
                "LIMIT :batch_size)")
    assert RULE in [f.rule for f in lint_backfill(backfill) if f.refuses]
    verify = "SELECT EXISTS (SELECT 1 FROM pilotboat.pilotboat_schema_history)"
    assert RULE in [f.rule for f in lint_verify(verify) if f.refuses]


@pytest.mark.parametrize("sql", NOT_NAMING)
def test_names_that_only_look_alike_pass(sql: str) -> None:
    assert RULE not in [f.rule for f in lint_expand(sql)]
    assert RULE not in [f.rule for f in lint_contract(sql)]
