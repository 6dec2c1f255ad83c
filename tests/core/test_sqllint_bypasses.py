"""Issue 13: what expand used to let through is refused, each bypass with its rule id; the
allow-list still takes ordinary expand statements (and the shop's migration); and the
guards of every phase hold in contract and down as well."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from pilotboat.core.sqllint import (
    RULES,
    Severity,
    lint_backfill,
    lint_contract,
    lint_down,
    lint_expand,
    lint_verify,
    split_statements,
)
from tests.core.test_sqllint import EXPAND_TABLE

pytestmark = pytest.mark.core

SHOP_MIGRATION = Path(__file__).resolve().parents[2] / "examples" / "shop" / "orders-migration.yaml"

# (why it matters, the expand SQL, the rule ids it draws — all refusals)
BYPASSES = [
    ("dynamic SQL in a DO block",
     "DO $$ BEGIN EXECUTE 'ALTER TABLE users DROP COLUMN name'; END $$",
     ["PB094 dynamic-sql"]),
    ("dynamic SQL in a DO block, FOR … IN EXECUTE",
     "DO $$ DECLARE r record; BEGIN FOR r IN EXECUTE 'SELECT 1' LOOP END LOOP; END $$",
     ["PB094 dynamic-sql"]),
    ("a DO block in another language", "DO LANGUAGE plperl $$ spi_exec_query('x') $$",
     ["PB094 dynamic-sql"]),
    ("a DO block, even without EXECUTE", "DO $$ BEGIN DELETE FROM users; END $$",
     ["PB100 not-on-expand-allow-list"]),
    ("a writable CTE that deletes",
     "WITH d AS (DELETE FROM users WHERE deleted RETURNING id) SELECT count(*) FROM d",
     ["PB031 delete-outside-backfill"]),
    ("a writable CTE that updates",
     "WITH u AS (UPDATE users SET a = 1 RETURNING id) SELECT count(*) FROM u",
     ["PB032 update-outside-backfill"]),
    ("MERGE … WHEN MATCHED THEN DELETE",
     "MERGE INTO users u USING legacy l ON u.id = l.id WHEN MATCHED THEN DELETE",
     ["PB031 delete-outside-backfill"]),
    ("MERGE … THEN UPDATE / INSERT",
     "MERGE INTO users u USING legacy l ON u.id = l.id WHEN MATCHED THEN UPDATE SET a = 1 "
     "WHEN NOT MATCHED THEN INSERT (id) VALUES (l.id)",
     ["PB032 update-outside-backfill", "PB033 insert-outside-backfill"]),
    ("a function called by SELECT", "SELECT purge_inactive_users()", ["PB036 function-call"]),
    ("a schema-qualified function", "SELECT public.now()", ["PB036 function-call"]),
    ("a function in FROM", "SELECT * FROM purge_inactive_users()", ["PB036 function-call"]),
    ("a procedure", "CALL purge_inactive_users()", ["PB036 function-call"]),
    ("a user's operator", "SELECT 1 OPERATOR(public.+) 2", ["PB036 function-call"]),
    ("CREATE RULE", "CREATE RULE no_insert AS ON INSERT TO users DO INSTEAD NOTHING",
     ["PB037 create-rule"]),
    ("ALTER TABLE … SET SCHEMA", "ALTER TABLE users SET SCHEMA archive", ["PB013 set-schema"]),
    ("ALTER FUNCTION … SET SCHEMA", "ALTER FUNCTION f() SET SCHEMA archive",
     ["PB013 set-schema"]),
    ("SET lock_timeout = 0", "SET lock_timeout = 0", ["PB090 session-settings"]),
    ("SET statement_timeout", "SET statement_timeout = '1h'", ["PB090 session-settings"]),
    ("SET LOCAL lock_timeout", "SET LOCAL lock_timeout = '1min'", ["PB090 session-settings"]),
    ("RESET statement_timeout", "RESET statement_timeout", ["PB090 session-settings"]),
    ("RESET ALL", "RESET ALL", ["PB090 session-settings"]),
    ("SET idle_in_transaction_session_timeout",
     "SET idle_in_transaction_session_timeout = 0", ["PB090 session-settings"]),
    ("SET ROLE", "SET ROLE postgres", ["PB090 session-settings"]),
    ("SET SESSION AUTHORIZATION", "SET SESSION AUTHORIZATION postgres",
     ["PB090 session-settings"]),
    ("set_config of a timeout", "SELECT set_config('lock_timeout', '0', false)",
     ["PB090 session-settings"]),
    ("set_config of a setting it cannot read", "SELECT set_config(current_user, '0', false)",
     ["PB090 session-settings"]),
    ("a timeout set inside a DO block", "DO $$ BEGIN SET lock_timeout = 0; END $$",
     ["PB090 session-settings"]),
    ("DISCARD ALL", "DISCARD ALL", ["PB090 session-settings"]),
    ("LOCK TABLE", "LOCK TABLE users IN ACCESS EXCLUSIVE MODE", ["PB034 explicit-lock"]),
    ("SELECT … FOR UPDATE", "SELECT id FROM users FOR UPDATE", ["PB034 explicit-lock"]),
    ("REVOKE", "REVOKE SELECT ON users FROM app", ["PB091 privileges"]),
    ("GRANT", "GRANT SELECT ON users TO reporting", ["PB091 privileges"]),
    ("GRANT of a role", "GRANT pg_read_all_data TO app", ["PB091 privileges"]),
    ("ALTER DEFAULT PRIVILEGES", "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO reporting",
     ["PB091 privileges"]),
    ("OWNER TO", "ALTER TABLE users OWNER TO someone_else", ["PB091 privileges"]),
    ("VACUUM FULL", "VACUUM FULL users", ["PB035 table-rewrite"]),
    ("CLUSTER", "CLUSTER users USING users_pkey", ["PB035 table-rewrite"]),
    ("SET TABLESPACE", "ALTER TABLE users SET TABLESPACE slow", ["PB035 table-rewrite"]),
    ("SET UNLOGGED", "ALTER TABLE users SET UNLOGGED", ["PB035 table-rewrite"]),
    ("ADD COLUMN … bigserial", "ALTER TABLE users ADD COLUMN seq bigserial",
     ["PB023 add-column-serial"]),
    ("ADD COLUMN … serial", "ALTER TABLE users ADD COLUMN seq serial",
     ["PB023 add-column-serial"]),
    ("ADD COLUMN … smallserial", "ALTER TABLE users ADD COLUMN seq smallserial",
     ["PB023 add-column-serial"]),
    ("ADD COLUMN … GENERATED AS IDENTITY",
     "ALTER TABLE users ADD COLUMN seq bigint GENERATED BY DEFAULT AS IDENTITY",
     ["PB023 add-column-serial"]),
    ("ADD COLUMN with a volatile default",
     "ALTER TABLE users ADD COLUMN token uuid DEFAULT gen_random_uuid()",
     ["PB024 add-column-volatile-default"]),
    ("ADD COLUMN with a sequence default",
     "ALTER TABLE users ADD COLUMN seq bigint DEFAULT nextval('users_seq')",
     ["PB024 add-column-volatile-default"]),
    ("ADD COLUMN … GENERATED ALWAYS AS (…) STORED",
     "ALTER TABLE users ADD COLUMN lower_email text GENERATED ALWAYS AS (lower(email)) STORED",
     ["PB024 add-column-volatile-default"]),
    ("ADD COLUMN … REFERENCES", "ALTER TABLE orders ADD COLUMN user_id bigint REFERENCES users",
     ["PB040 add-constraint-validating"]),
    ("SET DEFAULT on a column the old version writes",
     "ALTER TABLE users ALTER COLUMN tier SET DEFAULT 'gold'", ["PB007 change-default"]),
    ("DROP DATABASE", "DROP DATABASE shop_orders", ["PB093 database-or-server"]),
    ("ALTER DATABASE … SET", "ALTER DATABASE shop_orders SET lock_timeout = 0",
     ["PB093 database-or-server"]),
    ("ALTER SYSTEM", "ALTER SYSTEM SET statement_timeout = 0", ["PB093 database-or-server"]),
    ("DROP ROLE", "DROP ROLE app", ["PB092 roles"]),
    ("CREATE ROLE", "CREATE ROLE sneaky LOGIN", ["PB092 roles"]),
    ("ALTER ROLE", "ALTER ROLE app SUPERUSER", ["PB092 roles"]),
    ("ALTER ROLE … SET", "ALTER ROLE app SET statement_timeout = 0", ["PB092 roles"]),
    ("CREATE TABLE IF NOT EXISTS does not exempt an old table",
     "CREATE TABLE IF NOT EXISTS users (id bigint); ALTER TABLE users DROP COLUMN name",
     ["PB001 drop-column"]),
    ("… nor inserts into it",
     "CREATE TABLE IF NOT EXISTS users (id bigint); INSERT INTO users (id) VALUES (1)",
     ["PB033 insert-outside-backfill"]),
    ("an INSERT into a table the old version uses", "INSERT INTO users (id) VALUES (1)",
     ["PB033 insert-outside-backfill"]),
    ("SELECT … INTO", "SELECT * INTO users_copy FROM users",
     ["PB100 not-on-expand-allow-list"]),
    ("CREATE MATERIALIZED VIEW", "CREATE MATERIALIZED VIEW mv AS SELECT * FROM users",
     ["PB100 not-on-expand-allow-list"]),
    ("CREATE TABLE … PARTITION OF an old table",
     "CREATE TABLE events_2030 PARTITION OF events "
     "FOR VALUES FROM ('2030-01-01') TO ('2031-01-01')",
     ["PB100 not-on-expand-allow-list"]),
    ("row level security", "ALTER TABLE users ENABLE ROW LEVEL SECURITY",
     ["PB100 not-on-expand-allow-list"]),
    ("a trigger disabled", "ALTER TABLE users DISABLE TRIGGER users_audit",
     ["PB100 not-on-expand-allow-list"]),
    ("an enum value renamed", "ALTER TYPE mood RENAME VALUE 'sad' TO 'blue'",
     ["PB012 rename-object"]),
    ("an extension", "CREATE EXTENSION IF NOT EXISTS dblink", ["PB100 not-on-expand-allow-list"]),
    ("a prepared statement run", "EXECUTE purge(1)", ["PB100 not-on-expand-allow-list"]),
    ("EXPLAIN ANALYZE runs its statement", "EXPLAIN ANALYZE DELETE FROM users",
     ["PB100 not-on-expand-allow-list"]),
]

# Ordinary expand statements: the allow-list takes them without a finding.
SAFE = [
    "CREATE TABLE audit (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
    "at timestamptz NOT NULL DEFAULT now(), who text REFERENCES users (name))",
    "CREATE TABLE tickets (id bigserial PRIMARY KEY, body text)",
    "CREATE TEMP TABLE scratch (a int)",
    "CREATE TABLE n (a int); ALTER TABLE n ADD COLUMN b bigserial, DROP COLUMN a; "
    "CREATE INDEX n_b ON n (b); INSERT INTO n (b) SELECT id FROM users; UPDATE n SET b = b + 1",
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS users_email ON users (email)",
    "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS users_email_key ON users (lower(email))",
    "ALTER TABLE users ADD COLUMN nickname text",
    "ALTER TABLE users ADD COLUMN IF NOT EXISTS nickname text COLLATE \"C\"",
    "ALTER TABLE users ADD COLUMN score int NOT NULL DEFAULT 0",
    "ALTER TABLE users ADD COLUMN prefs jsonb NOT NULL DEFAULT '{}'::jsonb",
    "ALTER TABLE users ADD COLUMN tags text[] DEFAULT ARRAY['new']",
    "ALTER TABLE users ADD COLUMN seen_at timestamptz DEFAULT now()",
    "ALTER TABLE users ADD COLUMN created timestamptz DEFAULT CURRENT_TIMESTAMP",
    "ALTER TABLE users ADD COLUMN ratio numeric DEFAULT -1.5",
    "ALTER TABLE users ADD COLUMN c int; ALTER TABLE users ALTER COLUMN c SET DEFAULT 0",
    "ALTER TABLE users ALTER COLUMN legacy DROP NOT NULL",
    "ALTER TABLE users ALTER COLUMN email SET STATISTICS 500",
    "ALTER TABLE users SET (autovacuum_vacuum_scale_factor = 0.01)",
    "ALTER TABLE o ADD CONSTRAINT o_user FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID",
    "ALTER TABLE o ADD CONSTRAINT o_pos CHECK (total >= 0) NOT VALID",
    "ALTER TABLE o VALIDATE CONSTRAINT o_pos",
    "ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE USING INDEX users_email_key",
    "CREATE OR REPLACE VIEW active_users AS SELECT id, email FROM users WHERE NOT deleted",
    "CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$",
    "CREATE OR REPLACE FUNCTION g(x int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT x + 1'",
    "CREATE OR REPLACE TRIGGER t BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION f()",
    "CREATE TYPE mood AS ENUM ('happy', 'sad')",
    "ALTER TYPE mood ADD VALUE IF NOT EXISTS 'meh' AFTER 'happy'",
    "CREATE TYPE money_pair AS (amount numeric, currency text)",
    "CREATE DOMAIN email AS text CHECK (VALUE LIKE '%@%')",
    "COMMENT ON COLUMN users.nickname IS 'shown in the header'",
    "CREATE SEQUENCE ticket_numbers; ALTER SEQUENCE ticket_numbers RESTART 1000",
    "CREATE STATISTICS users_city_zip ON city, zip FROM users",
    "SELECT pg_sleep(1)",
    "SELECT count(*) FROM users WHERE lower(email) = 'a@b.c'",
    "SET LOCAL maintenance_work_mem = '1GB'",
    "ANALYZE users",
]


@pytest.mark.parametrize(("sql", "expected"), [(sql, ids) for _, sql, ids in BYPASSES],
                         ids=[why for why, _, _ in BYPASSES])
def test_each_bypass_is_refused_with_its_rule(sql: str, expected: list[str]) -> None:
    findings = lint_expand(sql)
    assert [f.rule for f in findings] == expected
    assert all(f.severity is Severity.REFUSE for f in findings)
    number = len(split_statements(sql))  # the bypass is the last statement
    assert all(f.number == number and f.message.startswith(f"statement {number}: ")
               for f in findings), findings


@pytest.mark.parametrize("sql", SAFE, ids=[s[:60] for s in SAFE])
def test_ordinary_expand_statements_pass(sql: str) -> None:
    assert lint_expand(sql) == ()


def test_the_shops_migration_lints_clean_in_every_phase() -> None:
    spec = yaml.safe_load(SHOP_MIGRATION.read_text())["spec"]
    assert lint_expand(spec["expand"]["sql"]) == ()
    assert lint_down(spec["expand"]["down"]) == ()
    assert lint_backfill(spec["backfill"]["sql"]) == ()
    assert lint_verify(spec["verify"]["sql"]) == ()
    assert lint_contract(spec["contract"]["sql"]) == ()


GUARDED_EVERYWHERE = [
    ("DROP DATABASE shop_orders", "PB093 database-or-server"),
    ("DROP ROLE app", "PB092 roles"),
    ("ALTER ROLE app SUPERUSER", "PB092 roles"),
    ("GRANT SELECT ON users TO reporting", "PB091 privileges"),
    ("REVOKE ALL ON users FROM app", "PB091 privileges"),
    ("SET lock_timeout = 0", "PB090 session-settings"),
    ("SET statement_timeout = 0", "PB090 session-settings"),
    ("SET ROLE postgres", "PB090 session-settings"),
    ("SET SESSION AUTHORIZATION postgres", "PB090 session-settings"),
    ("SELECT set_config('statement_timeout', '0', false)", "PB090 session-settings"),
    ("DO $$ BEGIN EXECUTE 'DROP TABLE users'; END $$", "PB094 dynamic-sql"),
    ("DO $$ DECLARE c refcursor; BEGIN OPEN c FOR EXECUTE 'SELECT 1'; END $$",
     "PB094 dynamic-sql"),
    ("DO $$ BEGIN GRANT SELECT ON users TO reporting; END $$", "PB091 privileges"),
    ("DO $$ DECLARE x text; BEGIN x := set_config('role', 'postgres', false); END $$",
     "PB090 session-settings"),
    ("DELETE FROM pilotboat.pilotboat_schema_history", "PB095 history-schema"),  # more: _history
]


@pytest.mark.parametrize(("sql", "rule"), GUARDED_EVERYWHERE,
                         ids=[s for s, _ in GUARDED_EVERYWHERE])
@pytest.mark.parametrize("lint", [lint_expand, lint_contract, lint_down],
                         ids=["expand", "contract", "down"])
def test_the_guards_hold_in_every_phase(lint: object, sql: str, rule: str) -> None:
    assert callable(lint)
    assert [f.rule for f in lint(sql) if f.refuses] == [rule]


@pytest.mark.parametrize("sql", [
    "ALTER TABLE users DROP COLUMN name",
    "DROP TABLE legacy; DROP FUNCTION f(); DROP TYPE mood",
    "LOCK TABLE users IN ACCESS EXCLUSIVE MODE; DELETE FROM users WHERE deleted",
    "VACUUM FULL users",
    "CLUSTER users USING users_pkey",
    "CREATE RULE r AS ON DELETE TO users DO INSTEAD NOTHING",
    "SELECT purge_inactive_users()",
    "DO $$ BEGIN DELETE FROM users WHERE deleted; END $$",
    "ALTER TABLE users SET SCHEMA archive",
])
def test_contract_takes_what_expand_refuses(sql: str) -> None:
    assert [f for f in lint_contract(sql) if f.refuses] == []


def test_every_rule_is_exercised_by_a_table() -> None:
    expected = {rule for _, _, ids in BYPASSES for rule in ids}
    expected |= {rule for _, ids in EXPAND_TABLE for rule in ids}
    expected |= {rule for _, rule in GUARDED_EVERYWHERE}
    expected |= {
        "PB062 allow-directive-invalid", "PB063 allow-directive-unused",  # directives' tests
        "PB070 backfill-not-single-statement", "PB071 backfill-not-dml",
        "PB072 backfill-without-batch-size", "PB073 backfill-delete",
        "PB080 verify-not-single-select",  # test_sqllint's backfill and verify tables
    }
    assert {rule.id for rule in RULES} - expected == set()


# --- properties ------------------------------------------------------------------------------

# Statement kinds outside the expand allow-list, with {0} for a name: whatever the name, expand
# refuses them.
OUTSIDE_THE_ALLOW_LIST = [
    "CREATE SCHEMA {0}", "CREATE EXTENSION {0}", "ALTER EXTENSION {0} UPDATE",
    "CREATE POLICY {0} ON users USING (true)", "ALTER POLICY {0} ON users USING (false)",
    "ALTER FUNCTION {0}() SECURITY DEFINER", "ALTER PROCEDURE {0}() SET search_path = x",
    "CREATE CAST (int AS {0}) WITH FUNCTION {0}(int)",
    "CREATE OPERATOR === (function = {0}, leftarg = int, rightarg = int)",
    "CREATE AGGREGATE {0}(int) (sfunc = f, stype = int)",
    "CREATE EVENT TRIGGER {0} ON ddl_command_start EXECUTE FUNCTION f()",
    "CREATE PUBLICATION {0} FOR ALL TABLES",
    "CREATE SUBSCRIPTION {0} CONNECTION '' PUBLICATION p",
    "CREATE SERVER {0} FOREIGN DATA WRAPPER postgres_fdw",
    "CREATE USER MAPPING FOR CURRENT_USER SERVER {0}",
    "IMPORT FOREIGN SCHEMA s FROM SERVER {0} INTO x",
    "CREATE FOREIGN TABLE {0} (a int) SERVER s", "REFRESH MATERIALIZED VIEW {0}",
    "REINDEX TABLE {0}", "CHECKPOINT", "COPY {0} FROM STDIN", "COPY {0} TO STDOUT",
    "NOTIFY {0}", "LISTEN {0}", "PREPARE {0} AS DELETE FROM users", "EXECUTE {0}",
    "DEALLOCATE {0}", "DECLARE {0} CURSOR FOR SELECT 1", "FETCH 1 FROM {0}", "CLOSE {0}",
    "SHOW lock_timeout", "SET search_path = {0}, public", "SET LOCAL work_mem_typo_{0} = 1",
    "VACUUM {0}", "CREATE TABLE {0} AS SELECT * FROM users",
    "CREATE TABLE {0} (LIKE users) INHERITS (users)",
    "ALTER TABLE users ATTACH PARTITION {0} FOR VALUES IN (1)",
    "ALTER TABLE users DETACH PARTITION {0}", "ALTER TABLE users INHERIT {0}",
    "ALTER TABLE users REPLICA IDENTITY FULL", "ALTER TABLE users CLUSTER ON {0}",
    "ALTER TABLE users ENABLE ALWAYS TRIGGER {0}",
    "ALTER TABLE users ALTER COLUMN {0} SET STORAGE EXTERNAL",
    "ALTER TABLE users ALTER COLUMN {0} ADD GENERATED ALWAYS AS IDENTITY",
    "ALTER TABLE users ALTER COLUMN {0} DROP IDENTITY",
    "ALTER TABLE users ALTER CONSTRAINT {0} DEFERRABLE",
    "ALTER SEQUENCE {0} RESTART", "ALTER INDEX {0} ATTACH PARTITION p",
    "SECURITY LABEL ON TABLE {0} IS 'x'", "CREATE LANGUAGE {0}",
    "CREATE ACCESS METHOD {0} TYPE TABLE HANDLER h",
    "CREATE COLLATION {0} (locale = 'C')", "CREATE TEXT SEARCH CONFIGURATION {0} (COPY = simple)",
    "CREATE CONVERSION {0} FOR 'LATIN1' TO 'UTF8' FROM f", "LOAD '{0}'",
    "CREATE TABLESPACE {0} LOCATION '/x'", "CREATE DATABASE {0}", "ALTER DATABASE {0} OWNER TO x",
    "TRUNCATE {0}", "DELETE FROM {0}", "UPDATE {0} SET a = 1", "INSERT INTO {0} DEFAULT VALUES",
    "DROP TABLE IF EXISTS {0}", "DROP INDEX CONCURRENTLY IF EXISTS {0}", "DROP SCHEMA {0} CASCADE",
    "ALTER TABLE users RENAME TO {0}", "ALTER VIEW {0} RENAME TO v2", "LOCK TABLE {0}",
    "CREATE RULE {0} AS ON UPDATE TO users DO ALSO NOTIFY x", "CALL {0}()", "SELECT {0}()",
    "DO $$ BEGIN PERFORM 1; END $$", "ALTER TABLE {0} OWNER TO x", "GRANT ALL ON {0} TO PUBLIC",
]

# The allow-list's kinds with {0} for a name: whatever the name, expand takes them.
ON_THE_ALLOW_LIST = [
    "CREATE TABLE {0} (id bigint PRIMARY KEY)", "ALTER TABLE users ADD COLUMN {0} text",
    "ALTER TABLE users ADD COLUMN {0} int DEFAULT 7",
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS {0} ON users (email)",
    "ALTER TABLE users ADD CONSTRAINT {0} CHECK (a > 0) NOT VALID",
    "ALTER TABLE users VALIDATE CONSTRAINT {0}", "CREATE OR REPLACE VIEW {0} AS SELECT 1",
    "CREATE OR REPLACE FUNCTION {0}() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "CREATE TRIGGER {0} AFTER UPDATE ON users FOR EACH ROW EXECUTE FUNCTION f()",
    "CREATE TYPE {0} AS ENUM ('a')", "ALTER TYPE mood ADD VALUE '{0}'",
    "COMMENT ON TABLE users IS '{0}'", "CREATE SEQUENCE {0}",
    "ALTER TABLE users ALTER COLUMN {0} DROP NOT NULL",
]

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", max_size=12).map(
    lambda s: f"x_{s}")


@pytest.mark.parametrize("template", OUTSIDE_THE_ALLOW_LIST)
def test_each_kind_outside_the_allow_list_parses_and_is_refused(template: str) -> None:
    findings = lint_expand(template.format("x_a"))
    assert [f.rule for f in findings if f.rule == "PB000 parse-error"] == []
    assert any(f.severity is Severity.REFUSE for f in findings), findings


@pytest.mark.parametrize("template", ON_THE_ALLOW_LIST)
def test_each_kind_on_the_allow_list_passes(template: str) -> None:
    assert lint_expand(template.format("x_a")) == ()


@given(st.sampled_from(OUTSIDE_THE_ALLOW_LIST), names)
def test_any_statement_kind_outside_the_allow_list_is_refused_in_expand(
    template: str, name: str
) -> None:
    findings = lint_expand(template.format(name))
    assert any(f.severity is Severity.REFUSE for f in findings), findings
    assert "PB000 parse-error" not in [f.rule for f in findings]


@given(st.sampled_from(ON_THE_ALLOW_LIST), names)
def test_the_allow_lists_kinds_pass_whatever_their_names(template: str, name: str) -> None:
    assert lint_expand(template.format(name)) == ()


@given(
    st.lists(st.sampled_from(ON_THE_ALLOW_LIST), max_size=4),
    st.sampled_from([(sql, ids) for _, sql, ids in BYPASSES if len(split_statements(sql)) == 1]),
    st.lists(st.sampled_from(ON_THE_ALLOW_LIST), max_size=3),
    names,
)
def test_a_bypass_is_refused_wherever_it_stands_among_safe_statements(
    before: list[str], bypass: tuple[str, list[str]], after: list[str], name: str
) -> None:
    # Safe statements use names of their own (x_…), so they exempt nothing the bypass touches.
    statements = [s.format(f"{name}_{i}") for i, s in enumerate(before)]
    statements += [bypass[0]]
    statements += [s.format(f"{name}_a{i}") for i, s in enumerate(after)]
    findings = [f for f in lint_expand(";\n".join(statements))
                if f.rule != "PB052 phase-not-atomic"]
    assert [f.rule for f in findings] == bypass[1]
    assert {f.number for f in findings} == {len(before) + 1}
